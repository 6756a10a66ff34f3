"""``opd-diag probe NAME RUN`` and ``opd-diag ls``: run one registered probe on a run directory."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("probe", help="run a registered probe on a run directory",
                       description="Run probe NAME on RUN and write RUN/probes/NAME.parquet.")
    p.add_argument("name", help="probe name (see `opd-diag ls`)")
    p.add_argument("run", help="run directory")
    p.add_argument("--n-depth-bins", type=int, default=8, help="overlap: relative-depth bins (default 8)")
    p.add_argument("--position-bin", type=int, default=64, help="overlap: absolute bin width in tokens (default 64)")

    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("ls", help="list the registered probes with their versions")
    p.set_defaults(func=cmd_ls)


def _print_overlap(df) -> None:
    from ..core.glossary import COUNT_COLUMNS, GLOSSARY
    from ..probes.overlap import METRICS

    run_rows = df[df.level == "run"]
    cols = ["n_rollouts", "n_states", *METRICS, "overlap_ratio_rollout_mean",
            "thunlp_adv_intersection"]
    cols = [c for c in cols if c in run_rows]
    steps = [int(s) for s in run_rows.step]
    print(f"overlap summary (k={int(df.k.iat[0])}; per-state means over all visited states; "
          + ("step -1 = offline capture, no training" if -1 in steps else "one column per step")
          + "):")
    width = max(len(c) for c in cols)
    head = " ".join(f"{('step ' + str(s)):>10}" for s in steps)
    print(f"{'':<{width}} {head}   how to read it")
    for c in cols:
        vals = run_rows[c].tolist()
        cells = " ".join(f"{int(v):>10d}" if c in COUNT_COLUMNS else f"{v:>10.4f}" for v in vals)
        print(f"{c:<{width}} {cells}   {GLOSSARY.get(c, ('', ''))[1]}")


def cmd_probe(args) -> int:
    from ..core.runs import load_run
    from ..probes import run_probe

    run = load_run(args.run)
    options = {}
    if args.name == "overlap":
        options = {"n_depth_bins": args.n_depth_bins, "position_bin": args.position_bin}
    df = run_probe(args.name, run, **options)
    if args.name == "overlap":
        _print_overlap(df)
    print(f"wrote {Path(args.run) / 'probes' / (args.name + '.parquet')} ({len(df)} rows)")
    return 0


def cmd_ls(args) -> int:
    from ..probes import list_probes

    for spec in list_probes():
        print(f"{spec.name:<12} v{spec.version}  {spec.summary}")
    return 0
