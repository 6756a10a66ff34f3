"""``opd-diag demo``: the suite end to end on the built-in model zoo."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the suite end to end on the built-in model zoo",
                       description="Pre-flight three zoo pairs (built to succeed, to fail by "
                       "incompatible thinking, to fail by unreachable corrections), short OPD runs "
                       "on the success and the incompatible pair, and the HTML reports (a few "
                       "minutes on 2 CPU cores). The notebooks read these runs by default.")
    p.add_argument("--out", default="runs/demo",
                   help="output directory (runs + reports; default runs/demo): missing, empty, "
                   "or an earlier demo's (its runs are replaced)")
    p.add_argument("--steps", type=int, default=30, help="OPD steps of each demo run (default 30)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from ..core.runs import check_collection_dir
    from ..zoo.demo import run_demo

    # the output-dir rule: missing, empty, or a demo directory (its runs and *.html reports)
    check_collection_dir(args.out, ("*.html",), what="demo directory")
    run_demo(args.out, steps=args.steps, progress=not args.quiet)
    return 0
