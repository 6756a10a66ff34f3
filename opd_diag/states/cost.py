"""Cost model: what a capture / pre-flight / training run will do, and how long it will take.

A plan is a list of stages; each stage is a few jobs of two kinds:

* :class:`SampleJob` — ``rows`` completions from one model, ``batch_size`` rows at a time, up to
  ``max_new`` tokens each. Time = batches × (prefill + ``max_new`` × decode step). This is an
  **upper bound** on the tokens sampled: rows that stop at EOS end their batch early only when
  every row of the batch has stopped.
* :class:`ScoreJob` — ``rows`` sequences of ``seq_len`` tokens forwarded through one or two
  models (the capture engine; ``grad`` adds the backward of the OPD loop, ×3 the forward).

Shapes come from the models (or, for a model that is only a config, from a meta-device
instantiation: no weights are allocated): parameter count, layers, KV heads, head size, vocab.
Memory per device = weights + the larger of (sampling KV cache + one step's logits) and (the
capture forward's activations + the LM-head chunk buffers); training adds gradients and AdamW's
two fp32 moments. KV per token = 2 × layers × kv_heads × head_dim × dtype bytes.

Time comes from a short *measured probe* on the actual hardware (:func:`measure`): per sampling
model, one prefill and a few decode steps at the plan's batch size and mean context (prompt +
max_new / 2), through the active sampling backend; and one capture-engine scoring batch of the
plan's shape. Without a probe (``measure=False`` or a config-only model) the plan has the work
and memory but no seconds.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch

from ..core.errors import OpdDiagError

_DTYPE_BYTES = {torch.float32: 4, torch.float16: 2, torch.bfloat16: 2, torch.float64: 8}
_GIB = 1024 ** 3


@dataclass
class ModelShape:
    """What the cost model needs to know about one model."""

    role: str
    n_params: int
    n_layers: int
    n_kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int
    vocab: int
    dtype_bytes: int
    device: str = "cpu"

    @property
    def weights_bytes(self) -> int:
        return self.n_params * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.n_layers * self.n_kv_heads * self.head_dim * self.dtype_bytes

    @classmethod
    def from_model(cls, role: str, model) -> ModelShape:
        p = next(model.parameters())
        return cls.from_config(role, model.config, dtype=p.dtype, device=str(p.device),
                               n_params=sum(x.numel() for x in model.parameters()))

    @classmethod
    def from_config(cls, role: str, config, *, dtype: torch.dtype | str = torch.bfloat16,
                    device: str = "cuda", n_params: int | None = None) -> ModelShape:
        """Shape of a model known only by its config (parameters counted on the meta device)."""
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype, None)
            if not isinstance(dtype, torch.dtype):
                raise OpdDiagError(f"unknown dtype {dtype!r}")
        cfg = getattr(config, "get_text_config", lambda: config)()
        if n_params is None:
            from transformers import AutoModelForCausalLM

            with torch.device("meta"):
                meta = AutoModelForCausalLM.from_config(config)
            n_params = sum(x.numel() for x in meta.parameters())
        heads = int(cfg.num_attention_heads)
        hidden = int(cfg.hidden_size)
        head_dim = getattr(cfg, "head_dim", None) or hidden // heads
        return cls(role=role, n_params=int(n_params), n_layers=int(cfg.num_hidden_layers),
                   n_kv_heads=int(getattr(cfg, "num_key_value_heads", None) or heads),
                   head_dim=int(head_dim), hidden=hidden,
                   intermediate=int(getattr(cfg, "intermediate_size", None) or 4 * hidden),
                   vocab=int(cfg.vocab_size), dtype_bytes=_DTYPE_BYTES.get(dtype, 4),
                   device=device)


@dataclass
class SampleJob:
    role: str
    rows: int
    prompt_len: float
    max_new: int
    batch_size: int

    @property
    def batches(self) -> int:
        return math.ceil(self.rows / self.batch_size) if self.rows else 0

    @property
    def tokens(self) -> int:
        return self.rows * self.max_new


@dataclass
class ScoreJob:
    roles: tuple[str, ...]
    rows: int
    seq_len: float
    completion_len: float
    batch_size: int
    grad: bool = False

    @property
    def tokens(self) -> int:
        return int(round(self.rows * self.seq_len))


@dataclass
class Stage:
    name: str
    sample: list[SampleJob] = field(default_factory=list)
    score: list[ScoreJob] = field(default_factory=list)
    states_rows: int = 0
    repeat: int = 1  # training: the per-step stage runs `steps` times
    seconds: float | None = None
    group: str = ""  # the run's own stage name (verdict.json stage_seconds), default `name`

    def __post_init__(self) -> None:
        self.group = self.group or self.name


def states_row_bytes(top_k: int) -> int:
    """Uncompressed bytes of one states row (ids, 7 scalars, 6 top-k lists)."""
    return 16 + 8 + 4 * 3 + 4 * 7 + 6 * 4 * top_k


@dataclass
class Probe:
    """Measured on the actual hardware: per sampler, prefill tokens/s and one decode step."""

    decode_step_s: dict[str, float]
    prefill_tok_s: dict[str, float]
    score_tok_s: float
    detail: dict = field(default_factory=dict)


@dataclass
class Plan:
    kind: str
    shapes: dict[str, ModelShape]
    stages: list[Stage]
    top_k: int
    chunk_tokens: int
    backend: str = "hf"
    probe: Probe | None = None
    train: bool = False
    notes: list[str] = field(default_factory=list)

    # -- work -----------------------------------------------------------------------------------
    def sampled_tokens(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for st in self.stages:
            for j in st.sample:
                out[j.role] = out.get(j.role, 0) + j.tokens * st.repeat
        return out

    def scored_tokens(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for st in self.stages:
            for j in st.score:
                for r in j.roles:
                    out[r] = out.get(r, 0) + j.tokens * st.repeat
        return out

    def states_bytes(self) -> int:
        return sum(st.states_rows * st.repeat for st in self.stages) * states_row_bytes(self.top_k)

    # -- memory ---------------------------------------------------------------------------------
    def memory(self) -> dict[str, int]:
        """Peak bytes per device (weights + the larger transient; training adds optimizer)."""
        by_dev: dict[str, dict] = {}
        for s in self.shapes.values():
            d = by_dev.setdefault(s.device, {"weights": 0, "sample": 0, "score": 0, "train": 0})
            d["weights"] += s.weights_bytes
        for st in self.stages:
            for j in st.sample:
                s = self.shapes.get(j.role)
                if s is None:
                    continue
                kv = min(j.batch_size, j.rows) * (j.prompt_len + j.max_new) * s.kv_bytes_per_token
                d = by_dev[s.device]
                d["sample"] = max(d["sample"], int(kv + min(j.batch_size, j.rows) * s.vocab * 4))
            for j in st.score:
                for r in j.roles:
                    s = self.shapes.get(r)
                    if s is None:
                        continue
                    tok = min(j.batch_size, j.rows) * j.seq_len
                    act = tok * (s.hidden + s.intermediate) * s.dtype_bytes * 2 + tok * s.hidden * 4
                    if j.grad and r == "student":
                        act += tok * s.hidden * s.n_layers * 16  # kept activations (rough)
                    positions = min(j.batch_size, j.rows) * j.completion_len
                    head = 3 * min(self.chunk_tokens, positions) * s.vocab * 4
                    d = by_dev[s.device]
                    d["score"] = max(d["score"], int(act + head))
        if self.train and "student" in self.shapes:
            s = self.shapes["student"]
            by_dev[s.device]["train"] = s.weights_bytes + 2 * s.n_params * 4  # grads + AdamW
        return {dev: d["weights"] + d["train"] + max(d["sample"], d["score"])
                for dev, d in by_dev.items()}

    # -- time -----------------------------------------------------------------------------------
    def estimate(self) -> None:
        """Fill ``Stage.seconds`` from the probe (no-op without one)."""
        if self.probe is None:
            return
        pr = self.probe
        for st in self.stages:
            sec = 0.0
            for j in st.sample:
                if j.role not in pr.decode_step_s:
                    raise OpdDiagError(f"the probe did not measure the {j.role} sampler")
                prefill = j.rows * j.prompt_len / pr.prefill_tok_s[j.role]
                sec += prefill + j.batches * j.max_new * pr.decode_step_s[j.role]
            for j in st.score:
                factor = (len(j.roles) / 2) * (1 + (2 if j.grad else 0) / len(j.roles))
                sec += j.tokens / pr.score_tok_s * factor
            st.seconds = sec * st.repeat

    def total_seconds(self) -> float | None:
        if any(st.seconds is None for st in self.stages):
            return None
        return sum(st.seconds for st in self.stages)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "backend": self.backend, "top_k": self.top_k,
                "chunk_tokens": self.chunk_tokens,
                "shapes": {r: {**asdict(s), "weights_bytes": s.weights_bytes,
                               "kv_bytes_per_token": s.kv_bytes_per_token}
                           for r, s in self.shapes.items()},
                "stages": [{"name": st.name, "repeat": st.repeat, "seconds": st.seconds,
                            "states_rows": st.states_rows,
                            "sample": [asdict(j) for j in st.sample],
                            "score": [asdict(j) for j in st.score]} for st in self.stages],
                "sampled_tokens": self.sampled_tokens(), "scored_tokens": self.scored_tokens(),
                "states_bytes": self.states_bytes(), "memory_bytes": self.memory(),
                "estimated_seconds": self.total_seconds(),
                "probe": None if self.probe is None else asdict(self.probe),
                "notes": self.notes}

    def render(self) -> str:
        """The plan as a text table (what ``--dry-run`` prints)."""
        lines = [f"plan: {self.kind} (sampling backend: {self.backend}; scoring: HF capture "
                 f"engine, LM-head chunk {self.chunk_tokens} positions)"]
        for s in self.shapes.values():
            lines.append(f"  {s.role:<10} {s.n_params / 1e6:9.1f}M params on {s.device:<7} "
                         f"weights {_fmt_bytes(s.weights_bytes)}, KV {s.kv_bytes_per_token / 1024:.1f}"
                         f" KiB/token, vocab {s.vocab}")
        head = f"  {'stage':<26}{'rollouts':>9}  {'sampled (upper bound)':<40}{'scored':<30}" \
               f"{'states':>11}{'est. s':>10}"
        lines += [head, "  " + "-" * (len(head) - 2)]
        for st in self.stages:
            rows = sum(j.rows for j in st.sample) or max((j.rows for j in st.score), default=0)
            samp = ", ".join(f"{j.role} {_fmt_n(j.tokens * st.repeat)}" for j in st.sample) or "-"
            score = "+".join(sorted({r for j in st.score for r in j.roles}))
            ntok = sum(j.tokens for j in st.score) * st.repeat
            scored = f"{score} {_fmt_n(ntok)}" if st.score else "-"
            sec = "?" if st.seconds is None else f"{st.seconds:.1f}"
            rep = f" x{st.repeat}" if st.repeat > 1 else ""
            states = st.states_rows * st.repeat * states_row_bytes(self.top_k)
            lines.append(f"  {(st.name + rep):<26}{rows * st.repeat:>9}  {samp:<40}{scored:<30}"
                         f"{_fmt_bytes(states) if states else '-':>11}{sec:>10}")
        mem = ", ".join(f"{dev} {_fmt_bytes(b)}" for dev, b in self.memory().items())
        lines.append(f"  peak memory per device (estimate): {mem}")
        lines.append(f"  states written: {_fmt_bytes(self.states_bytes())} (uncompressed, upper "
                     "bound)")
        total = self.total_seconds()
        if total is None:
            lines.append("  estimated time: not measured (no probe: config-only model or "
                         "--dry-run without models)")
        else:
            lines.append(f"  estimated time: {_fmt_s(total)} (upper bound: every rollout "
                         "runs to max_new_tokens; from a measured probe on this hardware)")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _fmt_n(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit} tok"
    return f"{int(n)} tok"


def _fmt_bytes(b: float) -> str:
    if b >= _GIB:
        return f"{b / _GIB:.1f} GiB"
    if b >= 1024 ** 2:
        return f"{b / 1024 ** 2:.1f} MiB"
    return f"{b / 1024:.1f} KiB"


def _fmt_s(s: float) -> str:
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    if s >= 120:
        return f"{s / 60:.1f} min"
    return f"{s:.1f} s"


# ---------------------------------------------------------------------------------------------
# Work of the three run kinds
# ---------------------------------------------------------------------------------------------


def chunk_for(vocab: int, chunk_tokens: int | None) -> int:
    from .capture import _CHUNK_ELEMENTS

    return chunk_tokens or max(1, _CHUNK_ELEMENTS // vocab)


def capture_stages(n_rows: int, prompt_len: float, max_new: int, batch_size: int,
                   capture_batch: int, sampler: str = "student", name: str = "capture"
                   ) -> list[Stage]:
    """A capture: ``n_rows`` rollouts sampled by ``sampler``, scored by both models."""
    return [Stage(f"{name}:sample", sample=[SampleJob(sampler, n_rows, prompt_len, max_new,
                                                      batch_size)], group=name),
            Stage(f"{name}:score", score=[ScoreJob(("student", "teacher"), n_rows,
                                                   prompt_len + max_new, max_new, capture_batch)],
                  states_rows=n_rows * max_new, group=name)]


def preflight_stages(*, n_prompts: int, n_samples: int, prompt_len: float, max_new: int,
                     batch_size: int, n_depths: int, n_continue: int, max_continuation: int,
                     n_frontier: int, max_frontier: int, has_answers: bool, n_references: int,
                     template_check: bool, capture_batch: int = 8) -> list[Stage]:
    """The stages of :func:`opd_diag.preflight.run_preflight` (upper bounds where the run adapts:
    every prompt counted as a frontier prompt, every rollout at max_new_tokens)."""
    rows = n_prompts * n_samples
    st = capture_stages(rows, prompt_len, max_new, batch_size, capture_batch, "student",
                        "student_capture")
    if has_answers:
        st += capture_stages(rows, prompt_len, max_new, batch_size, capture_batch, "teacher",
                             "teacher_capture")
    if template_check:
        n = min(32, rows)
        st.append(Stage("template_check", score=[ScoreJob(("teacher",), 2 * n, prompt_len + 4,
                                                          4, 1)]))
    if has_answers:
        n_c = min(max_continuation, rows) * n_depths * n_continue
        ctx = prompt_len + max_new * 0.375  # mean prefix over depths 0, .25, .5, .75
        st.append(Stage("continuations", sample=[SampleJob(r, n_c, ctx, max_new, batch_size)
                                                 for r in ("teacher", "student")]))
        per = max(2, min(n_frontier, max_frontier // max(n_prompts, 1)))
        n_f = n_prompts * per
        st.append(Stage("frontier_samples", sample=[SampleJob(r, n_f, prompt_len, max_new,
                                                              batch_size)
                                                    for r in ("teacher", "student")]))
    if n_references:
        n = min(64, rows) * n_references
        st.append(Stage("reference_scores", score=[ScoreJob(("teacher", "reference"), n,
                                                            prompt_len + max_new, max_new, 8)]))
    return st


def train_stages(*, steps: int, batch_prompts: int, n_samples: int, prompt_len: float,
                 max_new: int, rollout_batch: int, capture_batch: int, states_every: int
                 ) -> list[Stage]:
    rows = batch_prompts * n_samples
    kept = math.ceil(steps / states_every) / steps
    return [Stage("sample", sample=[SampleJob("student", rows, prompt_len, max_new,
                                              rollout_batch)], repeat=steps),
            Stage("capture+backward", score=[ScoreJob(("student", "teacher"), rows,
                                                      prompt_len + max_new, max_new,
                                                      capture_batch, grad=True)],
                  states_rows=int(rows * max_new * kept), repeat=steps)]


# ---------------------------------------------------------------------------------------------
# The measured probe
# ---------------------------------------------------------------------------------------------


def _probe_ids(n: int, length: int, vocab: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(1234)
    lo = min(4, vocab - 1)
    return torch.randint(lo, vocab, (n, max(1, int(length))), generator=g).tolist()


def measure(models: dict[str, object], stages: list[Stage], *, vocab: int, pad_id: int,
            top_k: int, chunk_tokens: int | None = None, decode_steps: int = 4) -> Probe:
    """Time a few decode steps per sampling model and one capture scoring batch, at the plan's
    batch size and mean context length, on the models' own devices.

    ``models``: role -> HF model (``student`` and ``teacher``; others optional). Sampling goes
    through the active backend (:func:`opd_diag.states.backend.current_backend`).
    """
    from .backend import current_backend
    from .capture import score_states
    from .rollout import SamplingConfig

    backend = current_backend()
    jobs: dict[str, SampleJob] = {}
    for st in stages:
        for j in st.sample:
            if j.role not in jobs or j.rows > jobs[j.role].rows:
                jobs[j.role] = j
    step_s, prefill, detail = {}, {}, {}
    for role, j in jobs.items():
        model = models[role]
        B = max(1, min(j.batch_size, j.rows))
        ctx = int(j.prompt_len + j.max_new / 2)
        ids = _probe_ids(B, ctx, vocab)

        def run(n_new: int, ids=ids, model=model) -> float:
            cfg = SamplingConfig(n_samples=1, temperature=1.0, max_new_tokens=n_new,
                                 batch_size=len(ids))
            t0 = time.perf_counter()
            backend.sample(model, ids, list(range(len(ids))), cfg, eos_ids=[], pad_id=pad_id,
                           vocab_limit=vocab)
            return time.perf_counter() - t0

        run(1)  # warm-up (allocator, kernels, lazy engines)
        t1 = min(run(1) for _ in range(3))  # best of 3: the machine may be shared
        tk = min(run(1 + decode_steps) for _ in range(3))
        step = max((tk - t1) / decode_steps, 1e-6)
        step_s[role] = step
        prefill[role] = B * ctx / max(t1 - step, 1e-6)
        detail[role] = {"batch": B, "context": ctx, "prefill_s": t1 - step, "decode_step_s": step}
    score_jobs = [j for st in stages for j in st.score if len(j.roles) == 2]
    if not score_jobs:
        raise OpdDiagError("nothing to score in this plan")
    j = score_jobs[0]
    B = max(1, min(j.batch_size, j.rows))
    comp_len = max(1, int(j.completion_len / 2))
    prompt_len = max(1, int(j.seq_len - j.completion_len))
    p_ids, c_ids = _probe_ids(B, prompt_len, vocab), _probe_ids(B, comp_len, vocab)
    args = dict(top_k=top_k, vocab=vocab, pad_id=pad_id, chunk_tokens=chunk_tokens)
    score_states(models["student"], models["teacher"], p_ids, c_ids, **args)  # warm-up
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        score_states(models["student"], models["teacher"], p_ids, c_ids, **args)
        best = min(best, time.perf_counter() - t0)
    tok = B * (prompt_len + comp_len)
    detail["score"] = {"batch": B, "tokens": tok, "seconds": best}
    return Probe(step_s, prefill, tok / best, detail)


# ---------------------------------------------------------------------------------------------
# Plans from loaded models
# ---------------------------------------------------------------------------------------------


def pair_shapes(pair, references: dict | None = None) -> dict[str, ModelShape]:
    shapes = {"student": ModelShape.from_model("student", pair.student.model),
              "teacher": ModelShape.from_model("teacher", pair.teacher.model)}
    for ref in (references or {}).values():  # one reference shape stands for all of them
        shapes["reference"] = ModelShape.from_model("reference", ref.model)
        break
    return shapes


def mean_prompt_len(rendered) -> float:
    return float(sum(len(i) for i in rendered.input_ids) / max(len(rendered), 1))


def finish_plan(plan: Plan, pair, *, measure_probe: bool = True,
                models: dict | None = None) -> Plan:
    """Run the probe on the pair's models (unless ``measure_probe`` is false) and estimate."""
    if plan.backend == "hf-compile":
        plan.notes.append("hf-compile: each sampling model also pays a one-time torch.compile of "
                          "the decode (about a minute on a small CPU), outside this estimate; the "
                          "probe's decode steps are timed after it")
    if measure_probe:
        mods = {"student": pair.student.model, "teacher": pair.teacher.model, **(models or {})}
        plan.probe = measure(mods, plan.stages, vocab=pair.compare_vocab,
                             pad_id=pair.tokenizer.pad_token_id, top_k=plan.top_k,
                             chunk_tokens=plan.chunk_tokens)
        plan.estimate()
    return plan


def plan_capture(pair, prompts, sampling, capture, *, measure_probe: bool = True) -> Plan:
    """The plan of :func:`opd_diag.states.collect.run_capture` with these arguments."""
    from .backend import current_backend
    from .collect import render_prompts

    rendered = render_prompts(pair, prompts, sampling)
    stages = capture_stages(len(rendered) * sampling.n_samples, mean_prompt_len(rendered),
                            sampling.max_new_tokens, sampling.batch_size, capture.batch_size)
    plan = Plan("capture", pair_shapes(pair), stages, capture.top_k,
                chunk_for(pair.compare_vocab, capture.chunk_tokens),
                backend=current_backend().name)
    return finish_plan(plan, pair, measure_probe=measure_probe)


def plan_train(pair, prompts, cfg, *, measure_probe: bool = True) -> Plan:
    """The plan of :func:`opd_diag.train.loop.train` with a ``TrainConfig`` (evaluation and
    checkpoint writes are not counted)."""
    from .backend import current_backend
    from .collect import render_prompts
    from .rollout import SamplingConfig

    if cfg.max_new_tokens is None:  # the student's generation_config budget (or an error)
        cfg = cfg.with_budget(pair.student)
    sampling = SamplingConfig(n_samples=cfg.n_samples, max_new_tokens=cfg.max_new_tokens,
                              raw_prompt=cfg.raw_prompt)
    rendered = render_prompts(pair, prompts, sampling)
    stages = train_stages(steps=cfg.steps, batch_prompts=cfg.batch_prompts,
                          n_samples=cfg.n_samples, prompt_len=mean_prompt_len(rendered),
                          max_new=cfg.max_new_tokens, rollout_batch=cfg.rollout_batch_size,
                          capture_batch=cfg.capture_batch_size, states_every=cfg.states_every)
    plan = Plan("train", pair_shapes(pair), stages, cfg.capture_top_k,
                chunk_for(pair.compare_vocab, cfg.chunk_tokens), backend=current_backend().name,
                train=True)
    if cfg.eval_every:
        plan.notes.append("evaluation (--eval-every) is not included in the estimate")
    return finish_plan(plan, pair, measure_probe=measure_probe)


def compare(plan: Plan, stage_seconds: dict[str, float]) -> str:
    """Estimated vs measured seconds per stage (``stage_seconds`` as in verdict.json)."""
    est: dict[str, float] = {}
    for st in plan.stages:
        if st.seconds is not None:
            est[st.group] = est.get(st.group, 0.0) + st.seconds
    lines = [f"  {'stage':<26}{'estimated s':>12}{'measured s':>12}"]
    for name in list(dict.fromkeys([*est, *stage_seconds])):
        e, m = est.get(name), stage_seconds.get(name)
        lines.append(f"  {name:<26}{'-' if e is None else f'{e:.1f}':>12}"
                     f"{'-' if m is None else f'{m:.1f}':>12}")
    total_e = plan.total_seconds()
    total_m = sum(stage_seconds.values())
    lines.append(f"  {'total':<26}{'-' if total_e is None else f'{total_e:.1f}':>12}"
                 f"{total_m:>12.1f}")
    return "\n".join(lines)
