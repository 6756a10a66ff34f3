"""``opd-diag``: the command line. Every subcommand lives in its own module of this package and
is registered here, from one list; nothing outside ``opd_diag.cli`` imports this package."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ..core.errors import OpdDiagError

EPILOG = """\
Data flow: models -> student rollouts -> both models at the visited states (states table)
-> probes -> verdict / report. Every command reads and writes run directories (see README).
"""

# One module per subcommand (or family); each has ``register(subparsers)`` adding parsers with
# ``set_defaults(func=handler)``; a handler takes the parsed args and returns an exit code.
SUBCOMMAND_MODULES: list[str] = [
    "capture", "probe", "preflight", "rank", "train", "ingest", "report", "zoo", "demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="opd-diag",
        description="Will this teacher teach this student? Diagnostics for on-policy distillation.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    args = build_parser().parse_args(argv)
    try:
        handler = args.func
        return handler(args)
    except OpdDiagError as exc:
        print(f"opd-diag {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; resume with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
