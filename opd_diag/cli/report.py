"""``opd-diag report RUN [RUN ...] --out FILE.html``: a thin wrapper over :func:`write_report`."""

from __future__ import annotations

import argparse

from ..core.errors import OpdDiagError
from ..report.build import KINDS


def register(sub) -> None:
    p = sub.add_parser(
        "report", help="write a self-contained HTML report of one or more runs",
        description="One HTML file (inline CSS, figures as data: URIs, no scripts, no network). "
        "The kind follows from the runs: a pre-flight run (verdict table) -> pre-flight report; "
        "an OPD loop run (metrics.jsonl) -> training-dynamics report; several runs -> "
        "comparison report.", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", metavar="RUN", help="run directories")
    p.add_argument("--out", required=True, help="HTML file to write")
    p.add_argument("--kind", default="auto", help=f"auto | {' | '.join(KINDS)} (default auto)")
    p.add_argument("--label", action="append", default=None,
                   help="name of a run in the report, once per RUN in order (default: run ids)")
    p.add_argument("--trajectories", type=int, default=6,
                   help="trajectories shown with per-token reward colouring (default 6)")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from ..report import write_report

    if not args.runs:
        raise OpdDiagError("no runs given: opd-diag report RUN [RUN ...] --out FILE.html")
    if args.trajectories < 0:
        raise OpdDiagError("--trajectories must be >= 0")
    out = write_report(args.runs, args.out, kind=args.kind, labels=args.label,
                       n_trajectories=args.trajectories)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return 0
