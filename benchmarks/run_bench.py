"""Run the n2s_eds benchmark: ``python benchmarks/run_bench.py [options]``.

The same as ``n2s-eds bench``; see ``benchmarks/README.md`` and ``--help``.
"""

from __future__ import annotations

import sys

from n2s_eds.bench import main

if __name__ == "__main__":
    sys.exit(main())
