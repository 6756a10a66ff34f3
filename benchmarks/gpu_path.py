"""The real-model path: HF vs vLLM sampling throughput, capture tokens/s vs a bare forward, and a
pre-flight's stage times (with the --dry-run estimate beside them) on random-init Qwen2 shapes.

Shapes: ``tiny`` (CPU-sized), ``qwen2-0.5b`` and ``qwen2-1.5b`` (the real configs, random
weights, 151,936-token vocabulary). Models are written once to a temp dir (safetensors + a
word-level tokenizer of the full vocabulary) so vLLM can load them. vLLM rows need vLLM and a
GPU and are reported as ``not run`` otherwise.

    python benchmarks/gpu_path.py                      # CPU: the tiny shape
    python benchmarks/gpu_path.py --shapes tiny qwen2-0.5b qwen2-1.5b --device cuda

Results go to ``benchmarks/results/gpu_path_<device>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

SHAPES = {
    "tiny": dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, vocab_size=1024),
    "qwen2-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                       num_attention_heads=14, num_key_value_heads=2, vocab_size=151_936),
    "qwen2-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                       num_attention_heads=12, num_key_value_heads=2, vocab_size=151_936),
}
# per device: (sampling rows, new tokens, prompt tokens, capture rows, preflight budget)
WORK = {
    "cpu": dict(rows=8, new=32, prompt=32, cap_rows=4, cap_len=128,
                pf=dict(n_prompts=4, n_samples=2, max_new_tokens=32, n_frontier=2,
                        max_continuation_rollouts=2, batch_size=8)),
    "cuda": dict(rows=64, new=256, prompt=128, cap_rows=8, cap_len=1024,
                 pf=dict(n_prompts=16, n_samples=2, max_new_tokens=256, n_frontier=4,
                         max_continuation_rollouts=8, batch_size=32)),
}


def make_dir(root: Path, name: str, shape: dict, seed: int) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from opd_diag.testing import make_tokenizer

    path = root / name
    if (path / "config.json").exists():
        return path
    tok = make_tokenizer(shape["vocab_size"])
    cfg = Qwen2Config(**shape, max_position_embeddings=4096, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg)
    model.save_pretrained(str(path), safe_serialization=True)
    tok.save_pretrained(str(path))
    return path


def _time(fn, reps: int = 3) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(reps):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_shape(name: str, device: str, root: Path, dtype: str) -> dict:
    from opd_diag.core.models import load_pair
    from opd_diag.core.prompts import load_prompts
    from opd_diag.preflight import PreflightConfig, run_preflight
    from opd_diag.preflight.plan import plan_preflight
    from opd_diag.states import vllm as vb
    from opd_diag.states.backend import HFBackend, VLLMBackend, use_backend
    from opd_diag.states.capture import score_states
    from opd_diag.states.rollout import SamplingConfig

    shape, work = SHAPES[name], WORK["cuda" if device.startswith("cuda") else "cpu"]
    teacher = make_dir(root, f"{name}-teacher", shape, 0)
    student = make_dir(root, f"{name}-student", shape, 1)
    pair = load_pair(student, teacher, student_dtype=dtype, teacher_dtype=dtype,
                     student_device=device, teacher_device=device)
    V, pad = pair.compare_vocab, pair.tokenizer.pad_token_id
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, V, (work["rows"], work["prompt"]), generator=g).tolist()
    cfg = SamplingConfig(n_samples=1, max_new_tokens=work["new"], batch_size=work["rows"])
    out: dict = {"shape": name, "device": device, "dtype": dtype,
                 "n_params": sum(p.numel() for p in pair.student.model.parameters())}
    n_tok = work["rows"] * work["new"]
    hf = HFBackend()
    sec = _time(lambda: hf.sample(pair.student.model, ids, list(range(len(ids))), cfg,
                                  eos_ids=[], pad_id=pad, vocab_limit=V), reps=2)
    out["sample_hf_tok_s"] = n_tok / sec
    if vb.available() and torch.cuda.is_available():
        vl = VLLMBackend(gpu_memory_utilization=0.25, dtype=dtype)
        sec = _time(lambda: vl.sample(pair.student.model, ids, list(range(len(ids))), cfg,
                                      eos_ids=[], pad_id=pad, vocab_limit=V), reps=2)
        out["sample_vllm_tok_s"] = n_tok / sec
        out["vllm_speedup"] = out["sample_vllm_tok_s"] / out["sample_hf_tok_s"]
    else:
        out["sample_vllm_tok_s"] = "not run (needs vLLM and a CUDA GPU)"
    # capture vs the two bare forwards (logits for every position, nothing else)
    half = work["cap_len"] // 2
    p_ids = torch.randint(4, V, (work["cap_rows"], half), generator=g).tolist()
    c_ids = torch.randint(4, V, (work["cap_rows"], half), generator=g).tolist()
    seq = torch.tensor([p + c for p, c in zip(p_ids, c_ids)], device=device)

    @torch.no_grad()
    def bare():
        for m in (pair.student.model, pair.teacher.model):
            m(seq).logits.float()

    t_bare = _time(bare)
    t_cap = _time(lambda: score_states(pair.student.model, pair.teacher.model, p_ids, c_ids,
                                       top_k=16, vocab=V, pad_id=pad))
    positions = work["cap_rows"] * half
    out.update(capture_positions_s=positions / t_cap, bare_forward_positions_s=positions / t_bare,
               capture_vs_bare_time=t_cap / t_bare)
    # a pre-flight on the pair, with the dry-run estimate measured first
    words = [f"w{i}" for i in range(V - 4)]
    pf_prompts = root / f"{name}-prompts.jsonl"
    pf_prompts.write_text("".join(json.dumps({"prompt": " ".join(words[(7 * i + j) % len(words)]
                                                                   for j in range(12)),
                                              "answer": words[i % len(words)]}) + "\n"
                                  for i in range(work["pf"]["n_prompts"])))
    prompts = load_prompts(pf_prompts)
    pcfg = PreflightConfig(**work["pf"])
    backends = [("hf", None)] + ([("vllm", VLLMBackend(gpu_memory_utilization=0.25, dtype=dtype))]
                                 if vb.available() and torch.cuda.is_available() else [])
    for bname, backend in backends:
        with use_backend(backend or "hf"):
            plan = plan_preflight(pair, prompts, pcfg)
            t0 = time.perf_counter()
            run_preflight(pair, prompts, root / f"{name}-pf-{bname}", config=pcfg,
                          verifier=lambda text, a: a in text)
            real = time.perf_counter() - t0
        stages = json.loads((root / f"{name}-pf-{bname}" / "verdict.json").read_text())[
            "stage_seconds"]
        out[f"preflight_{bname}"] = {"stage_seconds": stages, "measured_s": real,
                                     "estimated_s": plan.total_seconds(),
                                     "peak_memory_estimate_bytes": plan.memory()}
    if not any(b == "vllm" for b, _ in backends):
        out["preflight_vllm"] = "not run (needs vLLM and a CUDA GPU)"
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def to_markdown(rows: list[dict]) -> str:
    lines = ["| shape | device | params | HF sample tok/s | vLLM sample tok/s | capture pos/s | "
             "bare fwd pos/s | capture/bare time | pre-flight s (all) | sampling+scoring stages s "
             "| dry-run estimate s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        v = r["sample_vllm_tok_s"]
        pf = r["preflight_hf"]
        lines.append(f"| {r['shape']} | {r['device']} | {r['n_params'] / 1e6:.1f}M | "
                     f"{r['sample_hf_tok_s']:.0f} | {v if isinstance(v, str) else f'{v:.0f}'} | "
                     f"{r['capture_positions_s']:.0f} | {r['bare_forward_positions_s']:.0f} | "
                     f"{r['capture_vs_bare_time']:.2f} | {pf['measured_s']:.1f} | "
                     f"{sum(v for k, v in pf['stage_seconds'].items() if k != 'probes'):.1f} | "
                     f"{pf['estimated_s']:.1f} |")
    lines.append("")
    for r in rows:
        lines.append(f"pre-flight stage seconds ({r['shape']}, hf): "
                     + ", ".join(f"{k} {v:.2f}" for k, v in r["preflight_hf"]["stage_seconds"].items()))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=None, choices=sorted(SHAPES))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, help="default: bfloat16 on GPU, float32 on CPU")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    shapes = args.shapes or (["tiny", "qwen2-0.5b", "qwen2-1.5b"] if args.device != "cpu"
                             else ["tiny"])
    dtype = args.dtype or ("bfloat16" if args.device != "cpu" else "float32")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in shapes:
            print(f"[gpu_path] {name} on {args.device} ...", file=sys.stderr, flush=True)
            rows.append(bench_shape(name, args.device, Path(tmp), dtype))
    dev = "cuda" if args.device.startswith("cuda") else "cpu"
    res = Path(args.out)
    res.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.platform(), "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    (res / f"gpu_path_{dev}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1,
                                                         default=str))
    md = to_markdown(rows)
    if dev == "cpu":
        md += ("\nGPU part not run here (no GPU lent to this session): vLLM sampling and the "
               "0.5B / 1.5B shapes need `python benchmarks/gpu_path.py --device cuda`.\n")
    (res / f"gpu_path_{dev}.md").write_text(f"# gpu_path ({meta['machine']}, {meta['gpu'] or 'CPU'}, "
                                            f"{meta['threads']} threads)\n\n" + md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
