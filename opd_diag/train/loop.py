"""The OPD loop: sample → capture + loss → step → log, one optimizer step per batch.

Each step the student samples completions for a batch of prompts (``generate_rollouts``); one
forward per model over those rollouts gives both the objective's loss and the capture engine's
states table (``losses.opd_forward``); AdamW takes one step; and the run directory gets the
step's ``rollouts``/``states`` shards (``step`` column, the offline-capture schema) and one
``metrics.jsonl`` row computed by the overlap probe's own ``state_metrics`` — the training
signal and the diagnostics are the same code.

Exactness on resume: sampling seeds depend only on (seed, step, prompt, sample), the data order
only on (seed, epoch), and a checkpoint holds model, optimizer, scheduler and RNG states. On
``resume`` everything written after the last checkpoint is dropped and recomputed, so a run
killed at any moment ends with exactly the rows of an uninterrupted one.

Data parallel (``torchrun --nproc_per_node=N``): each rank takes a contiguous block of the
step's global rollout rows (same per-row seeds, so the same samples), the student is wrapped in
``DistributedDataParallel``, and each rank's loss is divided by the *global* token (or
sequence) count, so the all-reduced gradient is the one-process gradient. Ranks write their own
shards (``part-<step>-r<rank>.parquet``, merged by the loader); rank 0 all-reduces the scalars,
appends ``metrics.jsonl``, evaluates and writes checkpoints.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from ..core.errors import OpdDiagError
from ..core.models import Pair, resolve_dtype
from ..core.runs import RunWriter, read_jsonl
from ..probes.overlap import state_metrics
from ..states import distributed
from ..states.backend import accepts_backend, current_backend
from ..states.capture import _LIST_COLUMNS, states_table
from ..states.collect import generate_rollouts, render_prompts
from ..states.rollout import SamplingConfig
from ..tasks.verify import make_verifier
from . import checkpoint as ckpt
from .config import TrainConfig
from .evaluate import evaluate_model, gap_recovery, require_answers
from .losses import StudentStates, idle_forward, loss_denominator, opd_forward
from .trackers import Trackers, parse_report_to, require_packages

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


def rank_rows(rows: list, ctx: distributed.DistContext) -> list:
    """This rank's contiguous block of a step's global rows (all of them in one process).

    Generation batches start at the block's first row, so when ``rollout_batch_size`` divides
    the rows per rank every row is sampled in the batch it would be in with one process.
    """
    n = len(rows)
    return rows[n * ctx.rank // ctx.world_size: n * (ctx.rank + 1) // ctx.world_size]


def init_distributed(device: str = "cpu") -> distributed.DistContext:
    """Join the ``torchrun`` job, if any. With GPUs the default group is NCCL (DDP's gradient
    all-reduce), created here before :func:`distributed.context` adds its gloo control group."""
    world = distributed._env_int("WORLD_SIZE", 1)
    if world > 1 and device != "cpu" and torch.cuda.is_available():
        import torch.distributed as dist

        if not dist.is_initialized():
            local = distributed._env_int("LOCAL_RANK", 0)
            torch.cuda.set_device(local % torch.cuda.device_count())
            dist.init_process_group("nccl")
    return distributed.context()


def _lr_lambda(cfg: TrainConfig):
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return {"constant": 1.0, "linear": 1.0 - frac,
                "cosine": 0.5 * (1 + math.cos(math.pi * frac))}[cfg.schedule]
    return f


@accepts_backend  # backend= "hf" | "vllm" | an object; vLLM engines get the weights each step
def train(pair: Pair, prompts: pd.DataFrame, out: str | Path, cfg: TrainConfig, *,
          eval_prompts: pd.DataFrame | None = None, resume: bool = False,
          overwrite: bool = False, progress: bool = True, extra_meta: dict | None = None) -> Path:
    """Run OPD of ``pair.student`` toward ``pair.teacher`` on ``prompts``; write run ``out``.

    Under ``torchrun`` every rank calls this with the same arguments (data parallel, see the
    module docstring); ranks started with different configs, prompts or models all stop with
    the same error. On GPUs call :func:`init_distributed` before ``load_pair`` so that
    ``"cuda"`` means each rank's own GPU (``opd-diag train`` does).

    Args:
        prompts: a validated prompt frame (``load_prompts``).
        eval_prompts: held-out prompts with ``answer`` (and optional ``subset``) for evaluation.
        resume: continue ``out`` from its last checkpoint (same config required).
        backend: ``"hf"`` (default), ``"vllm"`` or a backend object for the rollouts; with vLLM
            the student's weights are synced into its engine before every step's sampling.
    """
    if cfg.eval_every and eval_prompts is None:
        raise OpdDiagError("eval_every > 0 needs held-out eval prompts (--eval-prompts FILE)")
    if cfg.capture_top_k > pair.compare_vocab:
        raise OpdDiagError(f"capture_top_k {cfg.capture_top_k} exceeds the vocabulary "
                           f"({pair.compare_vocab} tokens)")
    require_packages(parse_report_to(cfg.report_to))
    cfg = cfg.with_budget(pair.student)  # max_new_tokens None: the student's generation config
    ctx = init_distributed(cfg.device)
    sampling = SamplingConfig(n_samples=cfg.n_samples, temperature=cfg.temperature,
                              top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                              batch_size=cfg.rollout_batch_size, seed=cfg.seed,
                              raw_prompt=cfg.raw_prompt)
    verifier = make_verifier(cfg.checker)
    prompts = render_prompts(pair, prompts, sampling)
    if eval_prompts is not None:
        require_answers(eval_prompts, "eval prompts")
        eval_prompts = render_prompts(pair, eval_prompts, sampling)
    student = pair.student.model
    amp, precision = _mixed_precision(student, cfg)
    if cfg.gradient_checkpointing:
        student.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    torch.manual_seed(cfg.seed)
    optimizer = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg))
    config = {**cfg.to_dict(), "n_prompts": len(prompts), "student": pair.student.path,
              "teacher": pair.teacher.path,
              "n_eval_prompts": 0 if eval_prompts is None else len(eval_prompts)}
    meta = {"models": pair.describe(), "seeds": {"train": cfg.seed}, "precision": precision,
            **(extra_meta or {})}
    if ctx.active:
        distributed.check_same_config(ctx, _fingerprint(config, meta, prompts, eval_prompts),
                                      "train config")
        meta["world_size"] = ctx.world_size
    with distributed.open_run_ranks(ctx, out, "train", config, resume=resume,
                                    overwrite=overwrite, extra=meta) as run:
        if ctx.is_main:
            run.write_shard("prompts", "00000", prompts)
    # From here on the directory holds training progress: reopening it as a resumed run makes
    # open_run mark a failure (e.g. a full disk) as `failed` instead of deleting the directory.
    with distributed.open_run_ranks(ctx, out, "train", config, resume=True) as run:
        start = _restore(run, ctx, student, optimizer, scheduler)
        student_states = _wrap(StudentStates(student), ctx)
        evaluator = _Evaluator(run, pair, eval_prompts, cfg, verifier, amp) \
            if eval_prompts is not None and ctx.is_main else None
        if evaluator:
            evaluator.baselines()
        trackers = Trackers(parse_report_to(cfg.report_to) if ctx.is_main else [], run.path,
                            config)
        bar = tqdm(range(start, cfg.steps), desc="opd", unit="step",
                   disable=not progress or not ctx.is_main, initial=start, total=cfg.steps)
        for step in bar:
            timer = _Timer()
            # 1. sample: the student's own trajectories (seeded per step, prompt and sample)
            rows = rank_rows(batch_rows(step, len(prompts), cfg), ctx)
            current_backend().sync_weights(student)  # vLLM: this step's weights (HF: no-op)
            with amp():
                rollouts = pd.concat([generate_rollouts(pair, prompts,
                                                        rows[lo: lo + cfg.rollout_batch_size],
                                                        sampling, step=step)
                                      for lo in range(0, len(rows), cfg.rollout_batch_size)],
                                     ignore_index=True)
            _mark_correct(rollouts, prompts, verifier)
            timer.lap("sample")
            # 2. capture + loss: one student forward (with grad) and one teacher forward per
            # micro-batch give its states and its share of the loss; backward accumulates
            parts, loss_sum, denominator = _capture_and_backward(
                pair, prompts, rollouts[rollouts.n_tokens > 0], cfg, ctx, student_states,
                optimizer, timer, amp)
            # 3. step (gradients are identical on every rank after DDP's all-reduce)
            clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
            grad_norm = float(torch.nn.utils.clip_grad_norm_(student.parameters(), clip))
            optimizer.step()
            scheduler.step()
            timer.lap("optim")
            # 4. log: shards first, the metrics row last (a row implies its shards exist)
            run.write_shard("rollouts", f"{step:06d}", rollouts)
            kept_ids = _states_sample(rollouts, cfg, step)
            if parts and step % cfg.states_every == 0:
                # scalars (below) use every state; --states-sample F stores a seeded fraction
                run.write_shard("states", f"{step:06d}", pa.concat_tables(
                    [_sampled(states_table(sc, list(mb.rollout_id), list(mb.step),
                                           list(mb.n_tokens)), kept_ids)
                     for sc, mb in parts]))
            sums = distributed.all_reduce_sum(ctx, _batch_sums(rollouts, parts, loss_sum)
                                              + [len(kept_ids)])
            n_sampled = int(sums.pop())
            if not ctx.is_main:
                continue  # rank 0 writes the metrics row and the checkpoint
            row = {"step": step, "lr": scheduler.get_last_lr()[0]}
            if denominator:
                row["loss"] = sums[-1]
            row["grad_norm"] = grad_norm
            row.update(_scalars(sums))
            row["states_kept"] = bool(denominator) and step % cfg.states_every == 0
            if cfg.states_sample < 1:
                row["states_sampled_rollouts"] = n_sampled
            timer.lap("log")
            if evaluator and evaluator.due(step):
                row.update(evaluator.evaluate(step))
                timer.lap("eval")
            row.update(timer.as_dict())
            run.append_metrics(row)
            trackers.log(row)
            if (cfg.ckpt_every and (step + 1) % cfg.ckpt_every == 0) or step == cfg.steps - 1:
                ckpt.save_checkpoint(run.path, step, student, pair.tokenizer, optimizer, scheduler,
                                     {"next_step": step + 1, "prompts_seen": (step + 1) * cfg.batch_prompts},
                                     keep=cfg.keep_checkpoints)
            bar.set_postfix(loss=row.get("loss"), rkl=row.get("rkl"))
        trackers.close()
        run.update_meta(steps_done=cfg.steps)
    return Path(out)


def _capture_and_backward(pair: Pair, prompts: pd.DataFrame, kept: pd.DataFrame, cfg: TrainConfig,
                          ctx: distributed.DistContext, student_states: torch.nn.Module,
                          optimizer, timer: _Timer, amp=contextlib.nullcontext
                          ) -> tuple[list, float, int]:
    """Forward and backward over this rank's non-empty rollouts in micro-batches of
    ``capture_batch_size``; returns ``([(scored, rollouts)], loss share, denominator)``.

    Each micro-batch loss is divided by the step's global token (or rollout) count, so the
    accumulated, all-reduced gradient is the one-process gradient. Under DDP every rank runs
    the same number of backwards (idle passes where it has fewer micro-batches) and only the
    last one all-reduces.
    """
    student, pad_id = pair.student.model, pair.tokenizer.pad_token_id
    micro = [kept.iloc[lo: lo + cfg.capture_batch_size]
             for lo in range(0, len(kept), cfg.capture_batch_size)]
    counts = distributed.all_gather_object(ctx, (int(kept.n_tokens.sum()), len(kept), len(micro)))
    denominator = loss_denominator(cfg, sum(c[0] for c in counts), sum(c[1] for c in counts))
    n_micro = max(c[2] for c in counts) if denominator else 0
    by_id = dict(zip(prompts.prompt_id, prompts.input_ids, strict=True))
    optimizer.zero_grad(set_to_none=True)
    parts, loss_sum = [], 0.0
    for i in range(n_micro):
        last = i == n_micro - 1 or not ctx.active
        with contextlib.nullcontext() if last else student_states.no_sync():
            if i < len(micro):
                mb = micro[i]
                with amp():  # bf16 autocast over the fp32 masters (the heads stay fp32)
                    loss, scored = opd_forward(
                        student_states, student, pair.teacher.model,
                        [by_id[p] for p in mb.prompt_id], list(mb.completion_ids), cfg,
                        vocab=pair.compare_vocab, pad_id=pad_id, denominator=denominator,
                        chunk_tokens=cfg.chunk_tokens)
                parts.append((scored, mb))
                loss_sum += float(loss.detach())
            else:
                with amp():
                    loss = idle_forward(student_states, student, pad_id)
            timer.lap("capture", add=True)
            # DDP averages gradients over ranks; each rank's loss is already its share of the sum
            (loss * ctx.world_size).backward()
            timer.lap("loss", add=True)
    return parts, loss_sum, denominator


def _mixed_precision(student: torch.nn.Module, cfg: TrainConfig):
    """fp32 master weights (and so fp32 AdamW state) with autocast in the compute dtype.

    The compute dtype is the student's loaded dtype when that is bf16/fp16, else ``cfg.dtype``.
    A low-precision student is cast to float32 in place: pure-bf16 AdamW updates at lr 1e-6
    fall below bf16 resolution and the student barely moves. Returns ``(amp, precision)``:
    a context factory for forwards and sampling, and what ``run.json`` records.
    """
    loaded = next(student.parameters()).dtype
    compute = loaded if loaded in (torch.bfloat16, torch.float16) else resolve_dtype(cfg.dtype)
    if compute == torch.float16:
        raise OpdDiagError("float16 training needs loss scaling, which the loop does not do; use "
                           "--dtype bfloat16 (fp32 masters + bf16 autocast) or float32")
    if compute != torch.bfloat16:
        return contextlib.nullcontext, {"master_weights": str(loaded).removeprefix("torch."),
                                        "autocast": None}
    student.float()
    dev = next(student.parameters()).device.type
    return (lambda: torch.autocast(dev, dtype=torch.bfloat16),
            {"master_weights": "float32", "optimizer_state": "float32", "autocast": "bfloat16",
             "lm_heads": "float32", "note": "checkpoints store the fp32 master weights"})


def _states_sample(rollouts: pd.DataFrame, cfg: TrainConfig, step: int) -> set[str]:
    """The rollouts of ``step`` whose state rows are stored: all, or a fraction
    ``states_sample`` chosen by a per-rollout seeded draw (independent of ranks and batching)."""
    ids = list(rollouts.rollout_id)
    if cfg.states_sample >= 1:
        return set(ids)
    u = [np.random.default_rng([cfg.seed, step, int(p), int(s)]).random()
         for p, s in zip(rollouts.prompt_id, rollouts.sample_idx, strict=True)]
    return {r for r, x in zip(ids, u, strict=True) if x < cfg.states_sample}


def _sampled(table: pa.Table, kept_ids: set[str]) -> pa.Table:
    import pyarrow.compute as pc

    return table.filter(pc.is_in(table["rollout_id"], pa.array(sorted(kept_ids), pa.string())))


def _wrap(module: torch.nn.Module, ctx: distributed.DistContext) -> torch.nn.Module:
    """DDP around the student's forward under torchrun; the module itself in one process."""
    if not ctx.active:
        return module
    from torch.nn.parallel import DistributedDataParallel

    dev = next(module.parameters()).device
    # no buffer broadcast: ranks may run different numbers of forwards (eval, idle passes)
    return DistributedDataParallel(module, device_ids=[dev.index] if dev.type == "cuda" else None,
                                   broadcast_buffers=False)


def _fingerprint(config: dict, meta: dict, prompts: pd.DataFrame,
                 eval_prompts: pd.DataFrame | None) -> dict:
    """What must be equal on every rank: config, model files and the rendered prompts."""
    models = {role: {k: v for k, v in m.items() if k != "device"}
              for role, m in meta["models"].items() if isinstance(m, dict)}
    ids = [(int(p), list(map(int, i))) for p, i in zip(prompts.prompt_id, prompts.input_ids,
                                                        strict=True)]
    evals = None if eval_prompts is None else [list(map(int, i)) for i in eval_prompts.input_ids]
    return {"config": config, "models": models, "prompts": ids, "eval_prompts": evals}


_COUNTS = ("n_rollouts", "n_tokens", "n_clipped", "n_correct", "n_checked", "n_states")


def _batch_sums(rollouts: pd.DataFrame, parts: list, loss_sum: float) -> list[float]:
    """This rank's additive batch statistics (fixed order, so ranks can all-reduce them)."""
    correct = rollouts.correct.to_numpy(dtype=np.float64, na_value=np.nan)
    checked = correct[~np.isnan(correct)]
    out = [len(rollouts), int(rollouts.n_tokens.sum()), int((rollouts.stop_reason == "length").sum()),
           float(checked.sum()), len(checked)]
    if parts:
        values = state_metrics(*_state_frame([sc for sc, _ in parts]))[list(_MEANS)]
        values = values.to_numpy(np.float64)
    else:
        values = np.empty((0, len(_MEANS)))
    out.append(len(values))
    for s, n in zip(np.nansum(values, axis=0), (~np.isnan(values)).sum(axis=0), strict=True):
        out += [float(s), int(n)]
    return [*out, loss_sum]


def _state_frame(scored: list[dict[str, np.ndarray]]) -> tuple[pd.DataFrame, dict]:
    """The scalar states columns ``state_metrics`` reads and its top-k arrays, straight from the
    captured arrays (ids are batch-row numbers: the metrics are averaged, never grouped, here)."""
    cat = {name: np.concatenate([sc[name] for sc in scored]) for name in scored[0]}
    cols = {"rollout_id": cat["row"], "step": 0, "t": cat["t"], "T": 0}
    cols.update({name: cat[name] for name in ("logp_s", "logp_t", "H_s", "H_t", "rkl", "fkl")})
    return pd.DataFrame(cols), {name: cat[name] for name in _LIST_COLUMNS}


def _scalars(sums: list[float]) -> dict:
    """Batch scalars from all-reduced sums: lengths, and the overlap probe's per-state metrics
    averaged over states (every state weighs the same, on one rank or many)."""
    c = dict(zip(_COUNTS, sums, strict=False))
    out = {"n_rollouts": int(c["n_rollouts"]), "n_tokens": int(c["n_tokens"]),
           "response_length": c["n_tokens"] / c["n_rollouts"],
           "clipped_ratio": c["n_clipped"] / c["n_rollouts"]}
    if c["n_checked"]:
        out["train_acc"] = c["n_correct"] / c["n_checked"]
    if c["n_states"]:
        means = sums[len(_COUNTS): -1]
        out.update({name: means[2 * i] / means[2 * i + 1] if means[2 * i + 1] else float("nan")
                    for i, name in enumerate(_MEANS)})
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

    def lap(self, name: str, add: bool = False) -> None:
        now = time.perf_counter()
        key = f"time_{name}"
        self.laps[key] = (self.laps.get(key, 0.0) if add else 0.0) + now - self.last
        self.last = now

    def as_dict(self) -> dict:
        return {**self.laps, "time_step": self.last - self.t0}


class _Evaluator:
    """Student eval every ``eval_every`` steps; teacher and initial student measured once."""

    def __init__(self, run: RunWriter, pair: Pair, prompts: pd.DataFrame, cfg: TrainConfig,
                 verifier, amp=contextlib.nullcontext) -> None:
        self.run, self.pair, self.prompts, self.cfg, self.verifier = run, pair, prompts, cfg, verifier
        self.amp = amp

    def due(self, step: int) -> bool:
        return bool(self.cfg.eval_every) and ((step + 1) % self.cfg.eval_every == 0
                                              or step == self.cfg.steps - 1)

    def _eval(self, model, key: str) -> dict:
        with self.amp():
            per_sample, summary = self._evaluate_model(model)
        self.run.write_shard("eval", key, per_sample.assign(model=key))
        return summary

    def _evaluate_model(self, model):
        c = self.cfg
        return evaluate_model(
            model, self.pair.tokenizer, self.prompts, self.verifier, greedy=c.eval_greedy,
            n_samples=c.eval_n_samples, temperature=c.eval_temperature, top_p=c.eval_top_p,
            max_new_tokens=c.eval_max_new_tokens or c.max_new_tokens,
            batch_size=c.eval_batch_size, seed=c.seed, vocab_limit=self.pair.compare_vocab)

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


def _restore(run: RunWriter, ctx: distributed.DistContext, student, optimizer, scheduler) -> int:
    """Load the last checkpoint; drop metrics rows and shards written after it. Returns the next step.

    Every rank loads the checkpoint; rank 0 alone trims the directory (every rank's shards),
    and nobody starts a step before it is done.
    """
    found = ckpt.latest_checkpoint(run.path)
    last = ckpt.load_checkpoint(found, student, optimizer, scheduler)["step"] if found else -1
    if ctx.is_main:
        rows = [r for r in read_jsonl(run.path / "metrics.jsonl") if r["step"] <= last]
        _rewrite_jsonl(run.path / "metrics.jsonl", rows)
        for table in _SHARDED:
            for shard in (run.path / f"{table}.parquet").glob("part-0*.parquet"):
                key = shard.stem.removeprefix("part-").split("-r")[0]  # part-<step>[-r<rank>]
                if int(key) > last:
                    shard.unlink()
    distributed.barrier(ctx)
    return last + 1


def _rewrite_jsonl(path: Path, rows: list[dict]) -> None:
    import json

    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
