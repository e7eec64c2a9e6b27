"""Run the n2s_eds benchmark: ``python benchmarks/run_bench.py [options]``.

See ``benchmarks/README.md`` and ``--help``. The harness is the package ``benchmarks/harness``
(outside the installed ``n2s_eds``); this script puts its folder on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.cli import main  # noqa: E402

if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
