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
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import OpdDiagError
from ..runs import Run
from . import register_probe

SCORE_RULE = ("novelty = teacher-minus-student continuation accuracy from the student's own "
              "shallowest prefixes, on the student's failed rollouts first (mean, with its 95% "
              "bootstrap CI); without continuations, the teacher-exclusive solve rate")


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


@register_probe("novelty", version=1, summary="teacher novelty: exclusive solves, continuation "
                "advantage (bootstrap CI), distance to reference models -> score")
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
    if len(adv):
        first = adv.iloc[0]
        score, lo, hi = float(first.advantage), float(first.ci_low), float(first.ci_high)
    else:
        ex = {r["metric"]: r["value"] for r in rows if r["section"] == "exclusive"}
        score = lo = hi = ex.get("teacher_exclusive_rate", np.nan)
    rows.append(dict(section="score", key="", metric="novelty_score", value=score))
    rows.append(dict(section="score", key="", metric="novelty_ci_low", value=lo))
    rows.append(dict(section="score", key="", metric="novelty_ci_high", value=hi))
    return pd.DataFrame(rows)
