"""GPU check of issue 12 (one prepared script, ≤ 10 min on one GPU; not run in CI).

Builds random-init Qwen2 models with real shapes (no downloads): a 0.5B-shape student
(hidden 896, 24 layers, 14/2 heads, 151,936-row head) and a 1.5B-shape teacher (hidden 1536,
28 layers, 12/2 heads, 151,936-row head), both over the 151,665-token test tokenizer of
``opd_diag.testing``. Then:

1. trains the student toward the teacher for ``--steps`` steps with ``--dtype bfloat16`` (fp32
   master weights + bf16 autocast; teacher in bf16), with and without
   ``--gradient-checkpointing``: step time and peak GPU memory per phase;
2. captures ``--rollouts`` student rollouts of ``--tokens`` tokens (a random-init head never
   says EOS, so every rollout runs to the cap): capture time and peak memory;
3. checks that bf16 training moved the student (mean |Δw| > 0) and that the capture head check
   passed on both bf16 models.

Writes ``gpu_check.json`` to ``--out`` (default ``$OUT`` or the current directory) and prints it.

    python benchmarks/gpu_check.py                      # defaults: 3 steps, 16 × 2,048 tokens
    python benchmarks/gpu_check.py --steps 2 --tokens 512   # a quicker run
    python benchmarks/gpu_check.py --smoke                  # tiny shapes on CPU: the script runs
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

STUDENT = dict(hidden=896, layers=24, heads=14, kv_heads=2, intermediate=4864)    # Qwen2.5-0.5B
TEACHER = dict(hidden=1536, layers=28, heads=12, kv_heads=2, intermediate=8960)   # Qwen2.5-1.5B


def _peak_gib() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def _reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rollouts", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--train-tokens", type=int, default=1024, help="completion budget in train")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--smoke", action="store_true",
                    help="tiny shapes on CPU, 1 step, 2 × 8 tokens (checks the script, not the GPU)")
    args = ap.parse_args()
    student, teacher, dev = STUDENT, TEACHER, "cuda"
    if args.smoke:
        tiny = dict(hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64)
        student, teacher, dev = tiny, tiny, "cpu"
        args.steps, args.rollouts, args.tokens, args.train_tokens = 1, 2, 8, 8
    elif not torch.cuda.is_available():
        raise SystemExit("gpu_check.py needs a CUDA GPU (or --smoke)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from opd_diag.core.models import load_pair
    from opd_diag.core.prompts import load_prompts
    from opd_diag.core.runs import load_run
    from opd_diag.states.capture import CaptureConfig
    from opd_diag.states.collect import run_capture
    from opd_diag.states.rollout import SamplingConfig
    from opd_diag.testing import make_qwen2_dir, make_qwen_tokenizer
    from opd_diag.train import resolve_config, train

    report: dict = {"device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu (smoke)",
                    "torch": torch.__version__,
                    "args": vars(args)}
    root = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    t0 = time.perf_counter()
    tok = make_qwen_tokenizer("instruct")
    s_dir = make_qwen2_dir(root / "student", tok, head_std=0.02, dtype=torch.bfloat16, seed=1,
                           max_new_tokens=args.tokens, **student)
    t_dir = make_qwen2_dir(root / "teacher", tok, head_std=0.02, dtype=torch.bfloat16, seed=0,
                           max_new_tokens=args.tokens, **teacher)
    report["build_seconds"] = round(time.perf_counter() - t0, 1)
    prompts_file = root / "prompts.jsonl"
    prompts_file.write_text("".join(json.dumps({"prompt": f"Problem {i}: what is {i} + {i}?"})
                                    + "\n" for i in range(64)))
    prompts = load_prompts(prompts_file)

    for ckpt in (False, True):
        _reset_peak()
        pair = load_pair(s_dir, t_dir, student_dtype="float32", teacher_dtype="bfloat16",
                         student_device=dev, teacher_device=dev)
        start = [p.detach().clone() for p in pair.student.model.parameters()]
        cfg = resolve_config("gpu", overrides={
            "steps": args.steps, "batch_prompts": 2, "n_samples": 4, "lr": 1e-5,
            "max_new_tokens": args.train_tokens, "eval_every": 0, "ckpt_every": 0,
            "capture_batch_size": 4, "gradient_checkpointing": ckpt, "device": dev,
            "teacher_device": dev})
        out = root / f"train-ckpt{int(ckpt)}"
        t1 = time.perf_counter()
        train(pair, prompts, out, cfg, progress=False)
        m = load_run(out).metrics
        moved = sum(float((p.detach() - w).abs().sum()) for p, w in
                    zip(pair.student.model.parameters(), start, strict=True))
        n = sum(w.numel() for w in start)
        report[f"train_gradient_checkpointing_{ckpt}"] = {
            "seconds": round(time.perf_counter() - t1, 1),
            "step_seconds": [round(x, 2) for x in m.time_step],
            "sample_seconds": [round(x, 2) for x in m.time_sample],
            "tokens_per_step": [int(x) for x in m.n_tokens],
            "peak_gib": _peak_gib(), "mean_abs_dw": moved / n,
            "loss": [round(x, 4) for x in m.loss]}
        del pair, start
        if dev == "cuda":
            torch.cuda.empty_cache()

    _reset_peak()
    pair = load_pair(s_dir, t_dir, student_dtype="bfloat16", teacher_dtype="bfloat16",
                     student_device=dev, teacher_device=dev)
    t2 = time.perf_counter()
    cap = run_capture(pair, prompts.head(args.rollouts), root / "capture",
                      sampling=SamplingConfig(n_samples=1, max_new_tokens=args.tokens,
                                              batch_size=args.rollouts),
                      capture=CaptureConfig(top_k=16, batch_size=4), progress=False)
    run = load_run(cap)
    report["capture"] = {"seconds": round(time.perf_counter() - t2, 1),
                         "rollouts": len(run.rollouts), "tokens": int(run.rollouts.n_tokens.sum()),
                         "states_rows": len(run.states), "peak_gib": _peak_gib(),
                         "head_check": "passed (bf16 student and teacher)"}
    report["total_seconds"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(report, indent=2)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "gpu_check.json").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
