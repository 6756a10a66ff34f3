"""Capture cost: ours vs the two bare forward passes vs a naive full-vocabulary capture.

Prints ratios measured side by side in one run (absolute times on a shared machine are noise):

* ``time ratio vs bare forwards``: ours / (student + teacher HF forward returning logits);
* ``time ratio vs naive``: ours / thunlp-style capture (float32 log_softmax over [B, T, V] for
  both models, then top-k, entropy and gathers);
* ``memory ratio vs naive``: peak extra memory (beyond weights and inputs) of ours / naive.

Each (shape, method) runs in a fresh subprocess; peak extra memory is the growth of the
process's peak RSS (``ru_maxrss``) during the call, or ``torch.cuda.max_memory_allocated`` on
GPU. Times are medians over ``--reps`` alternating repetitions.

    python benchmarks/capture.py                # both shapes
    python benchmarks/capture.py --shape zoo    # the tiny shape only
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

SHAPES = {
    # name: vocab, hidden, layers, heads, batch, prompt, completion
    "real": dict(vocab=151_936, hidden=1024, layers=4, heads=16, batch=1, prompt=32, T=1024),
    "zoo": dict(vocab=384, hidden=128, layers=3, heads=4, batch=64, prompt=16, T=64),
}
METHODS = ("bare", "naive", "ours")


def _models(shape: dict, device: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=shape["vocab"], hidden_size=shape["hidden"],
                      intermediate_size=shape["hidden"] * 4, num_hidden_layers=shape["layers"],
                      num_attention_heads=shape["heads"], num_key_value_heads=shape["heads"],
                      max_position_embeddings=4096, tie_word_embeddings=False)
    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        out.append(LlamaForCausalLM(cfg).to(device).eval())
    return out


@torch.no_grad()
def bare(student, teacher, ids, P, k):
    return student(ids).logits, teacher(ids).logits


@torch.no_grad()
def naive(student, teacher, ids, P, k):
    """What thunlp/OPD's verl fork does: full float32 log_softmax over [B, T, V]."""
    ls = torch.log_softmax(student(ids).logits[:, P - 1:-1].float(), dim=-1)
    lt = torch.log_softmax(teacher(ids).logits[:, P - 1:-1].float(), dim=-1)
    tok = ids[:, P:, None]
    ls.gather(-1, tok), lt.gather(-1, tok)
    -(ls.exp() * ls).sum(-1), -(lt.exp() * lt).sum(-1)
    (ls.exp() * (ls - lt)).sum(-1)
    vs, ids_s = ls.topk(k, -1)
    vt, ids_t = lt.topk(k, -1)
    lt.gather(-1, ids_s), ls.gather(-1, ids_t)


def ours(student, teacher, ids, P, k):
    from opd_diag.capture import score_states

    rows = ids.tolist()
    score_states(student, teacher, [r[:P] for r in rows], [r[P:] for r in rows], top_k=k,
                 vocab=student.config.vocab_size, pad_id=0)


def worker(shape_name: str, method: str, device: str, threads: int, reps: int) -> dict:
    torch.set_num_threads(threads)
    shape = SHAPES[shape_name]
    student, teacher = _models(shape, device)
    g = torch.Generator().manual_seed(0)
    L = shape["prompt"] + shape["T"]
    ids = torch.randint(0, shape["vocab"], (shape["batch"], L), generator=g).to(device)
    fn = {"bare": bare, "naive": naive, "ours": ours}[method]
    fn(student, teacher, ids[:, : shape["prompt"] + 8], shape["prompt"], 16)  # warm-up, small
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(student, teacher, ids, shape["prompt"], 16)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"times": times, "peak_extra_bytes": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=[*SHAPES, "all"], default="all")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions per method")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of all methods")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--worker", nargs=2, metavar=("SHAPE", "METHOD"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.device, args.threads, args.reps)))
        return
    shapes = list(SHAPES) if args.shape == "all" else [args.shape]
    print(f"device={args.device} threads={args.threads} torch={torch.__version__}")
    for name in shapes:
        times = {m: [] for m in METHODS}
        peaks = {m: [] for m in METHODS}
        for _ in range(args.rounds):
            for method in METHODS:  # alternate methods so drift hits all of them
                cmd = [sys.executable, __file__, "--worker", name, method, "--reps", str(args.reps),
                       "--threads", str(args.threads), "--device", args.device]
                res = json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                                text=True).stdout.strip().splitlines()[-1])
                times[method] += res["times"]
                peaks[method].append(res["peak_extra_bytes"])
        med = {m: statistics.median(times[m]) for m in METHODS}
        peak = {m: max(1, min(peaks[m])) for m in METHODS}
        print(f"\nshape {name}: {SHAPES[name]}")
        for m in METHODS:
            print(f"  {m:<6} median {med[m]:.3f} s   peak extra memory {peak[m] / 2**20:9.1f} MiB")
        print(f"  time ratio vs bare forwards : {med['ours'] / med['bare']:.3f}  (target <= 1.5)")
        print(f"  time ratio vs naive         : {med['ours'] / med['naive']:.3f}  (target <= 0.7)")
        print(f"  memory ratio vs naive       : {peak['ours'] / peak['naive']:.3f}  (target <= 0.125)")


if __name__ == "__main__":
    main()
