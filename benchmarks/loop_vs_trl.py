"""Our OPD loop vs TRL 1.16 ``DistillationTrainer`` on the same tiny models: median step time.

Same student/teacher (tiny random Llamas from ``opd_diag.testing``), same prompts, same number
of completions per step, same completion budget, same number of steps, lr, fp32, one thread.
Like for like: each of our objectives is timed next to the TRL run of the *same* divergence
(``beta=1`` reverse KL, ``beta=0`` forward KL, ``beta=0.5`` JSD, all over the full vocabulary);
sampled-token and top-k OPD have no TRL equivalent and are shown against ``beta=1``, labelled so.
One variant forces our generic decode (``OPD_DIAG_GENERIC_DECODE=1``) to show what the lean
static-cache decode (``opd_diag/states/lean.py``) saves, one keeps the lean step on the model's
own modules (``OPD_DIAG_UNFUSED_DECODE=1``) to show what its fused eager step saves; one samples with ``--backend hf-compile``
(blocks of decode iterations ``torch.compile``-d; its first step, which holds the compile, is dropped
like every run's first step and reported separately). Both loops' mean completion lengths are
recorded (equal lengths are what makes the step times comparable). TRL runs on CPU with
``use_cpu=True, bf16=False, gradient_checkpointing=False``; runs alternate (ours, TRL, ours, …)
so load drift on a shared machine hits both. Step time = wall time of one optimizer step
including generation (TRL: ``on_step_begin`` → ``on_step_end``; ours: ``time_step``, which also
includes writing the step's rollouts/states shards and the metrics row). The first step of each
run is a warm-up and is dropped. Writes ``benchmarks/results/loop_vs_trl.{json,md}``.

    .venv/bin/python benchmarks/loop_vs_trl.py [--rounds 3] [--steps 6] [--clock wall|cpu]
        [--only VARIANT ...] [--out benchmarks/results]

``--clock cpu`` times every phase (ours and TRL's) in process CPU time instead of wall time: on
a shared, oversubscribed machine wall time mostly measures the other tenants. CPU time leaves
out waiting for the disk (our per-step ``fsync`` of shards and metrics), so report both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from opd_diag.core.models import load_pair  # noqa: E402
from opd_diag.core.prompts import load_prompts  # noqa: E402
from opd_diag.core.runs import load_run  # noqa: E402
from opd_diag.testing import make_model_dir, make_tokenizer, write_prompts  # noqa: E402
from opd_diag.train import TrainConfig, train  # noqa: E402


def build(root: Path, vocab: int):
    tok = make_tokenizer(vocab)
    teacher = make_model_dir(root / "teacher", tokenizer=tok, hidden=128, layers=4, seed=0)
    student = make_model_dir(root / "student", tokenizer=tok, hidden=64, layers=2, seed=1)
    prompts = write_prompts(root / "prompts.jsonl", n=64, words=12, vocab_size=vocab)
    return student, teacher, prompts


PHASES = {"sample": "time_sample", "forward": "time_capture", "backward": "time_loss",
          "optim": "time_optim", "log": "time_log"}


def ours(student, teacher, prompts, out, args, backend: str = "hf", **objective
         ) -> tuple[dict[str, list[float]], float]:
    cfg = TrainConfig(steps=args.steps, batch_prompts=args.batch, n_samples=1, lr=1e-4,
                      max_new_tokens=args.new_tokens, raw_prompt=True, ckpt_every=0,
                      grad_clip=1.0, seed=0, **objective)
    train(load_pair(student, teacher), load_prompts(prompts), out, cfg, overwrite=True,
          progress=False, backend=backend)
    m = load_run(out).metrics
    times = {phase: m[col].tolist()[1:] for phase, col in {"step": "time_step", **PHASES}.items()}
    times["first_step"] = m.time_step.tolist()[:1]  # the dropped warm-up (hf-compile: the compile)
    return times, float(m.response_length.mean())


class _StepTimes:
    def __init__(self) -> None:
        self.times: list[float] = []

    def callback(self):
        from transformers import TrainerCallback

        outer = self

        class CB(TrainerCallback):
            def on_step_begin(self, *a, **k):
                outer.t0 = time.perf_counter()

            def on_step_end(self, *a, **k):
                outer.times.append(time.perf_counter() - outer.t0)

        return CB()


def trl_run(student, teacher, prompts, out, args, beta: float = 1.0
            ) -> tuple[list[float], list[float], float]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DistillationConfig, DistillationTrainer

    from opd_diag.core.prompts import load_prompts as lp

    tok = AutoTokenizer.from_pretrained(str(student))
    tok.padding_side = "left"
    ds = Dataset.from_dict({"prompt": lp(prompts).prompt.tolist()})
    s = AutoModelForCausalLM.from_pretrained(str(student), dtype=torch.float32)
    t = AutoModelForCausalLM.from_pretrained(str(teacher), dtype=torch.float32)
    cfg = DistillationConfig(
        output_dir=str(out), beta=beta, temperature=1.0, top_k=0, top_p=1.0,
        max_completion_length=args.new_tokens, per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1, max_steps=args.steps, learning_rate=1e-4,
        logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, bf16=False,
        gradient_checkpointing=False, dataloader_num_workers=0, seed=0, disable_tqdm=True)
    timer = _StepTimes()
    trainer = DistillationTrainer(model=s, teacher_model=t, args=cfg, processing_class=tok,
                                  train_dataset=ds, callbacks=[timer.callback()])
    generate, gen_times = trainer._generate, []

    def timed_generate(*a, **k):
        t0 = time.perf_counter()
        out = generate(*a, **k)
        gen_times.append(time.perf_counter() - t0)
        return out

    trainer._generate = timed_generate
    trainer.train()
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history
               if "completions/mean_length" in h]
    return timer.times[1:], gen_times[1:], float(np.mean(lengths)) if lengths else float("nan")


#: (our objective, TRL's beta for the same divergence or None where TRL has no such objective)
VARIANTS = {
    "full-vocab reverse KL": ({"objective": "reverse_kl"}, 1.0),
    "full-vocab reverse KL, generic decode": ({"objective": "reverse_kl", "_generic": True}, 1.0),
    "full-vocab reverse KL, lean decode unfused": ({"objective": "reverse_kl", "_unfused": True},
                                                    1.0),
    "full-vocab reverse KL, --backend hf-compile": ({"objective": "reverse_kl",
                                                     "backend": "hf-compile"}, 1.0),
    "full-vocab forward KL": ({"objective": "forward_kl"}, 0.0),
    "generalized JSD beta=0.5": ({"objective": "jsd", "beta": 0.5}, 0.5),
    "sampled-token": ({"objective": "sampled_token"}, None),
    "top-16 (only_stu, student_p)": ({"objective": "topk", "top_k": 16}, None),
    "reverse KL, states every 10th": ({"objective": "reverse_kl", "states_every": 10}, 1.0),
}


def _ours(student, teacher, prompts, out, args, objective: dict):
    objective = dict(objective)
    switches = {"OPD_DIAG_GENERIC_DECODE": objective.pop("_generic", False),
                "OPD_DIAG_UNFUSED_DECODE": objective.pop("_unfused", False)}
    old = {name: os.environ.get(name) for name in switches}
    os.environ.update({name: "1" if on else "0" for name, on in switches.items()})
    try:
        return ours(student, teacher, prompts, out, args, **objective)
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name)
            else:
                os.environ[name] = value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8, help="completions per step")
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="time phases in wall-clock time or in this process's CPU time")
    ap.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    ap.add_argument("--out", default="benchmarks/results",
                    help="where loop_vs_trl.{json,md} go")
    args = ap.parse_args()
    if args.clock == "cpu":  # every timer here, in our loop and in the TRL callback reads this
        time.perf_counter = time.process_time
    variants = {k: v for k, v in VARIANTS.items() if not args.only or k in args.only}
    times: dict[str, dict[str, list[float]]] = {name: {} for name in variants}
    lengths: dict[str, list[float]] = {name: [] for name in variants}
    trl: dict[float, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        student, teacher, prompts = build(root, args.vocab)
        for r in range(args.rounds):
            done: set[float] = set()
            for name, (objective, beta) in variants.items():  # alternate: ours, TRL, ours, …
                t, length = _ours(student, teacher, prompts, root / "ours", args, objective)
                for phase, values in t.items():
                    times[name].setdefault(phase, []).extend(values)
                lengths[name].append(length)
                b = 1.0 if beta is None else beta
                if b not in done:  # each TRL divergence once per round, next to its objective
                    step, gen, trl_len = trl_run(student, teacher, prompts, root / "trl", args, b)
                    rec = trl.setdefault(b, {"step": [], "generation": [], "length": []})
                    rec["step"] += step
                    rec["generation"] += gen
                    rec["length"].append(trl_len)
                    done.add(b)
                print(f"round {r}: {name}: median {statistics.median(t['step']):.3f}s  |  TRL "
                      f"beta={b} median {statistics.median(trl[b]['step']):.3f}s", flush=True)
    setup = {"student": "Llama 64x2", "teacher": "Llama 128x4", "vocab": args.vocab,
             "completions_per_step": args.batch, "max_new_tokens": args.new_tokens,
             "steps": args.steps, "dropped": "first step of each run", "rounds": args.rounds,
             "threads": 1, "clock": args.clock, "torch": torch.__version__}
    trl_rows = {b: {"median_step_s": statistics.median(v["step"]),
                    "median_generation_s": statistics.median(v["generation"]),
                    "best_step_s": min(v["step"]), "mean_completion_length": float(
                        np.nanmean(v["length"])), "n_steps": len(v["step"])}
                for b, v in trl.items()}
    rows = []
    for name, (_, beta) in variants.items():
        b = 1.0 if beta is None else beta
        med, best = statistics.median(times[name]["step"]), min(times[name]["step"])
        rows.append({"ours": name, "trl_line": f"beta={b}" + ("" if beta is not None else
                                                              " (no TRL equivalent)"),
                     "median_step_s": med, "ratio_ours_over_trl": med / trl_rows[b]["median_step_s"],
                     "best_step_ratio": best / trl_rows[b]["best_step_s"],
                     "mean_completion_length": statistics.mean(lengths[name]),
                     "trl_mean_completion_length": trl_rows[b]["mean_completion_length"],
                     **{f"median_{p}_s": statistics.median(times[name][p]) for p in PHASES},
                     "first_step_s": times[name]["first_step"]})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"setup": setup, "trl": {str(b): v for b, v in trl_rows.items()}, "ours": rows}
    (out / "loop_vs_trl.json").write_text(json.dumps(result, indent=1))
    md = ["# Our OPD loop vs TRL DistillationTrainer (ratios measured side by side)", "",
          "`python benchmarks/loop_vs_trl.py " + " ".join(sys.argv[1:]) + "`; setup: "
          + ", ".join(f"{k} {v}" for k, v in setup.items()) + ".", "",
          "| ours | TRL line | ratio ours/TRL (median step) | best-step ratio | completion "
          "length ours / TRL | ours: sample / forward / backward / optim / log (s) |",
          "|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['ours']} | {r['trl_line']} | {r['ratio_ours_over_trl']:.2f} | "
                  f"{r['best_step_ratio']:.2f} | {r['mean_completion_length']:.1f} / "
                  f"{r['trl_mean_completion_length']:.1f} | " + " / ".join(
                      f"{r[f'median_{p}_s']:.3f}" for p in PHASES) + " |")
    md += ["", "TRL lines: " + "; ".join(
        f"beta={b}: median step {v['median_step_s']:.3f}s (generation "
        f"{v['median_generation_s']:.3f}s), {v['n_steps']} steps" for b, v in trl_rows.items()),
        "", "First step of each round's run (dropped warm-ups; with hf-compile round 0's holds the "
        "torch.compile of the decode, which a process pays once per architecture, shortened by "
        "the inductor cache when an earlier process compiled the same graph): "
        + "; ".join(f"{r['ours']}: " + " / ".join(f"{x:.2f}" for x in r["first_step_s"]) + " s"
                    for r in rows),
        "", "Absolute times depend on the machine and its other tenants; read the ratios."]
    (out / "loop_vs_trl.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
