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

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

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
