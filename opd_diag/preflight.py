"""Pre-flight: run the probes on a bounded budget and turn them into GO / CAUTION / NO-GO.

Each *condition* of the paper (plus our reachability mechanism) is one row of the verdict
table: the metric, its value, the thresholds, the status and — when it fails — the recovery
the paper (or our experiments) recommend:

=========================  ======================================  ===================================
condition                  metric                                  recovery when it fails
=========================  ======================================  ===================================
thinking compatibility     thinking.compatibility_score            off-policy cold start: SFT on
                                                                   filtered teacher rollouts
template alignment         thinking.template_top1_agreement        render prompts the teacher's way
reachability               reachability.rkl_share_unreachable      forward KL / cold start (reverse KL
                                                                   cannot reach those tokens)
teacher novelty            novelty.novelty_score                   a different teacher (post-trained
                                                                   beyond the student's pipeline)
horizon                    horizon.recommended_max_len             cap the response length
=========================  ======================================  ===================================

Thresholds live in :class:`Thresholds` with their provenance; ``run.json`` and the verdict
table record the values used.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import distributed, extra
from .capture import CaptureConfig
from .errors import OpdDiagError
from .models import LoadedModel, Pair
from .pipeline import Verifier, run_capture
from .probes import run_probe
from .rollout import SamplingConfig
from .runs import Run, RunWriter, load_run, write_json

VERDICTS = ("GO", "CAUTION", "NO-GO")
EXIT_CODES = {"GO": 0, "CAUTION": 3, "NO-GO": 4}


@dataclass
class Thresholds:
    """Decision thresholds (NO-GO below/above the first, CAUTION for the second)."""

    compat_nogo: float = 0.8
    compat_caution: float = 0.95
    template_caution: float = 0.9
    unreachable_nogo: float = 0.4
    unreachable_caution: float = 0.25
    novelty_margin: float = 0.02
    auroc_drop: float = 0.05
    provenance: str = (
        "calibrated on the 7 zoo pairs, default budget, seeds 0-2 "
        "(reports/preflight-validation.md): compatible pairs score >= 0.999, the "
        "incompatible-style teacher 0.57-0.58, the misaligned template 0.29-0.33; the share of "
        "KL out of reach is 0.00-0.20 where reverse-KL OPD can work and 0.45-0.95 where it "
        "stalled or collapsed; the novelty CI's lower end is 0.006-0.48 for teachers OPD "
        "learned from, its upper end -0.16 to -0.69 for teachers worse than the student")


@dataclass
class PreflightConfig:
    """Budget of a pre-flight check.

    Attributes:
        n_prompts: prompts drawn (first n) from the prompt set.
        n_samples: student (and teacher) samples per prompt.
        max_new_tokens / temperature / top_k / seed: as in capture.
        depths: prefix fractions for the continuation probe; n_continue samples each.
        max_continuation_rollouts: student rollouts continued.
        n_frontier: second-stage samples per model on each frontier prompt (the prompts whose
            first-stage samples were not all alike): the novelty score's main evidence.
        max_frontier_samples: cap on second-stage samples per model (fewer per prompt when
            most prompts are on the frontier).
    """

    n_prompts: int = 64
    n_samples: int = 4
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_k: int = 16
    seed: int = 0
    depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)
    n_continue: int = 2
    max_continuation_rollouts: int = 16
    n_frontier: int = 16
    max_frontier_samples: int = 512
    batch_size: int = 32
    thresholds: Thresholds = field(default_factory=Thresholds)

    @classmethod
    def budget(cls, name: str = "default", **overrides) -> PreflightConfig:
        """The named budget (:data:`BUDGETS`) with ``overrides``; ``None`` values are ignored."""
        if name not in BUDGETS:
            raise OpdDiagError(f"unknown budget {name!r}; valid budgets: {', '.join(BUDGETS)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        return cls(**{**BUDGETS[name], **given})

    def __post_init__(self) -> None:
        if self.n_prompts <= 0 or self.n_samples <= 0 or self.n_frontier <= 0:
            raise OpdDiagError("preflight budget: n_prompts, n_samples and n_frontier must be "
                               f"positive (got {self.n_prompts}, {self.n_samples}, "
                               f"{self.n_frontier})")
        if any(not 0 <= d < 1 for d in self.depths):
            raise OpdDiagError(f"continuation depths must lie in [0, 1), got {self.depths}")


# Named pre-flight budgets (``--budget``); "default" is PreflightConfig's own defaults.
BUDGETS: dict[str, dict] = {
    "small": dict(n_prompts=16, n_samples=2, max_continuation_rollouts=8, n_continue=2,
                  n_frontier=8, max_frontier_samples=128),
    "default": dict(n_prompts=64, n_samples=4, max_continuation_rollouts=16, n_continue=2,
                    n_frontier=16, max_frontier_samples=512),
    "large": dict(n_prompts=128, n_samples=8, max_continuation_rollouts=64, n_continue=4,
                  n_frontier=32, max_frontier_samples=2048),
}


@dataclass
class Verdict:
    verdict: str
    table: pd.DataFrame
    run: Path
    seconds: float

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def render(self) -> str:
        lines = [f"VERDICT: {self.verdict}   (run: {self.run}, {self.seconds:.0f} s)"]
        for _, r in self.table.iterrows():
            val = "n/a" if pd.isna(r.value) else f"{r.value:.3f}"
            lines.append(f"  [{r.status:<7}] {r.condition:<24} {r.metric} = {val}  ({r.rule})")
            if r.status != "GO" and r.recovery:
                lines.append(f"            -> {r.recovery}")
        return "\n".join(lines)


def _value(df: pd.DataFrame, **match) -> float:
    sel = df
    for k, v in match.items():
        sel = sel[sel[k] == v]
    return float(sel.value.iloc[0]) if len(sel) else np.nan


def decide(thinking: pd.DataFrame, reach: pd.DataFrame, novelty: pd.DataFrame | None,
           horizon: pd.DataFrame, th: Thresholds, max_new_tokens: int) -> pd.DataFrame:
    """The verdict table from probe tables (pure: no models)."""
    rows = []

    def add(condition, metric, value, status, rule, recovery):
        rows.append(dict(condition=condition, metric=metric, value=value, status=status,
                         rule=rule, recovery=recovery))

    c = _value(thinking, component="compatibility_score")
    add("thinking compatibility", "compatibility_score", c,
        "NO-GO" if c < th.compat_nogo else "CAUTION" if c < th.compat_caution else "GO",
        f"NO-GO < {th.compat_nogo}, CAUTION < {th.compat_caution}",
        "off-policy cold start: SFT the student on filtered teacher rollouts "
        "(`opd-diag coldstart`), then re-check")
    t = _value(thinking, component="template_top1_agreement")
    if not np.isnan(t):
        add("template alignment", "template_top1_agreement", t,
            "CAUTION" if t < th.template_caution else "GO", f"CAUTION < {th.template_caution}",
            "render prompts with the teacher's own template / chat template "
            "(`opd-diag select-prompts`)")
    u = float(reach.rkl_share_unreachable.iloc[0])
    add("reachability", "rkl_share_unreachable", u,
        "NO-GO" if u > th.unreachable_nogo else "CAUTION" if u > th.unreachable_caution else "GO",
        f"NO-GO > {th.unreachable_nogo}, CAUTION > {th.unreachable_caution} (share of the "
        "teacher-student KL at disagreements where the student gives the teacher's top-1 "
        f"< {reach.unreachable_p.iloc[0]:g})",
        "the teacher's signal sits on corrections outside the student's reach: reverse-KL / "
        "sampled-token OPD cannot move them; use forward KL / JSD at the same states or a cold "
        "start")
    if novelty is not None:
        n = _value(novelty, metric="novelty_score")
        lo, hi = _value(novelty, metric="novelty_ci_low"), _value(novelty, metric="novelty_ci_high")
        add("teacher novelty", "novelty_score", n,
            "NO-GO" if hi <= th.novelty_margin else "GO" if lo > 0 else "CAUTION",
            f"95% CI [{lo:.3f}, {hi:.3f}]: GO if it excludes 0, NO-GO if its upper end is "
            f"<= {th.novelty_margin} (the teacher is confidently no better), CAUTION otherwise",
            "no capability beyond the student at its own states: choose a teacher post-trained "
            "beyond the student's pipeline (e.g. RL on the target domain), or prompts the "
            "student does not already solve; if inconclusive, raise --budget / --n-frontier")
    else:
        add("teacher novelty", "novelty_score", np.nan, "CAUTION", "needs prompts with answers",
            "give prompts with answers (and a verifier) to measure novelty")
    h = _value(horizon, metric="recommended_max_len")
    au = horizon[(horizon.section == "auroc")].sort_values("key").value.to_numpy() \
        if "section" in horizon else np.array([])
    degrading = len(au) >= 2 and au[-1] < au[0] - th.auroc_drop
    if not np.isnan(h):
        add("horizon", "recommended_max_len", h,
            "CAUTION" if h < max_new_tokens and degrading else "GO",
            f"CAUTION when < max_new_tokens={max_new_tokens} and the AUROC of r̄ falls by more "
            f"than {th.auroc_drop} from the first to the last depth bin (here "
            f"{au[0] if len(au) else np.nan:.2f} -> {au[-1] if len(au) else np.nan:.2f})",
            f"the teacher's advantage stops at ~{h:.0f} tokens and its reward degrades with depth: "
            "supervise densely only up to there (shorter response budget, or mask later tokens)")
    return pd.DataFrame(rows)


def overall(table: pd.DataFrame) -> str:
    return max(table.status, key=VERDICTS.index) if len(table) else "CAUTION"


def run_preflight(
    pair: Pair,
    prompts: pd.DataFrame,
    out: str | Path,
    *,
    config: PreflightConfig | None = None,
    verifier: Verifier | None = None,
    references: dict[str, LoadedModel] | None = None,
    teacher_prompts: list[str] | None = None,
    raw_prompt: bool = False,
    progress: bool = False,
) -> Verdict:
    """Capture, generate what the probes need, run them, decide. Writes a run directory."""
    cfg = config or PreflightConfig()
    t0 = time.perf_counter()
    stages: dict[str, float] = {}  # wall seconds per stage, written to verdict.json

    @contextmanager
    def stage(name: str):
        start = time.perf_counter()
        yield
        stages[name] = round(stages.get(name, 0.0) + time.perf_counter() - start, 3)

    prompts = prompts.head(cfg.n_prompts).reset_index(drop=True)
    if teacher_prompts is not None:
        teacher_prompts = list(teacher_prompts)[: cfg.n_prompts]
    sampling = SamplingConfig(n_samples=cfg.n_samples, temperature=cfg.temperature,
                              max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                              seed=cfg.seed, raw_prompt=raw_prompt)
    capture = CaptureConfig(top_k=cfg.top_k)
    out = Path(out)
    with stage("student_capture"):
        run_capture(pair, prompts, out, sampling=sampling, capture=capture, overwrite=True,
                    progress=progress, verifier=verifier,
                    extra_meta={"kind_detail": "preflight", "preflight": asdict(cfg)})
    has_answers = verifier is not None and prompts["answer"].notna().any()
    if has_answers:  # a capture with the roles swapped: data-parallel like the first one
        t_prompts = prompts if teacher_prompts is None else prompts.assign(prompt=teacher_prompts)
        with stage("teacher_capture"):
            extra.teacher_rollouts(pair, t_prompts, out, sampling, capture, verifier)
    ctx = distributed.context()
    if not ctx.is_main:
        # Under torchrun both captures are data-parallel; the small generations below and the
        # probes run on rank 0 while the other ranks wait, then every rank returns the verdict.
        distributed.barrier(ctx)
        return _read_verdict(out)
    run = load_run(out)
    different_template = teacher_prompts is not None or (
        not raw_prompt and getattr(pair.teacher.tokenizer, "chat_template", None)
        != getattr(pair.student.tokenizer, "chat_template", None))
    if different_template:
        with stage("template_check"):
            extra.template_check(pair, run, teacher_prompts, raw_prompt)
    if has_answers:
        with stage("continuations"):
            extra.continuations(pair, run, depths=cfg.depths, n_continue=cfg.n_continue,
                                max_rollouts=cfg.max_continuation_rollouts, verifier=verifier,
                                sampling=sampling, batch_size=cfg.batch_size)
        with stage("frontier_samples"):
            extra.frontier_samples(pair, run, n_samples=cfg.n_frontier, verifier=verifier,
                                   sampling=sampling, batch_size=cfg.batch_size,
                                   max_total=cfg.max_frontier_samples)
    if references:
        with stage("reference_scores"):
            extra.reference_scores(pair, run, references)
    run = load_run(out)
    with stage("probes"):
        tables = {name: run_probe(name, run) for name in ("overlap", "thinking", "reachability",
                                                           "horizon", "token_level")}
        novelty = run_probe("novelty", run) if has_answers or references else None
    table = decide(tables["thinking"], tables["reachability"], novelty, tables["horizon"],
                   cfg.thresholds, cfg.max_new_tokens)
    verdict = overall(table)
    seconds = time.perf_counter() - t0
    RunWriter(run.path, run.meta).write_probe("verdict", table.assign(verdict=verdict))
    write_json(out / "verdict.json", {"verdict": verdict, "exit_code": EXIT_CODES[verdict],
                                      "seconds": seconds, "stage_seconds": stages,
                                      "thresholds": asdict(cfg.thresholds),
                                      "conditions": table.to_dict(orient="records")})
    if ctx.active:
        distributed.barrier(ctx)
    return Verdict(verdict, table, out, seconds)


def _read_verdict(out: Path) -> Verdict:
    import json

    data = json.loads((out / "verdict.json").read_text())
    return Verdict(data["verdict"], pd.DataFrame(data["conditions"]), out, data["seconds"])


def load_verdict(run: Run) -> pd.DataFrame:
    """The verdict table of a pre-flight run."""
    return run.probe("verdict")
