"""``opd-diag zoo list | build | validate | sweep``: the model-organism zoo from the command line."""

from __future__ import annotations


def register(sub) -> None:
    zoo = sub.add_parser("zoo", help="the built-in model-organism zoo (tiny teacher-student pairs)",
                         description="Tiny Llama teacher-student pairs trained on synthetic "
                         "addition with chain-of-thought, built to reproduce OPD's success and "
                         "failure conditions. The checkpoints ship with the package.")
    zsub = zoo.add_subparsers(dest="zoo_command", required=True, metavar="ZOO_COMMAND")
    p = zsub.add_parser("list", help="pairs and what each one demonstrates (v1 and zoo v2)",
                        description="Lists the pairs of both zoo families: v1 (addition) and v2 "
                        "(sorting, the held-out testbed whose pairs never set verdict thresholds; "
                        "names start with 'v2-').")
    p.add_argument("--models", action="store_true", help="list the models instead of the pairs")
    p.add_argument("--family", choices=("all", "v1", "v2"), default="all",
                   help="which zoo family to list (default: both)")
    p.set_defaults(func=cmd_list)
    p = zsub.add_parser("build", help="train zoo models from scratch (deterministic, seeded)")
    p.add_argument("--only", help="one model name (default: all, in dependency order)")
    p.add_argument("--out", default=None, help="output directory (default: the package's zoo)")
    p.add_argument("--quick", action="store_true", help="8 steps per model (a smoke test)")
    p.add_argument("--family", choices=("v1", "v2"), default="v1",
                   help="v1 (addition, default) or v2 (sorting, the held-out testbed: "
                   "opd_diag/zoo/models-v2)")
    p.add_argument("--jobs", type=int, default=1,
                   help="v2 only: models trained in parallel (one thread each; default 1)")
    p.set_defaults(func=cmd_build)
    p = zsub.add_parser("validate", help="run the real OPD loop on every pair and record outcomes",
                        description="OPD runs on every pair (plus forward KL, cold start, the "
                        "alternative teacher and the aligned template where the pair is built "
                        "around them); complete runs are reused. Writes the summary table.")
    p.add_argument("--runs", default="runs/examples",
                   help="where the runs go (default runs/examples; v2: runs/zoo-v2)")
    p.add_argument("--only", nargs="*", help="run or pair names")
    p.add_argument("--workers", type=int, default=2,
                   help="parallel runs (1 thread each; default 2)")
    p.add_argument("--family", choices=("v1", "v2"), default="v1",
                   help="v2: the held-out pairs, one fixed OPD budget, --seeds seeds each, gap "
                   "recovery with a bootstrap CI, classified by docs/validation.md's rule (worked: CI "
                   "low >= 0.5; failed: CI high < 0.2 or no gap) -> reports/zoo-v2-validation.csv "
                   "+ zoo-v2-eval-items.csv (default runs dir runs/zoo-v2)")
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="v2: OPD seeds (default 0 1 2)")
    p.add_argument("--n-eval", type=int, default=100, help="v2: eval items per subset (default 100)")
    p.add_argument("--extra-runs", action="store_true",
                   help="v2: also the extra runs (phenomenon #10's second teacher, "
                   "v2-student-rl toward v2-student-0-long; #15's cold start, v2-incompatible's "
                   "student SFT-ed on v2-teacher-b's rollouts first; same budget and seeds) -> "
                   "reports/zoo-v2-extra-items.csv")
    p.add_argument("--content", action="store_true",
                   help="v2: only the content-alignment runs (phenomenon #17's held-out column: "
                   "v2-long-horizon on its own prompts vs on lists with one number repeated, "
                   "content no zoo-v2 model saw; same budget and seeds; the protocol runs are "
                   "not run) -> reports/zoo-v2-content.csv + zoo-v2-content-items.csv")
    p.add_argument("--rank-runs", action="store_true",
                   help="v2: only the OPD runs of the teacher-ranking check where OPD works "
                   "(v2-student-partial distilled from v2-student-partial-long and from "
                   "v2-teacher-b on v2-long-horizon's prompts; v2-teacher-a's outcome is the "
                   "pair's protocol run; same budget and seeds) -> "
                   "reports/rank-v2-long-outcomes.csv, for `opd-diag rank-check` against "
                   "`opd-diag rank-teachers --pair v2-long-horizon`")
    p.set_defaults(func=cmd_validate)
    from ..zoo.v2.sweep import SWEEP_PAIR, VARIANTS

    p = zsub.add_parser("sweep", help="objective / support-size / length sweep on a zoo-v2 pair "
                        "(paper phenomena #7, #8, #14)",
                        description=f"One OPD run of {SWEEP_PAIR} per variant at the v2 budget "
                        "with one change each (top-k strategy, support size, sampled-token, "
                        "max length), OPD seed 0, complete runs reused; each claim is a paired "
                        "bootstrap comparison of two variants' accuracy on the same eval items "
                        "(rules in opd_diag/zoo/v2/sweep.py). Writes reports/zoo-v2-sweep.csv and "
                        "its per-item table, then re-scores rows 7, 8, 14 of "
                        "reports/zoo-phenomena.{csv,md}.")
    p.add_argument("--runs", default="runs/zoo-v2", help="runs directory (default runs/zoo-v2)")
    p.add_argument("--variants", nargs="*", choices=list(VARIANTS), metavar="VARIANT",
                   help=f"subset of {', '.join(VARIANTS)} (default: all)")
    p.add_argument("--seeds", type=int, nargs="*", default=None, metavar="SEED",
                   help="OPD seeds to run (default 0; #14's 3-seed family: --variants reverse_kl "
                   "maxlen256 maxlen448 --seeds 0 1 2)")
    p.add_argument("--workers", type=int, default=2, help="parallel runs (default 2)")
    p.add_argument("--n-eval", type=int, default=100, help="eval items per subset (default 100)")
    p.add_argument("--reports", default="reports", help="where the tables go (default reports)")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args) -> int:
    from pathlib import Path

    from ..zoo import phenomena
    from ..zoo.v2.sweep import main as sweep_main

    out = Path(args.reports)
    sweep_main(["--runs", args.runs, "--n-eval", str(args.n_eval), "--workers", str(args.workers),
                "--out", str(out / "zoo-v2-sweep.csv"),
                "--items", str(out / "zoo-v2-sweep-items.csv"),
                *(["--variants", *args.variants] if args.variants else []),
                *(["--seeds", *map(str, args.seeds)] if args.seeds else [])])
    if (out / "zoo-phenomena.csv").is_file():
        return phenomena.main(["--out", str(out), "--sweep", str(out / "zoo-v2-sweep.csv"),
                               "--sweep-only"])
    return 0


def cmd_list(args) -> int:
    from ..zoo import list_models, pairs_table
    from ..zoo.v2 import list_models as list_models_v2

    if args.models:
        names = ([] if args.family == "v2" else list_models()) + \
            ([] if args.family == "v1" else list_models_v2())
        print("\n".join(names))
    else:
        print(format_pairs(pairs_table(args.family)))
    return 0


def format_pairs(table, width: int = 100) -> str:
    """The pairs table in at most ``width`` columns: one header line per pair, then what it
    demonstrates wrapped and indented."""
    import textwrap

    lines = []
    for r in table.itertuples(index=False):
        head = f"{r.pair}  ({r.family}): {r.student} <- {r.teacher}, template {r.template}"
        lines.append(textwrap.shorten(head, width, placeholder="..."))
        lines += textwrap.wrap(str(r.demonstrates), width, initial_indent="    ",
                               subsequent_indent="    ")
    return "\n".join(lines)


def cmd_build(args) -> int:
    from ..zoo import ZOO_DIR, build_zoo

    if args.family == "v2":
        from ..zoo.v2 import ZOO2_DIR
        from ..zoo.v2.build import build_zoo2

        cards = build_zoo2(only=args.only, out_dir=args.out or ZOO2_DIR, quick=args.quick,
                           jobs=args.jobs, progress=not args.quiet)
        for card in cards:
            print(f"built {card.get('name')}")
        return 0
    cards = build_zoo(only=args.only, out_dir=args.out or ZOO_DIR, quick=args.quick,
                      progress=not args.quiet)
    for card in cards:
        print(f"built {card.get('name')}")
    return 0


def cmd_validate(args) -> int:
    from pathlib import Path

    from ..core.errors import OpdDiagError
    from ..zoo.validate import validate

    # the zoo-v2-only runs: each flag and what zoo v1 does instead
    v1_instead = {"extra_runs": ("--extra-runs", "its alternative teacher and cold start run as "
                                 "part of `zoo validate`"),
                  "content": ("--content", "its content pools run as part of `zoo validate "
                              "--only success`"),
                  "rank_runs": ("--rank-runs", "its ranking check uses the v1 validation runs")}
    for attr, (flag, instead) in v1_instead.items():
        if getattr(args, attr) and args.family != "v2":
            raise OpdDiagError(f"{flag}: these runs are zoo-v2 runs; add --family v2 (zoo v1: "
                               f"{instead})")
    runs = "runs/zoo-v2" if args.runs == "runs/examples" else args.runs
    if args.family == "v2" and args.rank_runs:
        import pandas as pd

        from ..core.runs import write_csv
        from ..zoo.v2.validate import rank_long_outcomes, run_rank_long

        items = Path("reports/zoo-v2-eval-items.csv")
        if not items.is_file():
            raise OpdDiagError(f"--rank-runs: v2-teacher-a's outcome comes from the protocol's "
                               f"per-item table {items}, which is not here; run it from the "
                               "repository root, or `opd-diag zoo validate --family v2` first")
        run_rank_long(runs, tuple(args.seeds), args.n_eval, args.workers)
        out = Path("reports/rank-v2-long-outcomes.csv")
        write_csv(out, rank_long_outcomes(pd.read_csv(items), runs))
        print(f"wrote {out}")
        return 0
    if args.family == "v2" and args.content:
        from ..zoo.v2.content import run_content, write_tables

        windows, items = run_content(runs, tuple(args.seeds), args.n_eval, args.workers)
        write_tables(windows, items)
        print("wrote reports/zoo-v2-content.csv and reports/zoo-v2-content-items.csv; "
              "`python -m opd_diag.zoo.phenomena --tables-only` puts them into row 17")
        return 0
    if args.family == "v2":
        from ..zoo.v2.validate import validate as validate_v2

        df, items = validate_v2(runs, tuple(args.seeds), args.only, args.n_eval, args.workers)
        out = Path("reports/zoo-v2-validation.csv")
        out.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(out, index=False)
        items.to_csv(out.with_name("zoo-v2-eval-items.csv"), index=False)
        print(df.T.to_string())
        print(f"wrote {out} and its per-item table {out.with_name('zoo-v2-eval-items.csv')}")
        if args.extra_runs:
            from ..core.runs import write_csv
            from ..zoo.v2.validate import run_extra

            extra = out.with_name("zoo-v2-extra-items.csv")
            write_csv(extra, run_extra(runs, tuple(args.seeds), args.n_eval, args.workers))
            print(f"wrote the extra runs' per-item table {extra}")
        return 0
    df = validate(args.runs, args.only, args.workers)
    df.to_csv(Path(args.runs) / "zoo-validation.csv", index=False)
    print(df.T.to_string())
    return 0
