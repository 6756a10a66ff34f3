"""The OPD loop: sample → capture → loss → step → log, one optimizer step per batch.

Each step the student samples completions for a batch of prompts (``generate_rollouts``), both
models are scored at every visited state by the capture engine (``capture_rollouts``), the
objective turns the student's log-probs into a loss (``losses.opd_loss``), AdamW takes one
step, and the run directory gets the step's ``rollouts``/``states`` shards (``step`` column, the
offline-capture schema) and one ``metrics.jsonl`` row computed by the overlap probe's own
``state_metrics`` — the training signal and the diagnostics are the same code.

Exactness on resume: sampling seeds depend only on (seed, step, prompt, sample), the data order
only on (seed, epoch), and a checkpoint holds model, optimizer, scheduler and RNG states. On
``resume`` everything written after the last checkpoint is dropped and recomputed, so a run
killed at any moment ends with exactly the rows of an uninterrupted one.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from ..capture import CaptureConfig
from ..errors import OpdDiagError
from ..models import Pair
from ..pipeline import capture_rollouts, generate_rollouts, render_prompts
from ..probes.overlap import state_metrics
from ..rollout import SamplingConfig
from ..runs import RunWriter, open_run, read_jsonl
from ..verify import make_verifier
from . import checkpoint as ckpt
from .config import TrainConfig
from .evaluate import evaluate_model, gap_recovery, require_answers
from .losses import opd_loss

_SHARDED = ("rollouts", "states", "eval")
_MEANS = ("overlap_ratio", "overlap_mass_s", "overlap_mass_t", "eq7_advantage", "H_s", "H_t",
          "entropy_gap", "rkl", "fkl", "sampled_rkl", "topk_mass_s", "topk_mass_t")


def batch_rows(step: int, n_prompts: int, cfg: TrainConfig) -> list[tuple[int, int]]:
    """The data cursor: (prompt_row, sample_idx) rows of ``step``; epochs reshuffle by seed."""
    rows = []
    for i in range(step * cfg.batch_prompts, (step + 1) * cfg.batch_prompts):
        order = np.random.default_rng([cfg.seed, i // n_prompts]).permutation(n_prompts)
        rows += [(int(order[i % n_prompts]), s) for s in range(cfg.n_samples)]
    return rows


def _lr_lambda(cfg: TrainConfig):
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return {"constant": 1.0, "linear": 1.0 - frac,
                "cosine": 0.5 * (1 + math.cos(math.pi * frac))}[cfg.schedule]
    return f


def train(pair: Pair, prompts: pd.DataFrame, out: str | Path, cfg: TrainConfig, *,
          eval_prompts: pd.DataFrame | None = None, resume: bool = False,
          overwrite: bool = False, progress: bool = True, extra_meta: dict | None = None) -> Path:
    """Run OPD of ``pair.student`` toward ``pair.teacher`` on ``prompts``; write run ``out``.

    Args:
        prompts: a validated prompt frame (``load_prompts``).
        eval_prompts: held-out prompts with ``answer`` (and optional ``subset``) for evaluation.
        resume: continue ``out`` from its last checkpoint (same config required).
    """
    if cfg.eval_every and eval_prompts is None:
        raise OpdDiagError("eval_every > 0 needs held-out eval prompts (--eval-prompts FILE)")
    if cfg.capture_top_k > pair.compare_vocab:
        raise OpdDiagError(f"capture_top_k {cfg.capture_top_k} exceeds the vocabulary "
                           f"({pair.compare_vocab} tokens)")
    sampling = SamplingConfig(n_samples=cfg.n_samples, temperature=cfg.temperature,
                              top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                              batch_size=cfg.rollout_batch_size, seed=cfg.seed,
                              raw_prompt=cfg.raw_prompt)
    capture = CaptureConfig(top_k=cfg.capture_top_k, batch_size=cfg.capture_batch_size,
                            chunk_tokens=cfg.chunk_tokens)
    verifier = make_verifier(cfg.checker)
    prompts = render_prompts(pair, prompts, sampling)
    if eval_prompts is not None:
        require_answers(eval_prompts, "eval prompts")
        eval_prompts = render_prompts(pair, eval_prompts, sampling)
    student = pair.student.model
    torch.manual_seed(cfg.seed)
    optimizer = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg))
    config = {**cfg.to_dict(), "n_prompts": len(prompts), "student": pair.student.path,
              "teacher": pair.teacher.path,
              "n_eval_prompts": 0 if eval_prompts is None else len(eval_prompts)}
    meta = {"models": pair.describe(), "seeds": {"train": cfg.seed}, **(extra_meta or {})}
    with open_run(out, "train", config, resume=resume, overwrite=overwrite, extra=meta) as run:
        run.write_shard("prompts", "00000", prompts)
    # From here on the directory holds training progress: reopening it as a resumed run makes
    # open_run mark a failure (e.g. a full disk) as `failed` instead of deleting the directory.
    with open_run(out, "train", config, resume=True) as run:
        start = _restore(run, student, optimizer, scheduler)
        evaluator = _Evaluator(run, pair, eval_prompts, cfg, verifier) if eval_prompts is not None \
            else None
        if evaluator:
            evaluator.baselines()
        bar = tqdm(range(start, cfg.steps), desc="opd", unit="step", disable=not progress,
                   initial=start, total=cfg.steps)
        for step in bar:
            timer = _Timer()
            # 1. sample: the student's own trajectories (seeded per step, prompt and sample)
            rows = batch_rows(step, len(prompts), cfg)
            rollouts = pd.concat([generate_rollouts(pair, prompts, rows[lo: lo + cfg.rollout_batch_size],
                                                    sampling, step=step)
                                  for lo in range(0, len(rows), cfg.rollout_batch_size)],
                                 ignore_index=True)
            _mark_correct(rollouts, prompts, verifier)
            timer.lap("sample")
            # 2. capture: both models at every visited state (the offline states schema)
            kept = rollouts[rollouts.n_tokens > 0]
            parts = [capture_rollouts(pair, prompts, kept.iloc[lo: lo + cfg.capture_batch_size],
                                      capture, cfg.temperature)
                     for lo in range(0, len(kept), cfg.capture_batch_size)]
            states = pa.concat_tables([p for p in parts if p is not None]) if len(kept) else None
            timer.lap("capture")
            # 3. loss: the student's differentiable forward and the objective
            optimizer.zero_grad(set_to_none=True)
            row = {"step": step, "lr": scheduler.get_last_lr()[0]}
            if states is not None:
                by_id = dict(zip(prompts.prompt_id, prompts.input_ids, strict=True))
                loss, _ = opd_loss(student, pair.teacher.model,
                                       [by_id[p] for p in kept.prompt_id], list(kept.completion_ids),
                                       states, cfg, vocab=pair.compare_vocab,
                                       pad_id=pair.tokenizer.pad_token_id,
                                       chunk_tokens=cfg.chunk_tokens)
                loss.backward()
                row["loss"] = float(loss.detach())
            timer.lap("loss")
            # 4. step
            clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
            row["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(student.parameters(), clip))
            optimizer.step()
            scheduler.step()
            timer.lap("optim")
            # 5. log: shards first, the metrics row last (a row implies its shards exist)
            row.update(_scalars(rollouts, states))
            keep_states = states is not None and step % cfg.states_every == 0
            row["states_kept"] = bool(keep_states)
            if evaluator and evaluator.due(step):
                row.update(evaluator.evaluate(step))
                timer.lap("eval")
            run.write_shard("rollouts", f"{step:06d}", rollouts)
            if keep_states:
                run.write_shard("states", f"{step:06d}", states)
            timer.lap("log")
            row.update(timer.as_dict())
            run.append_metrics(row)
            if (cfg.ckpt_every and (step + 1) % cfg.ckpt_every == 0) or step == cfg.steps - 1:
                ckpt.save_checkpoint(run.path, step, student, pair.tokenizer, optimizer, scheduler,
                                     {"next_step": step + 1, "prompts_seen": (step + 1) * cfg.batch_prompts},
                                     keep=cfg.keep_checkpoints)
            bar.set_postfix(loss=row.get("loss"), rkl=row.get("rkl"))
        run.update_meta(steps_done=cfg.steps)
    return Path(out)


def _scalars(rollouts: pd.DataFrame, states: pa.Table | None) -> dict:
    """Batch scalars: lengths, and the overlap probe's per-state metrics averaged over states."""
    out = {"n_rollouts": len(rollouts), "n_tokens": int(rollouts.n_tokens.sum()),
           "response_length": float(rollouts.n_tokens.mean()),
           "clipped_ratio": float((rollouts.stop_reason == "length").mean())}
    if rollouts.correct.notna().any():
        out["train_acc"] = float(rollouts.correct.dropna().astype(float).mean())
    if states is not None:
        per_state = state_metrics(states.to_pandas())
        out.update({name: float(np.nanmean(per_state[name])) for name in _MEANS})
    return out


def _mark_correct(rollouts: pd.DataFrame, prompts: pd.DataFrame, verifier) -> None:
    answers = dict(zip(prompts.prompt_id, prompts.answer, strict=True))
    values = [None if answers[p] is None else bool(verifier.check(c, answers[p]))
              for p, c in zip(rollouts.prompt_id, rollouts.completion, strict=True)]
    rollouts["correct"] = pd.array(values, dtype="boolean")


class _Timer:
    def __init__(self) -> None:
        self.t0 = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[f"time_{name}"] = now - self.last
        self.last = now

    def as_dict(self) -> dict:
        return {**self.laps, "time_step": self.last - self.t0}


class _Evaluator:
    """Student eval every ``eval_every`` steps; teacher and initial student measured once."""

    def __init__(self, run: RunWriter, pair: Pair, prompts: pd.DataFrame, cfg: TrainConfig,
                 verifier) -> None:
        self.run, self.pair, self.prompts, self.cfg, self.verifier = run, pair, prompts, cfg, verifier

    def due(self, step: int) -> bool:
        return bool(self.cfg.eval_every) and ((step + 1) % self.cfg.eval_every == 0
                                              or step == self.cfg.steps - 1)

    def _eval(self, model, key: str) -> dict:
        c = self.cfg
        per_sample, summary = evaluate_model(
            model, self.pair.tokenizer, self.prompts, self.verifier, greedy=c.eval_greedy,
            n_samples=c.eval_n_samples, temperature=c.eval_temperature, top_p=c.eval_top_p,
            max_new_tokens=c.eval_max_new_tokens or c.max_new_tokens,
            batch_size=c.eval_batch_size, seed=c.seed, vocab_limit=self.pair.compare_vocab)
        self.run.write_shard("eval", key, per_sample.assign(model=key))
        return summary

    def baselines(self) -> None:
        """Teacher and step-0 student accuracy, measured once and stored in run.json."""
        for name, model in (("eval_teacher", self.pair.teacher.model),
                            ("eval_initial", self.pair.student.model)):
            if name not in self.run.meta:
                self.run.update_meta(**{name: self._eval(model, name.removeprefix("eval_"))})

    def evaluate(self, step: int) -> dict:
        now = self._eval(self.pair.student.model, f"{step:06d}")
        rec = gap_recovery(now, self.run.meta["eval_initial"], self.run.meta["eval_teacher"])
        return {f"eval/{k}": v for k, v in {**now, **rec}.items()}


def _restore(run: RunWriter, student, optimizer, scheduler) -> int:
    """Load the last checkpoint; drop metrics rows and shards written after it. Returns the next step."""
    found = ckpt.latest_checkpoint(run.path)
    last = ckpt.load_checkpoint(found, student, optimizer, scheduler)["step"] if found else -1
    rows = [r for r in read_jsonl(run.path / "metrics.jsonl") if r["step"] <= last]
    _rewrite_jsonl(run.path / "metrics.jsonl", rows)
    for table in _SHARDED:
        for shard in (run.path / f"{table}.parquet").glob("part-0*.parquet"):
            if int(shard.stem.removeprefix("part-")) > last:
                shard.unlink()
    return last + 1


def _rewrite_jsonl(path: Path, rows: list[dict]) -> None:
    import json

    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
