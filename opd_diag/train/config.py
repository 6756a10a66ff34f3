"""The OPD loop's configuration: one validated dataclass, presets, and a YAML/JSON overlay.

Resolution order (later wins): dataclass defaults → ``--preset`` → ``--config FILE`` → CLI flags.
The resolved config is stored in ``run.json``; ``--resume`` refuses a different one.

>>> cfg = resolve_config(preset="tiny", overrides={"steps": 2})
>>> cfg.objective, cfg.steps
('topk', 2)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..core.divergences import AGGREGATIONS, TOPK_STRATEGIES, TOPK_WEIGHTINGS
from ..core.errors import OpdDiagError
from .trackers import parse_report_to

OBJECTIVES = ("sampled_token", "topk", "reverse_kl", "forward_kl", "jsd")
SCHEDULES = ("constant", "cosine", "linear")


def _h(text: str, default=None, **kw):
    """A dataclass field with a help string (shown by the CLI and stored in run.json docs)."""
    if "default_factory" in kw:
        return field(metadata={"help": text}, **kw)
    return field(default=default, metadata={"help": text})


@dataclass
class TrainConfig:
    """Everything that decides what the OPD loop computes (and therefore what resume checks)."""

    # objective
    objective: str = _h("sampled_token | topk | reverse_kl | forward_kl | jsd", "topk")
    top_k: int = _h("support size of the top-k objective (≤ capture_top_k); 0 = sampled-token", 16)
    strategy: str = _h(f"top-k support: {' | '.join(TOPK_STRATEGIES)}", "only_stu")
    weighting: str = _h(f"top-k weights: {' | '.join(TOPK_WEIGHTINGS)}", "student_p")
    beta: float = _h("generalized JSD β (jsd objective): 0 = forward KL, 1 = reverse KL", 0.5)
    aggregation: str = _h(f"loss aggregation: {' | '.join(AGGREGATIONS)}", "token-mean")
    # optimisation
    lr: float = _h("AdamW learning rate", 1e-5)
    weight_decay: float = _h("AdamW weight decay", 0.0)
    grad_clip: float = _h("max gradient norm (0 disables clipping)", 1.0)
    schedule: str = _h(f"learning-rate schedule: {' | '.join(SCHEDULES)}", "constant")
    warmup_steps: int = _h("linear warm-up steps", 0)
    steps: int = _h("optimizer steps", 100)
    # rollouts
    batch_prompts: int = _h("prompts per step", 8)
    n_samples: int = _h("completions per prompt", 4)
    temperature: float = _h("sampling temperature (> 0: OPD samples)", 1.0)
    top_p: float = _h("nucleus mass for sampling: must be 1 (top_p < 1 samples from the "
                      "nucleus while capture and the loss use the full distribution: refused)", 1.0)
    max_new_tokens: int | None = _h("completion budget (None: the student's generation_config "
                                    "max_new_tokens; required when it sets none)", None)
    raw_prompt: bool = _h("feed prompts as raw text even with a chat template", False)
    rollout_batch_size: int = _h("rows per generation batch", 64)
    # capture / logging
    capture_top_k: int = _h("k of the captured top-k lists and the overlap metrics", 16)
    capture_batch_size: int = _h("rollouts per capture forward", 64)
    chunk_tokens: int | None = _h("positions per LM-head chunk (None: 32M / vocab)", None)
    states_every: int = _h("keep the states table every n-th step (scalars always)", 1)
    states_sample: float = _h("fraction of each kept step's rollouts whose top-k state rows are "
                              "stored (seeded per rollout); metrics.jsonl scalars stay exact over "
                              "all rollouts", 1.0)
    gradient_checkpointing: bool = _h("recompute the student's decoder activations in backward "
                                      "(HF gradient checkpointing): less memory at long lengths",
                                      False)
    report_to: str = _h("also mirror each metrics row to: none | tensorboard | wandb "
                        "(comma-separated; needs the package installed)", "none")
    # evaluation
    eval_every: int = _h("evaluate every N steps (0 = never; also at step 0 and the end)", 0)
    eval_greedy: bool = _h("greedy accuracy", True)
    eval_n_samples: int = _h("avg@n: samples per eval prompt at eval_temperature (0 = off)", 0)
    eval_temperature: float = _h("temperature of avg@n sampling", 0.7)
    eval_top_p: float = _h("top-p of avg@n sampling", 0.95)
    eval_max_new_tokens: int | None = _h("eval completion budget (None: max_new_tokens)", None)
    eval_batch_size: int = _h("rows per eval generation batch", 128)
    checker: str = _h("answer checker: auto | boxed | hash | answer | regex:PAT | "
                      "task:NAME | module:function", "auto")
    # checkpoints and bookkeeping
    ckpt_every: int = _h("checkpoint every N steps (0 = only at the end)", 50)
    keep_checkpoints: int = _h("checkpoints kept on disk (oldest deleted)", 2)
    seed: int = _h("seed of sampling, the data order and torch", 0)
    device: str = _h("student device: cpu | cuda | cuda:N | auto", "cpu")
    dtype: str = _h("student compute dtype: float32, or bfloat16 / float16 = fp32 master "
                    "weights and optimizer state with autocast forward/backward in that dtype "
                    "(checkpoints keep the fp32 masters)", "float32")
    teacher_device: str = _h("teacher device", "cpu")
    teacher_dtype: str = _h("teacher dtype", "float32")

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise OpdDiagError(f"invalid train config: {msg}")

        need(self.objective in OBJECTIVES, f"objective {self.objective!r} not in {OBJECTIVES}")
        parse_report_to(self.report_to)  # raises with the valid names
        need(isinstance(self.top_k, int) and self.top_k >= 0, f"top_k must be ≥ 0, got {self.top_k}")
        need(self.strategy in TOPK_STRATEGIES, f"unknown strategy {self.strategy!r}; "
             f"use one of {TOPK_STRATEGIES}")
        need(self.weighting in TOPK_WEIGHTINGS, f"unknown weighting {self.weighting!r}; "
             f"use one of {TOPK_WEIGHTINGS}")
        need(self.aggregation in AGGREGATIONS, f"unknown aggregation {self.aggregation!r}")
        need(self.schedule in SCHEDULES, f"unknown schedule {self.schedule!r}")
        need(0.0 <= self.beta <= 1.0, f"beta must lie in [0, 1], got {self.beta}")
        need(self.lr > 0, f"lr must be positive, got {self.lr}")
        need(self.weight_decay >= 0 and self.grad_clip >= 0, "weight_decay, grad_clip must be ≥ 0")
        need(self.temperature > 0, f"temperature must be > 0 for on-policy sampling, got "
             f"{self.temperature} (temperature 0 is greedy decoding: no exploration, and the "
             "captured log-probs would be of a different distribution)")
        need(self.objective != "topk" or self.top_k > 0,
             "objective 'topk' needs top_k ≥ 1 (top_k 0 is objective 'sampled_token')")
        need(self.capture_top_k >= 1, f"capture_top_k must be ≥ 1, got {self.capture_top_k}")
        need(self.top_k <= self.capture_top_k or self.objective != "topk",
             f"top_k {self.top_k} exceeds capture_top_k {self.capture_top_k}")
        need(self.max_new_tokens is None or self.max_new_tokens >= 1,
             f"max_new_tokens must be ≥ 1, got {self.max_new_tokens}")
        need(self.top_p == 1.0, f"top_p {self.top_p} < 1 is refused in train: nucleus sampling "
             "draws from a truncated distribution while the captured states and the loss use the "
             "full one, so the rollouts would be off-policy for the objective; use temperature "
             "to sharpen sampling instead")
        need(0 < self.states_sample <= 1, f"states_sample must lie in (0, 1], got "
             f"{self.states_sample}")
        for name in ("steps", "batch_prompts", "n_samples", "rollout_batch_size",
                     "capture_batch_size", "states_every", "eval_batch_size", "keep_checkpoints"):
            need(getattr(self, name) >= 1, f"{name} must be ≥ 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_every", "ckpt_every", "eval_n_samples"):
            need(getattr(self, name) >= 0, f"{name} must be ≥ 0, got {getattr(self, name)}")
        need(0 < self.top_p <= 1 and 0 < self.eval_top_p <= 1, "top_p must lie in (0, 1]")
        need(self.eval_n_samples == 0 or self.eval_temperature > 0,
             "eval_n_samples > 0 (avg@n) needs eval_temperature > 0")
        need(self.eval_every == 0 or self.eval_greedy or self.eval_n_samples > 0,
             "evaluation needs eval_greedy or eval_n_samples > 0")

    @property
    def needs_teacher_logits(self) -> bool:
        """Full-vocabulary objectives need the teacher's whole distribution in the loss."""
        return self.objective in ("reverse_kl", "forward_kl", "jsd")

    def to_dict(self) -> dict:
        return asdict(self)

    def with_budget(self, model) -> TrainConfig:
        """This config with ``max_new_tokens`` resolved against the student (a ``LoadedModel``):
        given, else its ``generation_config.max_new_tokens``, else an error."""
        from dataclasses import replace

        from ..core.models import resolve_max_new_tokens

        return replace(self, max_new_tokens=resolve_max_new_tokens(self.max_new_tokens, model))


PRESETS: dict[str, dict] = {
    # Tiny random models in tests: seconds per step.
    "tiny": {"steps": 4, "batch_prompts": 2, "n_samples": 2, "max_new_tokens": 8, "lr": 1e-3,
             "ckpt_every": 2, "capture_top_k": 8, "top_k": 8},
    # The model-organism zoo on CPU (opd_diag.zoo OPDHyper: ~1 s per step at batch 64).
    "cpu-zoo": {"objective": "reverse_kl", "lr": 3e-4, "steps": 300, "batch_prompts": 16,
                "n_samples": 4, "max_new_tokens": 144, "temperature": 1.0, "eval_every": 50,
                "eval_greedy": True, "checker": "task:addition", "ckpt_every": 50,
                "states_every": 10, "schedule": "cosine", "warmup_steps": 10},
    # A real model on one GPU (thunlp defaults, scaled to one device). dtype bfloat16 means fp32
    # master weights + AdamW state with bf16 autocast (pure bf16 at lr 1e-6 barely moves).
    "gpu": {"objective": "topk", "top_k": 16, "lr": 1e-6, "batch_prompts": 64, "n_samples": 4,
            "max_new_tokens": 7168, "device": "cuda", "dtype": "bfloat16",
            "teacher_device": "cuda", "teacher_dtype": "bfloat16", "eval_every": 20,
            "ckpt_every": 20, "states_every": 5, "rollout_batch_size": 64,
            "capture_batch_size": 4},
}


def read_config_file(path: str | Path) -> dict:
    """A YAML or JSON mapping of TrainConfig fields."""
    path = Path(path)
    if not path.is_file():
        raise OpdDiagError(f"config file {str(path)!r} does not exist")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - any parse error is bad input
        raise OpdDiagError(f"cannot parse config file {str(path)!r}: {exc}") from None
    if not isinstance(data, dict):
        raise OpdDiagError(f"config file {str(path)!r} must hold a mapping of field: value")
    return data


_CASTS = {"float": float, "int": int, "float | None": float, "int | None": int}


def _coerce(name: str, value):
    """YAML reads ``1e-5`` as a string and JSON ints as floats: cast to the field's type."""
    kind = {f.name: f.type for f in fields(TrainConfig)}[name]
    cast = _CASTS.get(str(kind))
    if cast is None or value is None or isinstance(value, bool):
        return value
    try:
        out = cast(value)
    except (TypeError, ValueError):
        raise OpdDiagError(f"invalid train config: {name} must be {kind}, got {value!r}") from None
    if cast is int and out != float(value):
        raise OpdDiagError(f"invalid train config: {name} must be an integer, got {value!r}")
    return out


def resolve_config(preset: str | None = None, config_file: str | Path | None = None,
                   overrides: dict | None = None) -> TrainConfig:
    """Defaults → preset → file → overrides (``None`` values in overrides are ignored)."""
    values: dict = {}
    if preset is not None:
        if preset not in PRESETS:
            raise OpdDiagError(f"unknown preset {preset!r}; use one of {sorted(PRESETS)}")
        values.update(PRESETS[preset])
    if config_file is not None:
        values.update(read_config_file(config_file))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise OpdDiagError(f"unknown train config fields {unknown}; valid fields: {sorted(known)}")
    try:
        return TrainConfig(**{k: _coerce(k, v) for k, v in values.items()})
    except (TypeError, ValueError) as exc:
        if isinstance(exc, OpdDiagError):
            raise
        raise OpdDiagError(f"invalid train config: {exc}") from None
