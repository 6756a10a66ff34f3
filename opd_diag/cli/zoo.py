"""``opd-diag zoo list | build | validate``: the model-organism zoo from the command line."""

from __future__ import annotations


def register(sub) -> None:
    zoo = sub.add_parser("zoo", help="the built-in model-organism zoo (tiny teacher-student pairs)",
                         description="Tiny Llama teacher-student pairs trained on synthetic "
                         "addition with chain-of-thought, built to reproduce OPD's success and "
                         "failure conditions. The checkpoints ship with the package.")
    zsub = zoo.add_subparsers(dest="zoo_command", required=True, metavar="ZOO_COMMAND")
    p = zsub.add_parser("list", help="pairs and what each one demonstrates")
    p.add_argument("--models", action="store_true", help="list the models instead of the pairs")
    p.set_defaults(func=cmd_list)
    p = zsub.add_parser("build", help="train zoo models from scratch (deterministic, seeded)")
    p.add_argument("--only", help="one model name (default: all, in dependency order)")
    p.add_argument("--out", default=None, help="output directory (default: the package's zoo)")
    p.add_argument("--quick", action="store_true", help="8 steps per model (a smoke test)")
    p.set_defaults(func=cmd_build)
    p = zsub.add_parser("validate", help="run the real OPD loop on every pair and record outcomes",
                        description="OPD runs on every pair (plus forward KL, cold start, the "
                        "alternative teacher and the aligned template where the pair is built "
                        "around them); complete runs are reused. Writes the summary table.")
    p.add_argument("--runs", default="runs/examples", help="where the runs go")
    p.add_argument("--only", nargs="*", help="run or pair names")
    p.add_argument("--workers", type=int, default=2, help="parallel runs (1 thread each)")
    p.set_defaults(func=cmd_validate)


def cmd_list(args) -> int:
    from ..zoo import list_models, pairs_table

    if args.models:
        print("\n".join(list_models()))
    else:
        print(pairs_table().to_string(index=False))
    return 0


def cmd_build(args) -> int:
    from ..zoo import ZOO_DIR, build_zoo

    cards = build_zoo(only=args.only, out_dir=args.out or ZOO_DIR, quick=args.quick,
                      progress=not args.quiet)
    for card in cards:
        print(f"built {card.get('name')}")
    return 0


def cmd_validate(args) -> int:
    from pathlib import Path

    from ..zoo.validate import validate

    df = validate(args.runs, args.only, args.workers)
    df.to_csv(Path(args.runs) / "zoo-validation.csv", index=False)
    print(df.T.to_string())
    return 0
