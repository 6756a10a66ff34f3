"""``opd-diag``: thin subcommands over the library (nothing in the library imports this)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from .errors import OpdDiagError

EPILOG = """\
Data flow: models -> student rollouts -> both models at the visited states (states table)
-> probes -> report. Every command reads and writes run directories (see README).
"""


def _add_pair_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("models")
    g.add_argument("--student", required=True, help="local HF model directory of the student")
    g.add_argument("--teacher", required=True, help="local HF model directory of the teacher")
    g.add_argument("--student-dtype", default="float32", help="float32 | bfloat16 | float16")
    g.add_argument("--teacher-dtype", default="float32", help="float32 | bfloat16 | float16")
    g.add_argument("--student-device", default="cpu", help="cpu | cuda | cuda:N | auto")
    g.add_argument("--teacher-device", default="cpu", help="cpu | cuda | cuda:N | auto")
    g.add_argument("--trust-remote-code", action="store_true",
                   help="run modelling code shipped in the model directories (off by default)")


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--n-samples", type=int, default=4, help="completions per prompt (default 4)")
    g.add_argument("--temperature", type=float, default=1.0, help="0 = greedy (default 1.0)")
    g.add_argument("--top-p", type=float, default=1.0, help="nucleus mass (default 1.0)")
    g.add_argument("--max-new-tokens", type=int, default=256, help="completion budget (default 256)")
    g.add_argument("--batch-size", type=int, default=16, help="rows per generation batch")
    g.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    g.add_argument("--raw-prompt", action="store_true",
                   help="feed prompts as raw text even when the student has a chat template")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="opd-diag",
        description="Will this teacher teach this student? Diagnostics for on-policy distillation.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "capture", help="sample student rollouts and capture both models at every visited state",
        description="Sample n completions per prompt from the student, then score every "
        "completion position with both models (top-k lists, log-probs, entropies, exact KLs). "
        "Writes prompts/rollouts/states tables into --out.",
    )
    _add_pair_args(p)
    p.add_argument("--prompts",
                   help="JSONL / JSON / parquet / CSV file with a 'prompt' column (optional 'answer')")
    from .ingest_cli import add_from_args

    add_from_args(p, required=False)  # `capture --from trl|verl|jsonl PATH` ingests a log instead
    p.add_argument("--out", required=True, help="run directory to create")
    _add_sampling_args(p)
    g = p.add_argument_group("capture")
    g.add_argument("--top-k", type=int, default=16, help="top-k list size (default 16)")
    g.add_argument("--capture-batch-size", type=int, default=8, help="rollouts per forward pass")
    g.add_argument("--chunk-tokens", type=int, default=None,
                   help="positions per LM-head chunk (default: 16M / vocab)")
    g.add_argument("--resume", action="store_true", help="continue an interrupted run")
    g.add_argument("--overwrite", action="store_true", help="replace an existing run directory")

    p = sub.add_parser("probe", help="run a registered probe on a run directory",
                       description="Run probe NAME on RUN and write RUN/probes/NAME.parquet.")
    p.add_argument("name", help="probe name (see `opd-diag ls`)")
    p.add_argument("run", help="run directory")
    p.add_argument("--n-depth-bins", type=int, default=8, help="overlap: relative-depth bins")
    p.add_argument("--position-bin", type=int, default=64, help="overlap: absolute bin width")

    sub.add_parser("ls", help="list the registered probes with their versions")

    p = sub.add_parser("demo", help="run the suite end to end on the built-in model zoo",
                       description="Pre-flight three zoo pairs (built to succeed, to fail by "
                       "incompatible thinking, to fail by unreachable corrections), a short OPD run "
                       "on the success pair, and the HTML reports (a few minutes on 2 CPU cores).")
    p.add_argument("--out", default="runs/demo", help="output directory (runs + reports)")
    p.add_argument("--steps", type=int, default=30, help="OPD steps of the demo run")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def cmd_capture(args) -> int:
    if args.from_log is not None:
        from .ingest_cli import cmd_ingest

        return cmd_ingest(args)
    if args.prompts is None:
        raise OpdDiagError("capture needs --prompts FILE (or --from FORMAT PATH to ingest a log)")
    from .capture import CaptureConfig
    from .models import load_pair
    from .pipeline import run_capture
    from .prompts import load_prompts
    from .rollout import SamplingConfig

    sampling = SamplingConfig(
        n_samples=args.n_samples, temperature=args.temperature, top_p=args.top_p,
        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, seed=args.seed,
        raw_prompt=args.raw_prompt,
    )
    capture = CaptureConfig(top_k=args.top_k, batch_size=args.capture_batch_size,
                            chunk_tokens=args.chunk_tokens)
    prompts = load_prompts(args.prompts)
    pair = load_pair(
        args.student, args.teacher, student_dtype=args.student_dtype,
        teacher_dtype=args.teacher_dtype, student_device=args.student_device,
        teacher_device=args.teacher_device, trust_remote_code=args.trust_remote_code,
    )
    out = run_capture(pair, prompts, args.out, sampling=sampling, capture=capture,
                      resume=args.resume, overwrite=args.overwrite, progress=not args.quiet,
                      extra_meta={"prompts_file": str(args.prompts)})
    print(f"wrote {out}")
    return 0


def _print_overlap(df) -> None:
    from .probes.overlap import METRICS

    run_rows = df[df.level == "run"]
    cols = ["step", "n_rollouts", "n_states", *METRICS, "overlap_ratio_rollout_mean",
            "thunlp_adv_intersection"]
    print(f"overlap summary (k={int(df.k.iat[0])}; per-state means over all visited states):")
    print(run_rows[cols].set_index("step").T.to_string(float_format=lambda v: f"{v:.4f}"))


def cmd_probe(args) -> int:
    from .probes import run_probe
    from .runs import load_run

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
    from .probes import list_probes

    for spec in list_probes():
        print(f"{spec.name:<12} v{spec.version}  {spec.summary}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(args.out, steps=args.steps, progress=not args.quiet)
    return 0


COMMANDS = {"capture": cmd_capture, "probe": cmd_probe, "ls": cmd_ls, "demo": cmd_demo}
# Subsystems that bring their own subcommands: each module has ``register(subparsers)`` that adds
# parsers with ``set_defaults(func=handler)``; handlers take the parsed args and return an exit code.
SUBCOMMAND_MODULES: list[str] = [
    "opd_diag.preflight_cli", "opd_diag.train.cli", "opd_diag.ingest_cli", "opd_diag.report.cli",
    "opd_diag.zoo.cli",
]


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    args = build_parser().parse_args(argv)
    try:
        handler = getattr(args, "func", None) or COMMANDS[args.command]
        return handler(args)
    except OpdDiagError as exc:
        print(f"opd-diag {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; resume with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
