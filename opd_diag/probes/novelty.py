"""Teacher novelty: does the teacher know something, on the student's own states, that the
student does not?

Three views (each needs a verifiable task: prompts with answers and a verifier):

* (a) **exclusive solves** — prompts the teacher solves (pass@n of its own samples) that the
  student fails at pass@n, and the reverse;
* (b) **continuation advantage** — student rollouts truncated at several depths, continued by the
  teacher and by the student; accuracy difference with a bootstrap CI over rollouts;
* (c) **distance to reference models** — on the student's states, KL(teacher ‖ reference) next to
  KL(student ‖ teacher), and the correlation of their per-token rewards. Two teachers that give
  the student the same local targets are the same teacher to OPD (the paper's reverse-
  distillation finding), whatever their benchmark scores.

The **novelty score** is the teacher-minus-student accuracy from the prompt, estimated in two
phases (the budget goes where the answer is uncertain): the first stage is the student's
rollouts and the teacher's own rollouts (a few per prompt); prompts where all of them had the
same outcome are *settled*; every other prompt — the student's frontier — gets fresh samples
from both models (``frontier.parquet``) and its gap is measured on those alone. A settled prompt
is not gap 0 (4+4 samples of a teacher at 10% and a student at 2% leave ~60% of prompts "settled"
at all-wrong although the true gap there is 0.08), so a simple random share of the settled
prompts is re-sampled too (:func:`second_stage_prompts`) and weighted by the inverse of its
inclusion probability (Horvitz–Thompson): the score is unbiased for the mean gap over all prompts
(``tests/test_probes.py`` simulates it). 95% bootstrap CI over prompts (the unit that was
sampled). Fallback estimands, used only without a second stage, carry their own names
(``novelty_estimand``): ``continuation_advantage_depth0`` (failure-selected continuations), then
``teacher_exclusive_solve_rate``; a run with no estimate gives NaN, which the verdict reads as
"could not measure", never as GO.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ..core.errors import OpdDiagError
from ..core.runs import Run
from .registry import register_probe

SCORE_RULE = ("novelty = mean over prompts of teacher-minus-student accuracy from the prompt, "
              "from fresh second-stage samples of both models on every frontier prompt and on a "
              "random share of the settled ones (weighted by 1 / inclusion probability; 95% "
              "bootstrap CI over prompts); without a second stage, the named fallbacks "
              "continuation_advantage_depth0, then teacher_exclusive_solve_rate")

SETTLED_SHARE = 0.25
"""Share of the settled prompts re-sampled in the second stage (at least ``MIN_SETTLED``)."""
MIN_SETTLED = 4


def bootstrap_mean_ci(x: np.ndarray, seed: int = 0, n_resamples: int = 2000) -> tuple[float, float]:
    """95% percentile-bootstrap CI of the mean (scipy); degenerate samples give (mean, mean)."""
    x = np.asarray(x, float)
    if len(x) < 2 or np.all(x == x[0]):
        m = float(x.mean()) if len(x) else np.nan
        return m, m
    res = stats.bootstrap((x,), np.mean, n_resamples=n_resamples, method="percentile",
                          random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def continuation_advantage(cont: pd.DataFrame, key: str = "depth") -> pd.DataFrame:
    """Per depth: teacher and student continuation accuracy, advantage and its bootstrap CI."""
    rows = []
    for depth, g in cont.groupby(key, sort=True):
        per = g.groupby(["rollout_id", "continuer"]).correct.mean().unstack("continuer")
        diff = (per["teacher"] - per["student"]).dropna().to_numpy()
        lo, hi = bootstrap_mean_ci(diff)
        rows.append({key: depth, "acc_teacher": float(per["teacher"].mean()),
                     "acc_student": float(per["student"].mean()),
                     "advantage": float(diff.mean()), "ci_low": lo, "ci_high": hi,
                     "n_rollouts": len(diff), "mean_prefix_len": float(g.prefix_len.mean())})
    return pd.DataFrame(rows)


def exclusive_solves(student_rollouts: pd.DataFrame, teacher_rollouts: pd.DataFrame) -> dict:
    """pass@n per prompt for both models and the exclusive-solve rates."""
    s = student_rollouts.dropna(subset=["correct"]).groupby("prompt_id").correct.any()
    t = teacher_rollouts.dropna(subset=["correct"]).groupby("prompt_id").correct.any()
    both = pd.concat([s.rename("s"), t.rename("t")], axis=1).dropna().astype(bool)
    if len(both) == 0:
        return {}
    return {
        "student_pass_at_n": float(both.s.mean()), "teacher_pass_at_n": float(both.t.mean()),
        "teacher_exclusive_rate": float((both.t & ~both.s).mean()),
        "student_exclusive_rate": float((both.s & ~both.t).mean()),
        "student_accuracy": float(student_rollouts.correct.dropna().astype(float).mean()),
        "teacher_accuracy": float(teacher_rollouts.correct.dropna().astype(float).mean()),
        "n_prompts": len(both),
    }


def first_stage_outcomes(run: Run) -> tuple[pd.DataFrame, bool]:
    """First-stage outcomes by prompt: ``(table, teacher_same_rendering)``.

    The table has one row per prompt with an answer: ``n_student``, ``acc_student`` (the
    student's offline rollouts) and, when the run holds the teacher's own rollouts
    (``aux/teacher``), ``n_teacher`` and ``acc_teacher``. ``teacher_same_rendering`` says
    whether those teacher rollouts saw the prompts exactly as the run renders them (they do not
    when the teacher was given its own template).
    """
    prompts = run.prompts.set_index("prompt_id")
    answered = prompts.index[prompts["answer"].notna()]
    roll = run.rollouts[run.rollouts.step == run.rollouts.step.min()]
    roll = roll[roll.prompt_id.isin(answered)].dropna(subset=["correct"])
    out = roll.groupby("prompt_id").correct.agg(n_student="size", acc_student="mean")
    same = False
    if run.has_aux("teacher"):
        aux = run.aux("teacher")
        t = aux.rollouts.dropna(subset=["correct"])
        t = t[t.prompt_id.isin(answered)].groupby("prompt_id").correct.agg(
            n_teacher="size", acc_teacher="mean")
        out = out.join(t, how="left")
        theirs = aux.prompts.set_index("prompt_id").input_ids.map(tuple)
        ours = prompts.input_ids.map(tuple)
        same = bool(theirs.reindex(ours.index).equals(ours))
    return out.reset_index(), same


def frontier_prompts(first: pd.DataFrame, teacher_same_rendering: bool) -> list[int]:
    """Prompts where a second stage can change the estimate of teacher-minus-student accuracy.

    A prompt is *settled* when every first-stage sample of both models had the same outcome (all
    correct, or all wrong) under the run's rendering: its accuracy gap is then taken as 0. Every
    other prompt is on the frontier. Without teacher rollouts rendered the run's way, only the
    student's samples are known, so every prompt is on the frontier.
    """
    if not teacher_same_rendering or "acc_teacher" not in first:
        return first.prompt_id.astype(int).tolist()
    s, t = first.acc_student, first.acc_teacher
    settled = ((s == 1) & (t == 1)) | ((s == 0) & (t == 0))
    return first.prompt_id[~settled].astype(int).tolist()


def settled_mask(first: pd.DataFrame, teacher_same_rendering: bool = True) -> pd.Series:
    """True for prompts whose first-stage samples of both models all had the same outcome."""
    if not teacher_same_rendering or "acc_teacher" not in first:
        return pd.Series(False, index=first.index)
    s, t = first.acc_student, first.acc_teacher
    return ((s == 1) & (t == 1)) | ((s == 0) & (t == 0))


def second_stage_prompts(first: pd.DataFrame, teacher_same_rendering: bool, *,
                         settled_share: float = SETTLED_SHARE, min_settled: int = MIN_SETTLED,
                         seed: int = 0) -> list[int]:
    """Prompt ids for the second stage: every frontier prompt, plus a simple random sample of
    ``max(min_settled, ceil(settled_share · S))`` of the ``S`` settled prompts (all of them when
    fewer). :func:`frontier_gap` recovers the inclusion probability ``m / S`` from which settled
    prompts appear in the second stage, so the estimate needs no extra bookkeeping."""
    if not 0 <= settled_share <= 1:
        raise OpdDiagError(f"settled_share must lie in [0, 1], got {settled_share}")
    front = frontier_prompts(first, teacher_same_rendering)
    settled = first.prompt_id[settled_mask(first, teacher_same_rendering)].astype(int).to_numpy()
    m = min(len(settled), max(min_settled, int(np.ceil(settled_share * len(settled))))) \
        if settled_share > 0 else 0
    pick = np.random.default_rng(seed).choice(settled, size=m, replace=False) if m else []
    return sorted(front + [int(p) for p in pick])


def frontier_gap(first: pd.DataFrame, frontier: pd.DataFrame, seed: int = 0) -> dict:
    """Two-phase teacher-minus-student accuracy gap (see the module docstring).

    ``first``: one row per prompt (``prompt_id``; with ``acc_student`` / ``acc_teacher`` when
    known, see :func:`first_stage_outcomes`); ``frontier``: the second stage, one row per
    (``prompt_id``, ``model`` in {teacher, student}, ``sample``) with ``correct``. Frontier
    prompts (and, without first-stage accuracies, every prompt in ``frontier``) weigh 1; the
    ``m`` re-sampled of the ``S`` settled prompts weigh ``S / m`` (Horvitz–Thompson), the other
    settled prompts 0. With no settled prompt re-sampled (``m = 0 < S``) the settled prompts
    count as gap 0 — biased towards 0 — and ``settled_resampled`` is 0 so the caller can say so.
    """
    acc = (frontier.groupby(["prompt_id", "model"]).correct.mean().unstack("model")
           if len(frontier) else pd.DataFrame(columns=["teacher", "student"]))
    missing = {"teacher", "student"} - set(acc.columns)
    if missing:
        raise OpdDiagError(f"frontier samples lack the {sorted(missing)} model rows; re-run "
                           "`opd-diag preflight`")
    pid = first.prompt_id.to_numpy()
    settled = settled_mask(first).to_numpy() if {"acc_student", "acc_teacher"} <= set(first) \
        else np.zeros(len(first), bool)
    measured = pd.Series(pid).isin(acc.index).to_numpy()
    n_settled, m = int(settled.sum()), int((settled & measured).sum())
    weight = np.where(settled, n_settled / m if m else 0.0, 1.0)
    g = (acc["teacher"] - acc["student"]).astype(float).reindex(pid).fillna(0.0).to_numpy()
    contrib = g * weight
    lo, hi = bootstrap_mean_ci(contrib, seed=seed)
    on = acc.reindex(pid[measured & ~settled]).dropna()
    per_model = frontier.groupby("model").size() if len(frontier) else pd.Series(dtype=int)
    n_meas = int(measured.sum())
    resampled = acc.reindex(pid[measured & settled]).dropna()
    return {"score": float(contrib.mean()) if len(contrib) else np.nan, "ci_low": lo,
            "ci_high": hi, "n_prompts": len(pid), "n_frontier_prompts": len(on),
            "n_settled_prompts": n_settled, "settled_resampled": m,
            "samples_per_prompt": float(per_model.max() / n_meas) if n_meas else 0.0,
            "acc_teacher_frontier": float(on["teacher"].mean()) if len(on) else np.nan,
            "acc_student_frontier": float(on["student"].mean()) if len(on) else np.nan,
            "gap_on_frontier": float((on["teacher"] - on["student"]).mean()) if len(on) else np.nan,
            "gap_on_settled_resampled": float((resampled["teacher"] - resampled["student"]).mean())
            if len(resampled) else np.nan}


def reference_distance(refs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for name, g in refs.groupby("reference"):
        varies = len(g) > 2 and g.reward_teacher.std() > 0 and g.reward_ref.std() > 0
        corr = stats.pearsonr(g.reward_teacher, g.reward_ref).statistic if varies else np.nan
        kl_st = float(g.kl_s_t.mean())
        rows.append({"reference": name, "kl_teacher_ref": float(g.kl_t_ref.mean()),
                     "kl_student_teacher": kl_st,
                     "relative_distance": float(g.kl_t_ref.mean() / kl_st) if kl_st > 0 else np.nan,
                     "reward_correlation": float(corr)})
    return pd.DataFrame(rows)


@register_probe("novelty", version=3, summary="teacher novelty: two-phase accuracy gap on the "
                "student's frontier (bootstrap CI), exclusive solves, continuation advantage, "
                "distance to reference models -> score")
def novelty_probe(run: Run) -> pd.DataFrame:
    """Long table ``(section, key, metric, value)`` and a ``novelty_score`` row."""
    rows: list[dict] = []
    roll = run.rollouts
    step0 = roll[roll.step == roll.step.min()]
    if run.has_aux("teacher"):
        for m, v in exclusive_solves(step0, run.aux("teacher").rollouts).items():
            rows.append(dict(section="exclusive", key="", metric=m, value=v))
    cont = run.table("continuations")
    adv = continuation_advantage(cont) if len(cont) else pd.DataFrame()
    for _, r in adv.iterrows():
        for m in ("acc_teacher", "acc_student", "advantage", "ci_low", "ci_high", "n_rollouts",
                  "mean_prefix_len"):
            rows.append(dict(section="continuation", key=f"{r.depth:g}", metric=m, value=r[m]))
    refs = run.table("references")
    if len(refs):
        for _, r in reference_distance(refs).iterrows():
            for m in ("kl_teacher_ref", "kl_student_teacher", "relative_distance",
                      "reward_correlation"):
                rows.append(dict(section="reference", key=r.reference, metric=m, value=r[m]))
    if not rows:
        raise OpdDiagError(
            f"{run.path} has no novelty evidence: needs teacher rollouts (aux/teacher), "
            "continuations or reference scores — run `opd-diag preflight` with prompts that have "
            "answers, or pass --reference")
    estimand = "none"
    score = lo = hi = np.nan
    if (run.path / "frontier.parquet").exists():
        first_stage, _ = first_stage_outcomes(run)
        fg = frontier_gap(first_stage, run.table("frontier"))
        for m in ("n_prompts", "n_frontier_prompts", "n_settled_prompts", "settled_resampled",
                  "samples_per_prompt", "acc_teacher_frontier", "acc_student_frontier",
                  "gap_on_frontier", "gap_on_settled_resampled"):
            rows.append(dict(section="frontier", key="", metric=m, value=fg[m]))
        score, lo, hi = fg["score"], fg["ci_low"], fg["ci_high"]
        estimand = ("two_phase_ipw" if fg["settled_resampled"] or not fg["n_settled_prompts"]
                    else "two_phase_settled_as_zero")
    elif len(adv):
        shallow = adv.iloc[0]
        score, lo, hi = float(shallow.advantage), float(shallow.ci_low), float(shallow.ci_high)
        estimand = "continuation_advantage_depth0"
    else:
        ex = {r["metric"]: r["value"] for r in rows if r["section"] == "exclusive"}
        if "teacher_exclusive_rate" in ex:
            score = lo = hi = ex["teacher_exclusive_rate"]
            estimand = "teacher_exclusive_solve_rate"
    rows.append(dict(section="score", key=estimand, metric="novelty_score", value=score))
    rows.append(dict(section="score", key=estimand, metric="novelty_ci_low", value=lo))
    rows.append(dict(section="score", key=estimand, metric="novelty_ci_high", value=hi))
    return pd.DataFrame(rows)
