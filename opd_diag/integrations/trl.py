"""``OPDDiagCallback``: the paper's alignment metrics inside a TRL distillation run.

Every ``every`` optimizer steps the callback takes a small batch of student samples, scores every
position with the student and the teacher (:func:`opd_diag.states.capture.score_states`, the same code
as an offline capture), and

* adds ``opd_diag/overlap_ratio``, ``opd_diag/overlap_mass_s``, ``opd_diag/overlap_mass_t``,
  ``opd_diag/eq7_advantage``, ``opd_diag/entropy_gap`` (and ``H_s``, ``H_t``, ``rkl``) to the
  trainer's next ``logs`` dict, so they reach the console, W&B, trackio, ``log_history``;
* writes a run directory (``prompts``/``rollouts``/``states`` shards keyed by step, plus
  ``metrics.jsonl``) that ``opd-diag probe overlap RUN`` reads, with ``step`` = global step.

Which samples (``source``):

* ``"trainer"`` — the trainer's own on-policy samples, token ids exactly as generated.
  ``trl.DistillationTrainer`` keeps its current generation batch in ``_buffered_inputs``
  (prompt/completion ids and masks); we read up to ``n_rows`` of it at ``on_step_end``. Those
  samples came from the weights *before* the step's update and are scored with the weights
  after it: one optimizer step of staleness, negligible at distillation learning rates.
* ``"fresh"`` — the callback samples ``n_samples`` completions per held prompt from the current
  student with opd-diag's seeded sampler (seed depends on (seed, step, prompt, sample)). Needed for
  ``trl.experimental.gkd.GKDTrainer``, which generates inside ``training_step`` and keeps nothing
  (and mixes in off-policy batches with probability ``1 − lmbda``). Fixed prompts also make the
  curves comparable across steps, at the price of extra generation.
* ``"auto"`` (default) — ``trainer`` when the trainer exposes a buffer, otherwise ``fresh``.

Only the main process captures; other ranks do nothing. Log-probs are at the trainer's
``temperature`` (the capture convention: the rollout temperature).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback

from ..core.errors import OpdDiagError
from ..core.runs import open_run
from ..states.capture import score_states, states_table
from ..states.collect import rollout_id
from ..states.rollout import SamplingConfig, eos_token_ids, render_prompt, row_seed, sample_batch

LOGGED = ("overlap_ratio", "overlap_mass_s", "overlap_mass_t", "eq7_advantage", "entropy_gap",
          "H_s", "H_t", "rkl")


def _unwrap(model):
    return getattr(model, "module", model)


class OPDDiagCallback(TrainerCallback):
    """Log OPD alignment metrics every ``every`` steps and write them as a run directory.

    Use :meth:`attach` (it needs the trainer for the teacher, the tokenizer and the buffer)::

        trainer = DistillationTrainer(model=student, teacher_model=teacher, ...)
        OPDDiagCallback.attach(trainer, "runs/opd_diag", every=50)
        trainer.train()

    Args:
        out: run directory to create.
        every: capture every this many optimizer steps (and at step ``every``, not step 0).
        source: ``"auto"``, ``"trainer"`` or ``"fresh"`` (see the module docstring).
        prompts: held prompt texts (user messages) for ``fresh`` sampling.
        n_rows: at most this many trainer samples per capture (``trainer`` source).
        n_samples: completions per held prompt (``fresh`` source).
        max_new_tokens: fresh completion budget (default: the trainer's).
        top_k: top-k size of the captured lists (paper: 16).
        seed: base seed of fresh sampling.
        overwrite: replace ``out`` if it exists.
    """

    def __init__(self, out: str | Path, *, every: int = 10, source: str = "auto",
                 prompts: list[str] | None = None, n_rows: int = 8, n_samples: int = 1,
                 max_new_tokens: int | None = None, top_k: int = 16, seed: int = 0,
                 overwrite: bool = False) -> None:
        if every <= 0 or n_rows <= 0 or n_samples <= 0 or top_k <= 0:
            raise OpdDiagError("every, n_rows, n_samples and top_k must be positive")
        if source not in ("auto", "trainer", "fresh"):
            raise OpdDiagError(f"source must be auto, trainer or fresh, got {source!r}")
        self.out, self.every, self.source, self.prompts = Path(out), every, source, prompts
        self.n_rows, self.n_samples, self.top_k, self.seed = n_rows, n_samples, top_k, seed
        self.max_new_tokens, self.overwrite = max_new_tokens, overwrite
        self.trainer = None
        self._run_cm = self._run = None
        self._pending: dict[str, float] = {}
        self._prompt_ids: dict[tuple[int, ...], int] = {}

    @classmethod
    def attach(cls, trainer, out: str | Path, **kwargs) -> OPDDiagCallback:
        """Create the callback, bind it to ``trainer`` and register it to run before reporters."""
        cb = cls(out, **kwargs)
        cb.trainer = trainer
        if getattr(trainer, "teacher_model", None) is None:
            raise OpdDiagError("OPDDiagCallback needs a trainer with an in-process teacher_model")
        if cb._resolved_source() == "fresh" and not cb.prompts:
            raise OpdDiagError(
                f"{type(trainer).__name__} does not expose its samples: pass prompts=[...] "
                "so the callback can sample the current student itself"
            )
        trainer.add_callback(cb)
        # on_log mutates `logs`; running first lets console/W&B/trackio reporters see our keys.
        handler = trainer.callback_handler.callbacks
        handler.insert(0, handler.pop(handler.index(cb)))
        return cb

    def _resolved_source(self) -> str:
        if self.source != "auto":
            return self.source
        return "trainer" if hasattr(self.trainer, "_buffered_inputs") else "fresh"

    # -- trainer events ------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        config = {"source": self._resolved_source(), "every": self.every, "top_k": self.top_k,
                  "n_rows": self.n_rows, "n_samples": self.n_samples, "seed": self.seed,
                  "temperature": self._temperature(), "trainer": type(self.trainer).__name__}
        self._run_cm = open_run(self.out, "trl_callback", config, overwrite=self.overwrite,
                                extra={"prompts": self.prompts})
        self._run = self._run_cm.__enter__()

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self._run is None or state.global_step % self.every:
            return
        model = _unwrap(model if model is not None else self.trainer.model)
        was_training = model.training
        model.eval()
        try:
            self._pending = self.capture(model, state.global_step)
        finally:
            model.train(was_training)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._pending and logs is not None:
            logs.update(self._pending)
            if state.log_history:  # Trainer.log appended its copy before calling us
                state.log_history[-1].update(self._pending)
            self._pending = {}

    def on_train_end(self, args, state, control, **kwargs):
        if self._run_cm is not None:
            self._run_cm.__exit__(None, None, None)
            self._run_cm = self._run = None

    # -- capture -------------------------------------------------------------------------------

    def _temperature(self) -> float:
        t = float(getattr(self.trainer.args, "temperature", 1.0) or 1.0)
        return t if t > 0 else 1.0

    def _samples(self, model, step: int) -> tuple[list[list[int]], list[list[int]]]:
        if self._resolved_source() == "trainer":
            buf = getattr(self.trainer, "_buffered_inputs", None)
            if buf:
                return self._from_buffer(buf)
            if not self.prompts:
                return [], []
        return self._fresh(model, step)

    def _from_buffer(self, buf) -> tuple[list[list[int]], list[list[int]]]:
        prompts, comps = [], []
        for batch in buf:
            for p, pm, c, cm in zip(batch["prompt_ids"], batch["prompt_mask"],
                                    batch["completion_ids"], batch["completion_mask"]):
                prompts.append(p[pm.bool()].tolist())
                comps.append(c[cm.bool()].tolist())
                if len(prompts) == self.n_rows:
                    return prompts, comps
        return prompts, comps

    def _fresh(self, model, step: int) -> tuple[list[list[int]], list[list[int]]]:
        tok = self.trainer.processing_class
        budget = self.max_new_tokens or getattr(self.trainer.args, "max_completion_length", None) \
            or getattr(self.trainer.args, "max_new_tokens", 64)
        cfg = SamplingConfig(n_samples=self.n_samples, temperature=self._temperature(),
                             max_new_tokens=int(budget), seed=self.seed)
        rendered = [render_prompt(tok, p)[1] for p in self.prompts]
        rows = [(i, s) for i in range(len(rendered)) for s in range(self.n_samples)]
        seeds = [row_seed(self.seed + step, i, s) for i, s in rows]
        out = sample_batch(model, [rendered[i] for i, _ in rows], seeds, cfg,
                           eos_ids=eos_token_ids(model, tok), pad_id=tok.pad_token_id,
                           vocab_limit=len(tok))
        return [rendered[i] for i, _ in rows], [c for c, _ in out]

    @torch.no_grad()
    def capture(self, model, step: int) -> dict[str, float]:
        """Capture one batch at ``step``: write its shards, return the ``opd_diag/*`` log entries."""
        import pandas as pd

        from ..probes.overlap import state_metrics

        prompts, comps = self._samples(model, step)
        keep = [i for i, c in enumerate(comps) if c]
        if not keep:
            return {}
        tok = self.trainer.processing_class
        teacher = _unwrap(self.trainer.teacher_model)
        vocab = min(len(tok), model.get_output_embeddings().weight.shape[0],
                    teacher.get_output_embeddings().weight.shape[0])
        scored = score_states(model, teacher, [prompts[i] for i in keep], [comps[i] for i in keep],
                              top_k=self.top_k, temperature=self._temperature(), vocab=vocab,
                              pad_id=tok.pad_token_id)
        new_prompts, rows, counts = [], [], {}
        for i in keep:
            key = tuple(prompts[i])
            if key not in self._prompt_ids:
                self._prompt_ids[key] = pid = len(self._prompt_ids)
                new_prompts.append({"prompt_id": pid, "prompt": tok.decode(prompts[i]),
                                    "answer": None, "rendered": tok.decode(prompts[i]),
                                    "input_ids": prompts[i], "render": "ids"})
            pid = self._prompt_ids[key]
            n = counts[pid] = counts.get(pid, -1) + 1
            rows.append({"rollout_id": rollout_id(step, pid, n), "prompt_id": pid, "step": step,
                         "sample_idx": n, "completion": tok.decode(comps[i], skip_special_tokens=True),
                         "completion_ids": comps[i], "n_tokens": len(comps[i]),
                         "stop_reason": "unknown", "correct": None})
        rollouts = pd.DataFrame(rows)
        rollouts["correct"] = pd.array([None] * len(rows), dtype="boolean")
        table = states_table(scored, list(rollouts.rollout_id), list(rollouts.step),
                             list(rollouts.n_tokens))
        key = f"{step:08d}"
        if new_prompts:
            self._run.write_shard("prompts", key, pd.DataFrame(new_prompts))
        self._run.write_shard("rollouts", key, rollouts)
        self._run.write_shard("states", key, table)
        per_state = state_metrics(table.to_pandas())
        logs = {f"opd_diag/{m}": float(np.nanmean(per_state[m])) for m in LOGGED}
        self._run.append_metrics({"step": step, "n_rollouts": len(rows),
                                  "n_states": len(per_state), **logs})
        return logs
