"""``opd-diag ingest --from trl|verl|jsonl PATH``: probes on trajectories logged elsewhere.

``opd-diag capture --from FORMAT PATH ...`` routes here too (same flags), so a run trained in TRL
or verl gets the same run directory as an offline capture.
"""

from __future__ import annotations

import argparse

from ..integrations.ingest import FORMATS, PROMPT_FORMATS


def add_from_args(p: argparse.ArgumentParser, required: bool) -> None:
    """The ``--from FORMAT PATH`` option and the ingest-only flags."""
    p.add_argument("--from", dest="from_log", nargs=2, metavar=("FORMAT", "PATH"),
                   required=required,
                   help=f"ingest a trajectory log instead of sampling: FORMAT is one of "
                   f"{', '.join(FORMATS)}; PATH a log file or directory")
    p.add_argument("--prompt-format", choices=PROMPT_FORMATS, default="auto",
                   help="how logged prompt text maps to tokens (default auto: literal chat "
                   "rendering, stripped rendering, or raw text — each checked exactly)")


def register(sub) -> None:
    from .common import add_out_args, add_pair_args, add_top_k_arg, finite_float

    p = sub.add_parser(
        "ingest", help="turn a TRL / verl / JSONL trajectory log into a run directory",
        description="Re-tokenise logged student samples exactly (or fail naming the row), score "
        "every completion position with both models and write prompts/rollouts/states tables "
        "with the log's step, ready for `opd-diag probe`.",
    )
    add_pair_args(p)
    add_from_args(p, required=True)
    add_out_args(p, resume=False)
    p.add_argument("--temperature", type=finite_float(0, lo_open=True), default=1.0,
                   help="scoring temperature, > 0: the sampling temperature of the logged run "
                   "(default 1.0)")
    add_top_k_arg(p)
    p.add_argument("--capture-batch-size", type=int, default=8,
                   help="rollouts per forward pass (default 8)")
    p.add_argument("--chunk-tokens", type=int, default=None,
                   help="positions per LM-head chunk (default: 32M / vocab)")
    p.set_defaults(func=cmd_ingest)


def cmd_ingest(args) -> int:
    from ..core.errors import OpdDiagError
    from ..core.models import load_pair
    from ..integrations.ingest import ingest
    from ..states.capture import CaptureConfig

    fmt, path = args.from_log
    if fmt not in FORMATS:
        raise OpdDiagError(f"unknown log format {fmt!r} in --from; use one of {list(FORMATS)}")
    if getattr(args, "resume", False):
        raise OpdDiagError("--resume does not apply to --from (ingest is one pass); use --overwrite")
    capture = CaptureConfig(top_k=args.top_k, batch_size=args.capture_batch_size,
                            chunk_tokens=args.chunk_tokens)
    from .common import check_out

    check_out(args)  # a file or a foreign directory as --out: exit 2 before loading models
    pair = load_pair(
        args.student, args.teacher, student_dtype=args.student_dtype,
        teacher_dtype=args.teacher_dtype, student_device=args.student_device,
        teacher_device=args.teacher_device, trust_remote_code=args.trust_remote_code,
    )
    out = ingest(pair, fmt, path, args.out, capture=capture, temperature=args.temperature,
                 prompt_format=args.prompt_format, overwrite=args.overwrite,
                 progress=not getattr(args, "quiet", False))
    print(f"wrote {out}")
    return 0
