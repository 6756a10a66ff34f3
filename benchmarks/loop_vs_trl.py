"""Our OPD loop vs TRL 1.16 ``DistillationTrainer`` on the same tiny models: median step time.

Same student/teacher (tiny random Llamas from ``opd_diag.testing``), same prompts, same number
of completions per step, same completion budget, same number of steps, lr, fp32, one thread.
TRL runs full-vocabulary reverse KL (``beta=1``) on CPU with ``use_cpu=True, bf16=False,
gradient_checkpointing=False``; runs alternate (ours, TRL, ours, TRL, …) so load drift on a
shared machine hits both. Step time = wall time of one optimizer step including generation
(TRL: ``on_step_begin`` → ``on_step_end``; ours: ``time_step``, which also includes writing the
step's rollouts/states shards and the metrics row). The first step of each run is a warm-up and
is dropped. Besides the ratios it prints where each loop spends a step: ours by phase (sample,
forward = both models' forwards + captured statistics + objective, backward, optimizer, log),
TRL split into generation (``DistillationTrainer._generate``) and the rest.

    .venv/bin/python benchmarks/loop_vs_trl.py [--rounds 3] [--steps 6] [--clock wall|cpu]

``--clock cpu`` times every phase (ours and TRL's) in process CPU time instead of wall time: on
a shared, oversubscribed machine wall time mostly measures the other tenants. CPU time leaves
out waiting for the disk (our per-step ``fsync`` of shards and metrics), so report both.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
warnings.filterwarnings("ignore")

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


def ours(student, teacher, prompts, out, args, **objective) -> tuple[dict[str, list[float]], float]:
    cfg = TrainConfig(steps=args.steps, batch_prompts=args.batch, n_samples=1, lr=1e-4,
                      max_new_tokens=args.new_tokens, raw_prompt=True, ckpt_every=0,
                      grad_clip=1.0, seed=0, **objective)
    train(load_pair(student, teacher), load_prompts(prompts), out, cfg, overwrite=True,
          progress=False)
    m = load_run(out).metrics
    times = {phase: m[col].tolist()[1:] for phase, col in {"step": "time_step", **PHASES}.items()}
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


def trl_run(student, teacher, prompts, out, args) -> tuple[list[float], list[float]]:
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
        output_dir=str(out), beta=1.0, temperature=1.0, top_k=0, top_p=1.0,
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
    return timer.times[1:], gen_times[1:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8, help="completions per step")
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="time phases in wall-clock time or in this process's CPU time")
    args = ap.parse_args()
    if args.clock == "cpu":  # every timer here, in our loop and in the TRL callback reads this
        time.perf_counter = time.process_time
    variants = {"full-vocab reverse KL": {"objective": "reverse_kl"},
                "sampled-token": {"objective": "sampled_token"},
                "top-16 (only_stu, student_p)": {"objective": "topk", "top_k": 16},
                "reverse KL, states every 10th": {"objective": "reverse_kl", "states_every": 10}}
    times: dict[str, dict[str, list[float]]] = {name: {} for name in variants}
    trl_times, trl_gen = [], []
    lengths: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        student, teacher, prompts = build(root, args.vocab)
        for r in range(args.rounds):
            for name, objective in variants.items():  # alternate: ours, TRL, ours, TRL, …
                t, length = ours(student, teacher, prompts, root / "ours", args, **objective)
                for phase, values in t.items():
                    times[name].setdefault(phase, []).extend(values)
                lengths[name].append(length)
                step, gen = trl_run(student, teacher, prompts, root / "trl", args)
                trl_times += step
                trl_gen += gen
                print(f"round {r}: {name}: median {statistics.median(t['step']):.3f}s  |  TRL "
                      f"median {statistics.median(step):.3f}s", flush=True)
    trl, gen = statistics.median(trl_times), statistics.median(trl_gen)
    print(f"\nsetup: student 64x2, teacher 128x4, vocab {args.vocab}, {args.batch} completions "
          f"x {args.new_tokens} new tokens, {args.steps} steps (first dropped), "
          f"{args.rounds} rounds, 1 thread, {args.clock} clock")
    # The best step of each is the least disturbed by other tenants of a shared machine.
    print(f"TRL DistillationTrainer (beta=1): median step {trl:.3f}s over {len(trl_times)} steps "
          f"(generation {gen:.3f}s, the rest {trl - gen:.3f}s); best step {min(trl_times):.3f}s")
    for name in variants:
        med, best = statistics.median(times[name]["step"]), min(times[name]["step"])
        phases = "  ".join(f"{p} {statistics.median(times[name][p]):.3f}" for p in PHASES)
        print(f"ours {name:<30} median step {med:.3f}s  ratio ours/TRL = {med / trl:.2f}  "
              f"(best-step ratio {best / min(trl_times):.2f}; mean response length "
              f"{statistics.mean(lengths[name]):.1f}; median phases: {phases})")


if __name__ == "__main__":
    main()
