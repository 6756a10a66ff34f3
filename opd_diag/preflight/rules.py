"""Pre-flight: run the probes on a bounded budget and turn them into GO / CAUTION / NO-GO.

Each *condition* is one row of the verdict table, always present (``not checked`` with the
reason when its evidence is missing): the metric, its value, the rule, the status and — only
when it fails — the recovery:

======================  ===========================================  ==============================
condition               metric                                       recovery when it fails
======================  ===========================================  ==============================
answer checking         answers_extracted_share (checker coverage)   a checker that parses them
thinking compatibility  thinking.compatibility_score (forking pos.)  off-policy cold start
template alignment      thinking.template_top1_agreement             render prompts the teacher's
                                                                     way (not a cold start)
reachability            reachability.grad_share_unreachable          forward KL / JSD, cold start
teacher novelty         novelty.novelty_score (+ 95% CI)             a teacher beyond the
                                                                     student's pipeline
distinct teacher        novelty.relative_distance (--reference)      a teacher from another
                                                                     pipeline
horizon                 horizon.recommended_max_len (tokens)         cap --max-new-tokens
======================  ===========================================  ==============================

(``run_preflight`` appends the ``truncation`` row.) A NaN statistic is CAUTION ("could not
measure X"), never GO. Thresholds live in :class:`Thresholds`, frozen with a ``version`` and
their provenance (``docs/validation.md``); ``verdict.json`` records the values used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

VERDICTS = ("GO", "CAUTION", "NO-GO")
EXIT_CODES = {"GO": 0, "CAUTION": 3, "NO-GO": 4}


NOT_CHECKED = "not checked"
"""Status of a condition whose evidence the run does not have; it does not count."""


@dataclass
class Thresholds:
    """Decision thresholds, frozen as ``version`` (docs/validation.md): change a value, change the
    version, and every held-out pair run before it becomes in-sample for the new version."""

    version: str = "v2.0"
    compat_nogo: float = 0.8
    compat_caution: float = 0.9
    template_nogo: float = 0.5
    template_caution: float = 0.9
    unreachable_nogo: float = 0.17
    unreachable_caution: float = 0.11
    novelty_margin: float = 0.02
    distinct_caution: float = 0.5
    min_extracted: float = 0.5
    low_confidence_ci: float = 0.25
    provenance: str = (
        "v2.0, calibrated on the 7 zoo v1 pairs only (default budget, seed 0; "
        "docs/validation.md, reports/preflight-validation.md); no held-out pair used. "
        "reachability (share of the teacher's corrective signal whose reverse-KL gradient is "
        "< 1e-2 of its forward-KL gradient, on the student's failed rollouts): NO-GO line = "
        "midpoint of the largest value where OPD worked (success 0.046) and the smallest where "
        "it failed with a GO novelty (out-of-reach 0.298); CAUTION line = midpoint of that and "
        "the NO-GO line. compatibility (forking positions): worked pairs >= 0.999, incompatible "
        "0.47; template agreement 0.33 on the misaligned pair; novelty and truncation rules "
        "unchanged from v1; the distinct-teacher line (0.5) is not calibrated (one zoo pair, "
        "reverse, has a same-pipeline reference)")


@dataclass
class Verdict:
    verdict: str
    table: pd.DataFrame
    run: Path
    seconds: float
    effect: str = ""
    confidence: str = ""

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    @property
    def because(self) -> list[str]:
        """The conditions behind a non-GO verdict (its status's rows)."""
        return list(self.table.condition[self.table.status == self.verdict]) \
            if self.verdict != "GO" else []

    def headline(self) -> str:
        line = self.verdict + (f" because: {', '.join(self.because)}" if self.because else "")
        return line + (f"   ({self.confidence})" if self.confidence else "")

    def render(self) -> str:
        lines = [f"VERDICT: {self.headline()}", f"  run: {self.run}, {self.seconds:.0f} s"]
        if self.effect:
            lines.append(f"  expected effect: {self.effect}")
        for _, r in self.table.iterrows():
            val = "n/a" if pd.isna(r.value) else f"{r.value:.3f}"
            lines.append(f"  [{r.status:<11}] {r.condition:<22} {r.metric} = {val}  ({r.rule})")
            if r.status in ("CAUTION", "NO-GO") and r.recovery:
                lines.append(f"                -> {r.recovery}")
        return "\n".join(lines)


def _value(df: pd.DataFrame | None, **match) -> float:
    if df is None or not len(df):
        return np.nan
    sel = df
    for k, v in match.items():
        if k not in sel:
            return np.nan
        sel = sel[sel[k] == v]
    return float(sel.value.iloc[0]) if len(sel) else np.nan


def _key(df: pd.DataFrame | None, **match) -> str:
    if df is None or not len(df) or "key" not in df:
        return ""
    sel = df
    for k, v in match.items():
        sel = sel[sel[k] == v]
    return str(sel.key.iloc[0]) if len(sel) else ""


RECOVERY = {
    "answer checking": "pass a checker that parses these completions (--checker; the pre-flight "
                       "names those that would)",
    "thinking compatibility": "off-policy cold start: SFT the student on filtered teacher rollouts "
                              "(`opd-diag coldstart`), then re-check",
    "template alignment": "render the teacher's prompts with its own template / chat template "
                          "(--teacher-template, a teacher_prompt column, `opd-diag "
                          "select-prompts`); the cause is the template, not the student",
    "reachability": "the teacher's signal sits on corrections outside the student's reach: "
                    "reverse-KL / sampled-token OPD cannot move them; use forward KL / JSD at the "
                    "same states, or a cold start",
    "teacher novelty": "no capability beyond the student at its own states: choose a teacher "
                       "post-trained beyond the student's pipeline (e.g. RL on the target domain), "
                       "or prompts the student does not already solve; if inconclusive, raise "
                       "--budget / --n-frontier",
    "distinct teacher": "the teacher gives the student about the same local targets as the "
                        "reference (same pipeline): choose a teacher trained differently (other "
                        "data or RL), not a bigger sibling",
    "horizon": "the dense reward stops predicting the outcome deep in the response: pass the "
               "recommended --max-new-tokens, or mask later tokens",
}


def decide(thinking: pd.DataFrame, reach: pd.DataFrame, novelty: pd.DataFrame | None,
           horizon: pd.DataFrame, th: Thresholds, max_new_tokens: int, *,
           extraction: dict | None = None) -> pd.DataFrame:
    """The verdict table from probe tables (pure: no models). Every condition is a row."""
    rows = []

    def add(condition, metric, value, status, rule, allow_nan=False, recovery=None):
        if status in ("GO", "NO-GO") and pd.isna(value) and not allow_nan:  # undefined: never GO
            status, rule = "CAUTION", f"could not measure {metric}; {rule}"
        rows.append(dict(condition=condition, metric=metric, value=value, status=status,
                         rule=rule, recovery=recovery or RECOVERY[condition]))

    if extraction:
        e = extraction["share"]
        add("answer checking", "answers_extracted_share", e,
            "GO" if e >= th.min_extracted else "CAUTION",
            f"checker {extraction['checker']!r} extracted an answer from "
            f"{extraction['n_extracted']}/{extraction['n']} student rollouts (stops below "
            f"{th.min_extracted:.0%}); e.g. " + "; ".join(
                f"...{e['completion_end'][-24:]!r} -> {e['extracted']!r}"
                for e in extraction.get("examples", [])[:3]))
    else:
        add("answer checking", "answers_extracted_share", np.nan, NOT_CHECKED,
            "not checked: no answers, or a checker without an extractor (module:function)")
    c = _value(thinking, component="compatibility_score")
    share = _value(thinking, component="forking_share")
    allpos = _value(thinking, component="teacher_topk_mass_covered")
    t = _value(thinking, component="template_top1_agreement")
    template_fails = not np.isnan(t) and t < th.template_caution
    add("thinking compatibility", "compatibility_score", c,
        "NO-GO" if c < th.compat_nogo else "CAUTION" if c < th.compat_caution else "GO",
        f"NO-GO < {th.compat_nogo}, CAUTION < {th.compat_caution}; teacher top-k mass on the "
        f"shared top-k at forking positions ({share:.0%} of positions; all positions: "
        f"{allpos:.3f})",
        # a misaligned template also lowers overlap: fix the cause first, then re-check
        recovery=("the template is misaligned too (see template alignment), which lowers overlap "
                  "by itself: render the prompts the teacher's way first and re-check; a cold "
                  "start is for incompatibility that remains with aligned prompts")
        if template_fails else None)
    if np.isnan(t):
        add("template alignment", "template_top1_agreement", t, NOT_CHECKED,
            "not checked: teacher and student prompts render the same way")
    else:
        add("template alignment", "template_top1_agreement", t,
            "NO-GO" if t < th.template_nogo else "CAUTION" if t < th.template_caution else "GO",
            f"NO-GO < {th.template_nogo}, CAUTION < {th.template_caution} (the teacher's first "
            "tokens under its own rendering vs the run's)")
    reach0 = reach.iloc[0] if len(reach) else pd.Series(dtype=object)
    u = float(reach0.get("grad_share_unreachable", np.nan))
    curve = ", ".join(f"{c[len('grad_share_unreachable@'):]}: {reach0[c]:.2f}"
                      for c in reach0.index if str(c).startswith("grad_share_unreachable@"))
    add("reachability", "grad_share_unreachable", u,
        "NO-GO" if u > th.unreachable_nogo else "CAUTION" if u > th.unreachable_caution else "GO",
        f"NO-GO > {th.unreachable_nogo}, CAUTION > {th.unreachable_caution}: share of the "
        "teacher's corrective signal whose reverse-KL gradient is < "
        f"{reach0.get('grad_ratio', np.nan):g} x its forward-KL gradient, on "
        f"{reach0.get('measured_on', '?')}; by cutoff {curve}")
    n = _value(novelty, metric="novelty_score")
    lo, hi = _value(novelty, metric="novelty_ci_low"), _value(novelty, metric="novelty_ci_high")
    estimand = _key(novelty, metric="novelty_score")
    if novelty is None or estimand == "none":
        add("teacher novelty", "novelty_score", np.nan, "CAUTION",
            "could not measure novelty: needs prompts with answers and a verifier")
    else:
        status = "NO-GO" if hi <= th.novelty_margin else "GO" if lo > 0 else "CAUTION"
        note = ""
        if estimand == "two_phase_settled_as_zero" and status == "NO-GO":
            status, note = "CAUTION", "; settled prompts were not re-sampled (biased to 0)"
        # the exclusive-solve fallback has no interval (lo = hi = the rate): undecidable. A
        # zero-width CI of an estimator that has one (identical models) is a real interval.
        if status != "CAUTION" and (estimand == "teacher_exclusive_solve_rate"
                                    or not (np.isfinite(lo) and np.isfinite(hi))):
            status, note = "CAUTION", (f"; {estimand} has no confidence interval, so it cannot "
                                       "decide (raise --budget for the two-phase estimate)")
        add("teacher novelty", "novelty_score", n, status,
            f"{estimand}: 95% CI [{lo:.3f}, {hi:.3f}]; GO if it excludes 0, NO-GO if its upper "
            f"end is <= {th.novelty_margin}, CAUTION otherwise{note}")
    ref = novelty[novelty.section == "reference"] if novelty is not None and \
        "section" in novelty else pd.DataFrame()
    if len(ref):
        dist = ref[ref.metric == "relative_distance"].set_index("key").value
        corr = ref[ref.metric == "reward_correlation"].set_index("key").value
        name = dist.idxmin() if dist.notna().any() else dist.index[0]
        d = float(dist.get(name, np.nan))
        add("distinct teacher", "relative_distance", d,
            "CAUTION" if d < th.distinct_caution else "GO",
            f"KL(teacher‖{name}) / KL(student‖teacher) at the student's states (reward "
            f"correlation {float(corr.get(name, np.nan)):.2f}); CAUTION < {th.distinct_caution} "
            "(the teacher is closer to the reference than to the student)")
    else:
        add("distinct teacher", "relative_distance", np.nan, NOT_CHECKED,
            "not checked: pass --reference MODEL (e.g. the student's pipeline sibling)")
    h = _value(horizon, metric="recommended_max_len")
    reason = _key(horizon, metric="recommended_max_len")
    if np.isnan(h):
        # "not determined" because the signal does not degrade (or a cap would cut answers off)
        # is a finding: GO; because there was nothing to measure it on: CAUTION
        found = "AUROC" in reason
        add("horizon", "recommended_max_len", h, "GO" if found else "CAUTION",
            reason or "not determined: no horizon evidence", allow_nan=found)
    else:
        add("horizon", "recommended_max_len", h, "CAUTION" if h < max_new_tokens else "GO",
            f"{reason}; CAUTION when below --max-new-tokens={max_new_tokens}")
    return pd.DataFrame(rows)


def overall(table: pd.DataFrame) -> str:
    counted = [s for s in table.status if s in VERDICTS] if len(table) else []
    return max(counted, key=VERDICTS.index) if counted else "CAUTION"


def expected_effect(table: pd.DataFrame, novelty: pd.DataFrame | None) -> str:
    """An expected-effect band where the data supports one, else why it cannot be estimated.

    Reverse-KL OPD can at most recover the reachable part of the teacher's corrective signal;
    the accuracy there is to gain is the frontier gap (novelty). Both are measured, so the band
    is an upper bound on the gain, not a prediction (docs/validation.md)."""
    st = table.set_index("condition")
    n = _value(novelty, metric="novelty_score")
    lo, hi = _value(novelty, metric="novelty_ci_low"), _value(novelty, metric="novelty_ci_high")
    u = st.value.get("reachability", np.nan)
    if np.isnan(n) or np.isnan(u):
        return "cannot be estimated (novelty or reachability not measured)"
    if not lo > 0:
        return (f"cannot be estimated: the teacher's accuracy gap on the student's prompts is not "
                f"shown to be positive (95% CI [{lo:.3f}, {hi:.3f}])")
    reach = 1 - float(u)
    return (f"up to {reach:.0%} of the gap (the reachable share of the teacher's signal); gap to "
            f"recover: {n:+.3f} accuracy (95% CI [{lo:.3f}, {hi:.3f}]), so at most "
            f"{reach * lo:+.3f} to {reach * hi:+.3f}")


def confidence(table: pd.DataFrame, novelty: pd.DataFrame | None, n_prompts: int,
               th: Thresholds) -> str:
    """``"low confidence: raise --budget"`` when the novelty CI is wider than
    ``th.low_confidence_ci`` or fewer than 32 prompts were drawn; else empty."""
    lo, hi = _value(novelty, metric="novelty_ci_low"), _value(novelty, metric="novelty_ci_high")
    wide = not np.isnan(lo) and hi - lo > th.low_confidence_ci
    if wide or n_prompts < 32:
        why = f"novelty CI width {hi - lo:.2f}" if wide else f"{n_prompts} prompts"
        return f"low confidence ({why}): raise --budget"
    return ""
