"""``opd-diag capture``: student rollouts + both models at every visited state -> a run directory.

``capture --from FORMAT PATH`` ingests a TRL / verl / JSONL log instead (see ``cli/ingest.py``).
"""

from __future__ import annotations

from ..core.errors import OpdDiagError
from .common import add_pair_args, add_sampling_args
from .ingest import add_from_args, cmd_ingest


def register(sub) -> None:
    p = sub.add_parser(
        "capture", help="sample student rollouts and capture both models at every visited state",
        description="Sample n completions per prompt from the student, then score every "
        "completion position with both models (top-k lists, log-probs, entropies, exact KLs). "
        "Writes prompts/rollouts/states tables into --out.",
    )
    add_pair_args(p)
    p.add_argument("--prompts",
                   help="JSONL / JSON / parquet / CSV file with a 'prompt' column (optional 'answer')")
    add_from_args(p, required=False)  # `capture --from trl|verl|jsonl PATH` ingests a log instead
    p.add_argument("--out", required=True, help="run directory to create")
    add_sampling_args(p)
    g = p.add_argument_group("capture")
    g.add_argument("--top-k", type=int, default=16, help="top-k list size (default 16)")
    g.add_argument("--capture-batch-size", type=int, default=8, help="rollouts per forward pass")
    g.add_argument("--chunk-tokens", type=int, default=None,
                   help="positions per LM-head chunk (default: 16M / vocab)")
    g.add_argument("--resume", action="store_true", help="continue an interrupted run")
    g.add_argument("--overwrite", action="store_true", help="replace an existing run directory")

    p.set_defaults(func=cmd_capture)


def cmd_capture(args) -> int:
    if args.from_log is not None:
        return cmd_ingest(args)
    if args.prompts is None:
        raise OpdDiagError("capture needs --prompts FILE (or --from FORMAT PATH to ingest a log)")
    from ..core.models import load_pair
    from ..core.prompts import load_prompts
    from ..states.capture import CaptureConfig
    from ..states.collect import run_capture
    from ..states.rollout import SamplingConfig

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
