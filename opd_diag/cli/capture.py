"""``opd-diag capture``: student rollouts + both models at every visited state -> a run directory.

``capture --from FORMAT PATH`` ingests a TRL / verl / JSONL log instead (see ``cli/ingest.py``).
"""

from __future__ import annotations

from ..core.errors import OpdDiagError
from .common import (
    add_backend_args,
    add_out_args,
    add_pair_args,
    add_sampling_args,
    add_sparse_teacher_args,
    add_top_k_arg,
    backend_from_args,
    check_out,
    print_plan,
    show_plan,
)
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
    add_out_args(p, resume=True)
    add_sampling_args(p)
    g = p.add_argument_group("capture")
    add_top_k_arg(g)
    g.add_argument("--capture-batch-size", type=int, default=8,
                   help="rollouts per forward pass (default 8)")
    g.add_argument("--chunk-tokens", type=int, default=None,
                   help="positions per LM-head chunk (default: 32M / vocab; smaller uses less "
                        "memory, larger re-reads the LM heads fewer times)")
    add_sparse_teacher_args(g)
    add_backend_args(p)

    p.set_defaults(func=cmd_capture)


def cmd_capture(args) -> int:
    if args.from_log is not None:
        return cmd_ingest(args)
    if args.prompts is None:
        raise OpdDiagError("capture needs --prompts FILE (or --from FORMAT PATH to ingest a log)")
    import sys
    import time
    from dataclasses import replace

    from ..core.models import load_pair, resolve_max_new_tokens
    from ..core.prompts import load_prompts
    from ..states.backend import use_backend
    from ..states.capture import CaptureConfig
    from ..states.collect import run_capture
    from ..states.cost import plan_capture
    from ..states.rollout import SamplingConfig

    backend = backend_from_args(args)  # before loading anything: vllm without vLLM -> exit 2
    check_out(args)  # a file or a foreign directory as --out: exit 2 before loading models

    sampling = SamplingConfig(
        n_samples=args.n_samples, temperature=args.temperature, top_p=args.top_p,
        max_new_tokens=1 if args.max_new_tokens is None else args.max_new_tokens,
        batch_size=args.batch_size, seed=args.seed,
        raw_prompt=args.raw_prompt,
    )
    capture = CaptureConfig(top_k=args.top_k, batch_size=args.capture_batch_size,
                            chunk_tokens=args.chunk_tokens,
                            teacher_topk_only=args.teacher_topk_only)
    prompts = load_prompts(args.prompts)
    pair = load_pair(
        args.student, args.teacher, student_dtype=args.student_dtype,
        teacher_dtype=args.teacher_dtype, student_device=args.student_device,
        teacher_device=args.teacher_device, trust_remote_code=args.trust_remote_code,
    )
    # no silent cap: the flag, else the student's generation_config.max_new_tokens, else exit 2
    sampling = replace(sampling, max_new_tokens=resolve_max_new_tokens(args.max_new_tokens,
                                                                       pair.student))
    from ..core.runs import check_capture_size

    check_capture_size(len(prompts) * max(args.n_samples, 0), sampling.max_new_tokens,
                       args.top_k, args.out)  # before the plan or any list of rollouts
    with use_backend(backend):
        plan = None
        if show_plan(args):
            plan = plan_capture(pair, prompts, sampling, capture)
            print_plan(plan, args)
        if args.dry_run:
            return 0
        t0 = time.perf_counter()
        out = run_capture(pair, prompts, args.out, sampling=sampling, capture=capture,
                          resume=args.resume, overwrite=args.overwrite, progress=not args.quiet,
                          extra_meta={"prompts_file": str(args.prompts)})
    if plan is not None:
        est = plan.total_seconds()
        print(f"capture took {time.perf_counter() - t0:.1f} s (estimated "
              f"{'?' if est is None else f'{est:.1f}'} s)", file=sys.stderr)
    print(f"wrote {out}")
    return 0
