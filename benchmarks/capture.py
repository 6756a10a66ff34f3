"""Capture cost: ours vs the two bare forward passes vs a naive full-vocabulary capture.

Prints ratios measured side by side in one run (absolute times on a shared machine are noise):

* ``time ratio vs bare forwards``: ours / (student + teacher HF forward returning logits);
* ``time ratio vs naive``: ours / thunlp-style capture (float32 log_softmax over [B, T, V] for
  both models, then top-k, entropy and gathers);
* ``memory ratio vs naive``: peak extra memory (beyond weights and inputs) of ours / naive;
* ``time ratio vs ours with torch.topk``: ours / the same capture with every top-k through
  ``torch.topk`` instead of :func:`opd_diag.core.topk.topk_rows` (what the block-maxima top-k
  saves; the same call below 8,192 columns).

Times: one process, the three methods called in alternation ``--reps`` times, medians compared
(so machine load drifts hit all three alike). Memory: each (shape, method) runs once in a fresh
subprocess with glibc's mmap threshold pinned (``MALLOC_MMAP_THRESHOLD_``) so freed buffers go
back to the OS; peak extra memory is the kernel's peak RSS during the call (VmHWM, reset just
before it through /proc/self/clear_refs) minus the RSS before it, or the growth of
``torch.cuda.max_memory_allocated`` on GPU.

    python benchmarks/capture.py                # both shapes
    python benchmarks/capture.py --shape zoo    # the tiny shape only
    python benchmarks/capture.py --out benchmarks/results   # also write capture.{json,md}

Goals (the faster-loop issue): ours ≤ 1.3x the two bare forwards and ≤ 0.125x the naive capture's
peak extra memory at the real-vocabulary shape with 2 threads.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

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
    from opd_diag.states.capture import score_states

    rows = ids.tolist()
    score_states(student, teacher, [r[:P] for r in rows], [r[P:] for r in rows], top_k=k,
                 vocab=student.config.vocab_size, pad_id=0)


def ours_torch_topk(student, teacher, ids, P, k):
    """``ours`` with every top-k through ``torch.topk`` (what block-maxima top-k saves)."""
    from opd_diag.core import topk

    saved, topk.BLOCK_TOPK_MIN_V = topk.BLOCK_TOPK_MIN_V, float("inf")
    try:
        ours(student, teacher, ids, P, k)
    finally:
        topk.BLOCK_TOPK_MIN_V = saved


def _setup(shape_name: str, device: str, threads: int):
    torch.set_num_threads(threads)
    shape = SHAPES[shape_name]
    student, teacher = _models(shape, device)
    g = torch.Generator().manual_seed(0)
    L = shape["prompt"] + shape["T"]
    ids = torch.randint(0, shape["vocab"], (shape["batch"], L), generator=g).to(device)
    return shape, student, teacher, ids


FNS = {"bare": bare, "naive": naive, "ours": ours, "ours_torch_topk": ours_torch_topk}
#: timed side by side; memory is measured for METHODS only
TIMED = (*METHODS, "ours_torch_topk")


def memory_worker(shape_name: str, method: str, device: str, threads: int) -> int:
    shape, student, teacher, ids = _setup(shape_name, device, threads)
    fn = FNS[method]
    fn(student, teacher, ids[:, : shape["prompt"] + 8], shape["prompt"], 16)  # warm-up, small
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn(student, teacher, ids, shape["prompt"], 16)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    base = _reset_peak_rss()
    fn(student, teacher, ids, shape["prompt"], 16)
    return _status_kib("VmHWM") * 1024 - base


def _status_kib(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS counter (VmHWM) and return the current RSS in bytes.

    Linux: writing 5 to /proc/self/clear_refs resets VmHWM to the current RSS, so the peak
    measured afterwards belongs to the call alone (ru_maxrss cannot be reset). Elsewhere fall
    back to ru_maxrss, which only sees peaks above everything earlier in the process.
    """
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return _status_kib("VmRSS") * 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def time_all(shape_name: str, device: str, threads: int, reps: int) -> dict[str, list[float]]:
    shape, student, teacher, ids = _setup(shape_name, device, threads)
    times = {m: [] for m in TIMED}
    for m in TIMED:
        FNS[m](student, teacher, ids[:, : shape["prompt"] + 8], shape["prompt"], 16)
    for _ in range(reps):
        for m in TIMED:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            FNS[m](student, teacher, ids, shape["prompt"], 16)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times[m].append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=[*SHAPES, "all"], default="all")
    ap.add_argument("--reps", type=int, default=3, help="alternating timed repetitions")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=None, help="write capture.{json,md} into this folder")
    ap.add_argument("--worker", nargs=2, metavar=("SHAPE", "METHOD"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(memory_worker(*args.worker, args.device, args.threads))
        return
    shapes = list(SHAPES) if args.shape == "all" else [args.shape]
    print(f"device={args.device} threads={args.threads} torch={torch.__version__}")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    results = []
    for name in shapes:
        peak = {}
        for method in METHODS:
            cmd = [sys.executable, __file__, "--worker", name, method, "--threads",
                   str(args.threads), "--device", args.device]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
            peak[method] = max(1, int(out.stdout.strip().splitlines()[-1]))
        times = time_all(name, args.device, args.threads, args.reps)
        med = {m: statistics.median(times[m]) for m in TIMED}
        row = {"shape": name, **SHAPES[name],
               "time_vs_bare": med["ours"] / med["bare"], "time_vs_naive": med["ours"] / med["naive"],
               "time_vs_torch_topk": med["ours"] / med["ours_torch_topk"],
               "memory_vs_naive": peak["ours"] / peak["naive"],
               "peak_mib": {m: peak[m] / 2**20 for m in METHODS}, "times_s": times}
        results.append(row)
        print(f"\nshape {name}: {SHAPES[name]}")
        for m in METHODS:
            print(f"  {m:<6} median {med[m]:.3f} s   peak extra memory {peak[m] / 2**20:9.1f} MiB")
        print(f"  time ratio vs bare forwards : {row['time_vs_bare']:.3f}  (goal <= 1.3)")
        print(f"  time ratio vs naive         : {row['time_vs_naive']:.3f}")
        print(f"  time ratio vs ours with torch.topk: {row['time_vs_torch_topk']:.3f}")
        print(f"  memory ratio vs naive       : {row['memory_vs_naive']:.3f}  (goal <= 0.125)")
    if args.out:
        write_results(Path(args.out), args, results)


def write_results(out: Path, args, results: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    setup = {"device": args.device, "threads": args.threads, "reps": args.reps,
             "torch": torch.__version__}
    (out / "capture.json").write_text(json.dumps({"setup": setup, "results": results}, indent=1))
    lines = ["# Capture cost: ours vs the two bare forwards vs a naive capture", "",
             f"`python benchmarks/capture.py --out {out}`; device {args.device}, "
             f"{args.threads} threads, {args.reps} alternating repetitions, torch "
             f"{torch.__version__}. Ratios are medians measured side by side in one process; "
             "memory is peak extra RSS of one call in a fresh subprocess.", "",
             "| shape | vocab | positions | ours / bare forwards (goal ≤ 1.3) | ours / naive time "
             "| ours / naive peak memory (goal ≤ 0.125) | peak extra MiB bare / naive / ours "
             "| ours / ours with `torch.topk` |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        pk = r["peak_mib"]
        lines.append(f"| {r['shape']} | {r['vocab']} | {r['batch']} x {r['T']} | "
                     f"{r['time_vs_bare']:.3f} | {r['time_vs_naive']:.3f} | "
                     f"{r['memory_vs_naive']:.3f} | {pk['bare']:.0f} / {pk['naive']:.0f} / "
                     f"{pk['ours']:.0f} | {r['time_vs_torch_topk']:.3f} |")
    lines += ["", "The last column times the same capture with every top-k through `torch.topk` "
              "instead of `opd_diag.core.topk.topk_rows` (block maxima, used on CPU from "
              "8,192 columns; the zoo's vocabulary is below that, so there both are `torch.topk`).",
              "", "Absolute times depend on the machine and its other tenants; read the ratios."]
    (out / "capture.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
