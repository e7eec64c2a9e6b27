"""``python -m n2s_eds.cli``: the ``n2s-eds`` command."""

import sys

from .main import main

sys.exit(main())
