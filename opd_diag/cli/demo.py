"""``opd-diag demo``: the suite end to end on the built-in model zoo."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the suite end to end on the built-in model zoo",
                       description="Pre-flight three zoo pairs (built to succeed, to fail by "
                       "incompatible thinking, to fail by unreachable corrections), a short OPD run "
                       "on the success pair, and the HTML reports (a few minutes on 2 CPU cores).")
    p.add_argument("--out", default="runs/demo", help="output directory (runs + reports)")
    p.add_argument("--steps", type=int, default=30, help="OPD steps of the demo run")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from ..zoo.demo import run_demo

    run_demo(args.out, steps=args.steps, progress=not args.quiet)
    return 0
