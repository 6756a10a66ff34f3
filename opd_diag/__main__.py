"""``python -m opd_diag`` is ``opd-diag``."""

import sys

from .cli import main

sys.exit(main())
