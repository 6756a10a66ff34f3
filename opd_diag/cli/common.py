"""Flag groups shared by several subcommands (one definition, so they cannot drift)."""

from __future__ import annotations

import argparse
import math
import sys

# One help text per flag that several subcommands share (tests/test_cli.py checks they agree).
HELP = {
    "student": "local HF model directory of the student",
    "teacher": "local HF model directory of the teacher",
    "student-dtype": "student dtype: float32 | bfloat16 | float16 (default float32)",
    "teacher-dtype": "teacher dtype: float32 | bfloat16 | float16 (default float32)",
    "student-device": "student device: cpu | cuda | cuda:N | auto (default cpu)",
    "teacher-device": "teacher device: cpu | cuda | cuda:N | auto (default cpu)",
    "trust-remote-code": "run modelling code shipped in the model directories (off by default; "
                         "a config with auto_map is refused without it)",
    "top-k": "size of the captured top-k lists and the overlap metrics' k (default 16)",
    "seed": "base seed (default 0)",
    "raw-prompt": "feed prompts as raw text even when the student has a chat template",
    "overwrite": "replace an existing opd-diag output in --out (never a directory that is not "
                 "one: opd-diag does not delete your files)",
    "resume": "continue an interrupted run in --out (same flags required)",
}


def finite_float(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                 hi_open: bool = False):
    """An argparse ``type``: a finite float (never nan / inf) in ``[lo, hi]`` (open ends with
    ``lo_open`` / ``hi_open``); a bad value is an argparse error, exit 2, naming the range."""
    lo_s = "" if lo is None else ("(" if lo_open else "[") + f"{lo:g}"
    hi_s = "" if hi is None else f"{hi:g}" + (")" if hi_open else "]")
    rng = f"{lo_s or '(-inf'}, {hi_s or 'inf)'}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if lo is not None and (value < lo or (lo_open and value == lo)) or \
                hi is not None and (value > hi or (hi_open and value == hi)):
            raise argparse.ArgumentTypeError(f"{text} is outside {rng}")
        return value

    parse.__name__ = "finite float"  # argparse names the type in its message
    return parse


def add_model_device_args(g, dtype_default: str | None = "float32",
                          device_default: str | None = "cpu", fallback: str = "") -> None:
    """``--student-device/--teacher-device/--student-dtype/--teacher-dtype`` (one model each)."""
    for role in ("student", "teacher"):
        for what, default in (("dtype", dtype_default), ("device", device_default)):
            text = HELP[f"{role}-{what}"]
            if default is None:
                text = text.rsplit(" (default", 1)[0] + f" (default {fallback or '--' + what})"
            g.add_argument(f"--{role}-{what}", default=default, help=text)


def add_pair_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("models")
    g.add_argument("--student", required=True, help=HELP["student"])
    g.add_argument("--teacher", required=True, help=HELP["teacher"])
    add_model_device_args(g)
    g.add_argument("--trust-remote-code", action="store_true", help=HELP["trust-remote-code"])


def add_top_k_arg(g, default: int = 16) -> None:
    g.add_argument("--top-k", type=int, default=default, help=HELP["top-k"])


def add_out_args(g, *, resume: bool, what: str = "run directory to create") -> None:
    """``--out`` and ``--overwrite`` (and ``--resume``): the output-dir rule of core/runs.py."""
    g.add_argument("--out", required=True,
                   help=f"{what}: missing, empty, or an opd-diag run (replaced only with "
                   "--overwrite)")
    g.add_argument("--overwrite", action="store_true", help=HELP["overwrite"])
    if resume:
        g.add_argument("--resume", action="store_true", help=HELP["resume"])


def check_out(args, marker: str = "run.json", what: str = "run") -> None:
    """The output-dir rule before any model is loaded (a file or a foreign directory as --out
    fails in a second, not after loading); the writers check again under their lock."""
    import os

    from ..core.runs import check_out_dir

    if getattr(args, "dry_run", False) or int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun rank 0 alone owns the directory (it may be creating it now)
    check_out_dir(args.out, overwrite=getattr(args, "overwrite", False),
                  resume=getattr(args, "resume", False), marker=marker, what=what)


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--n-samples", type=int, default=4, help="completions per prompt (default 4)")
    g.add_argument("--temperature", type=finite_float(0), default=1.0,
                   help="sampling temperature, >= 0; 0 = greedy (default 1.0)")
    g.add_argument("--top-p", type=finite_float(0, 1, lo_open=True), default=1.0,
                   help="nucleus mass in (0, 1] (default 1.0)")
    g.add_argument("--max-new-tokens", type=int, default=None,
                   help="completion budget (default: the student's generation_config "
                   "max_new_tokens; required when its directory sets none)")
    g.add_argument("--batch-size", type=int, default=16, help="rows per generation batch (default 16)")
    g.add_argument("--seed", type=int, default=0, help=HELP["seed"])
    g.add_argument("--raw-prompt", action="store_true", help=HELP["raw-prompt"])


def add_backend_args(p: argparse.ArgumentParser, dry_run: bool = True) -> None:
    """``--backend`` / ``--gpu-memory-utilization`` (and ``--dry-run``): how sampling runs, and
    what it will cost (docs/real-models.md)."""
    g = p.add_argument_group("speed and cost (docs/real-models.md)")
    g.add_argument("--backend", choices=["hf", "hf-compile", "vllm"], default="hf",
                   help="sampling backend for every rollout, continuation and frontier sample: "
                   "hf (default); hf-compile (hf with the decode torch.compile-d in blocks of 4 "
                   "steps: faster on small models, the first batch pays a compile of about a "
                   "minute on CPU, needs a "
                   "C++ compiler on CPU; same samples up to float summation order); or vllm "
                   "(needs vLLM and a GPU; same rollouts table and seeds, not bit-identical "
                   "samples); scoring is always the HF capture engine")
    g.add_argument("--gpu-memory-utilization", type=finite_float(0, 1, lo_open=True),
                   default=0.3,
                   help="vllm: GPU memory fraction each vLLM engine pre-allocates (student and "
                   "teacher engines each take it; leave room for the HF models; default 0.3)")
    if dry_run:
        g.add_argument("--dry-run", action="store_true",
                       help="print the work per stage (rollouts, tokens sampled / scored per "
                       "model, peak memory per device, KV-cache per token, chunk size, states "
                       "bytes) and a time estimate from a short measured probe, then exit 0 "
                       "without writing a run")


def add_sparse_teacher_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher-topk-only", type=int, default=None, metavar="K",
                   help="sparse teacher mode: see the teacher only through its top-K log-probs "
                   "and the sampled token's (what a served teacher returns); exact metrics stay "
                   "exact, H_t / KLs become intervals (columns *_lo, *_hi; probe sparse_teacher)")


def backend_from_args(args):
    """The sampling backend the flags ask for (an OpdDiagError for vllm without vLLM / GPU)."""
    from ..states.backend import make_backend

    backend = make_backend(args.backend, gpu_memory_utilization=args.gpu_memory_utilization)
    if backend.compile and not (getattr(args, "dry_run", False) or getattr(args, "quiet", False)):
        # a silent minute otherwise
        print("opd-diag: --backend hf-compile: the first batch compiles the decode (about a "
              "minute on a small CPU; later runs on this machine reuse the inductor cache)",
              file=sys.stderr, flush=True)
    return backend


def show_plan(args) -> bool:
    """Whether to build the plan: always for --dry-run; for a real run unless --quiet or under
    torchrun (every rank would probe and print)."""
    import os

    if getattr(args, "dry_run", False):
        return True
    return not getattr(args, "quiet", False) and int(os.environ.get("WORLD_SIZE", "1")) == 1


def print_plan(plan, args, file=None) -> None:
    if getattr(args, "dry_run", False):  # the plan is the command's output
        print(plan.render(), file=file or sys.stdout, flush=True)
    elif not getattr(args, "quiet", False):  # a real run: the plan first, on stderr
        print(plan.render(), file=file or sys.stderr, flush=True)
