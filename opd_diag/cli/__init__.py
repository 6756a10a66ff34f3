"""The ``opd-diag`` command line: one module per subcommand, registered in :mod:`.main`.

May import every stage; nothing else in ``opd_diag`` imports ``opd_diag.cli`` (the one-way rule).
"""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
