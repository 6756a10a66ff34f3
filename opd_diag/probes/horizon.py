"""Horizon: how the teacher's signal changes with depth into the trajectory (paper §6).

* continuation advantage by depth (from ``continuations``): where does the teacher stop being
  able to do better than the student from the student's own prefix?
* AUROC of the mean reward ``r̄`` over each depth bin's positions (per bin) against correctness
  (Mann–Whitney U from scipy): is the dense signal still informative that deep?
* overlap ratio and entropies by depth bin;
* on training runs, student entropy by position × step and a back-to-front destabilisation
  detector (high entropy appearing at late positions first and spreading earlier, paper Fig. 13).

Output includes ``recommended_max_len`` (:func:`recommend_max_len`): a length in tokens a user
can pass to ``--max-new-tokens``, or NaN with the reason in its ``key`` ("not determined: …");
and ``advantage_stops_at_tokens``, the prefix length at which the teacher's continuation advantage
(CI by prompt) stops being significantly positive — where the student's prefix already decides
the outcome, which is not a length cap.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ..core.errors import OpdDiagError
from ..core.runs import Run
from .novelty import bootstrap_mean_ci
from .overlap import state_metrics
from .registry import register_probe


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties count half (Mann–Whitney U / n1·n0)."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return np.nan
    u = stats.mannwhitneyu(pos, neg, alternative="two-sided").statistic
    return float(u / (len(pos) * len(neg)))


def reward_auroc_by_depth(states: pd.DataFrame, rollouts: pd.DataFrame, n_bins: int
                          ) -> pd.DataFrame:
    """Per depth bin (not cumulative): AUROC of the bin's mean reward ``r̄`` (teacher minus student
    log-prob of the sampled tokens at the bin's positions only) against the rollout's outcome,
    with the bin's depth as a fraction and in absolute tokens (mean position)."""
    known = rollouts.dropna(subset=["correct"]).set_index("rollout_id")["correct"].astype(bool)
    s = states[states.rollout_id.isin(known.index)]
    rows = []
    if len(s) == 0:
        return pd.DataFrame()
    reward = s.logp_t - s.logp_s
    b_of = np.minimum((s.t / s["T"] * n_bins).astype(int), n_bins - 1)
    for b in range(n_bins):
        here = b_of == b
        r_bar = reward[here].groupby(s.rollout_id[here]).mean()
        labels = known.reindex(r_bar.index).to_numpy()
        rows.append({"depth_bin": b, "depth_from": b / n_bins, "depth_upto": (b + 1) / n_bins,
                     "mean_position": float(s.t[here].mean()) if here.any() else np.nan,
                     "auroc_rbar": auroc(r_bar.to_numpy(), labels), "n_rollouts": len(r_bar)})
    return pd.DataFrame(rows)


def advantage_by_prompt(cont: pd.DataFrame, rollouts: pd.DataFrame, seed: int = 0
                        ) -> pd.DataFrame:
    """Continuation advantage per depth with a 95% CI resampled by *prompt* (continued rollouts
    of one prompt are not independent): per prompt the mean teacher-minus-student accuracy over
    its continued rollouts, then a bootstrap over prompts."""
    pid = rollouts.set_index("rollout_id").prompt_id
    rows = []
    for depth, g in cont.groupby("depth", sort=True):
        per = g.groupby(["rollout_id", "continuer"]).correct.mean().unstack("continuer")
        diff = (per["teacher"] - per["student"]).dropna()
        by_prompt = diff.groupby(pid.reindex(diff.index).to_numpy()).mean().to_numpy()
        lo, hi = bootstrap_mean_ci(by_prompt, seed=seed)
        rows.append({"depth": depth, "advantage": float(by_prompt.mean()), "ci_low": lo,
                     "ci_high": hi, "n_prompts": len(by_prompt),
                     "mean_prefix_len": float(g.prefix_len.mean())})
    return pd.DataFrame(rows)


def recommend_max_len(auroc_bins: pd.DataFrame, rollouts: pd.DataFrame,
                      min_auroc: float = 0.6) -> tuple[float, str]:
    """A ``--max-new-tokens`` recommendation in tokens, or ``(nan, reason)``.

    The dense reward stops carrying outcome information at the first depth bin whose AUROC falls
    below ``min_auroc`` after an earlier bin reached it; the recommendation is that bin's start in
    tokens, *provided* it is at least the 90th percentile length of the student's correct
    rollouts (a cap below what a correct answer needs would cut answers off)."""
    au = auroc_bins.dropna(subset=["auroc_rbar"]) if len(auroc_bins) else auroc_bins
    if len(au) < 2:
        return np.nan, "not determined: fewer than 2 depth bins with both outcomes"
    good = au.auroc_rbar.to_numpy() >= min_auroc
    if not good.any():
        return np.nan, (f"not determined: the reward's AUROC never reaches {min_auroc} (the dense "
                        "signal does not predict the outcome at any depth)")
    after = np.flatnonzero(~good & (np.cumsum(good) > 0))
    if len(after) == 0:
        return np.nan, (f"not determined: the reward's AUROC stays >= {min_auroc} at every depth "
                        "(no degradation with depth)")
    b = au.iloc[after[0]]
    start = float(auroc_bins.mean_position.iloc[int(b.depth_bin)])
    ok = rollouts.dropna(subset=["correct"])
    ok = ok[ok.correct.astype(bool)]
    need = float(np.quantile(ok.n_tokens, 0.9)) if len(ok) and "n_tokens" in ok else np.nan
    if np.isnan(need):
        return np.nan, "not determined: no correct student rollout to size an answer by"
    if start < need:
        return np.nan, (f"not determined: the reward's AUROC falls below {min_auroc} from ~"
                        f"{start:.0f} tokens, but correct answers need {need:.0f} tokens (90th "
                        "percentile): a cap there would cut them off")
    return float(np.ceil(start)), (f"the reward's AUROC falls below {min_auroc} from ~{start:.0f} "
                                   "tokens")


def back_to_front(entropy: pd.DataFrame, factor: float = 1.5) -> dict:
    """Detect destabilisation that starts at late positions.

    ``entropy`` has columns ``step, position_bin, H_s``. The onset of a position bin is the
    first step whose entropy exceeds ``factor`` × the bin's first-step entropy. Back-to-front
    means onsets happen at all, and later positions destabilise earlier (Spearman ρ between
    position and onset step < 0).
    """
    steps = sorted(entropy.step.unique())
    if len(steps) < 3:
        return {"detected": False, "reason": "fewer than 3 steps"}
    pivot = entropy.pivot_table(index="position_bin", columns="step", values="H_s")
    base = pivot[steps[0]]
    onsets = {}
    for pos, row in pivot.iterrows():
        over = [s for s in steps[1:] if row.get(s, np.nan) > factor * max(base[pos], 1e-6)]
        if over:
            onsets[pos] = over[0]
    if len(onsets) < 3:
        return {"detected": False, "n_destabilised_bins": len(onsets)}
    rho = stats.spearmanr(list(onsets), list(onsets.values())).statistic
    return {"detected": bool(rho < -0.3), "spearman_position_vs_onset": float(rho),
            "n_destabilised_bins": len(onsets), "first_onset_position": float(max(
                onsets, key=lambda p: (-onsets[p], p)))}


@register_probe("horizon", version=2, summary="teacher signal by depth: continuation advantage, "
                "AUROC of r̄, overlap/entropy by depth, back-to-front detector -> max length")
def horizon_probe(run: Run, n_depth_bins: int = 4, position_bin: int = 16,
                  min_advantage: float = 0.0) -> pd.DataFrame:
    """Long table ``(section, key, metric, value)``."""
    states, rollouts = run.states, run.rollouts
    if len(states) == 0:
        raise OpdDiagError(f"{run.path} has no states; run `opd-diag capture` first")
    rows: list[dict] = []
    per = state_metrics(states)
    per["depth_bin"] = np.minimum((per.t / per["T"] * n_depth_bins).astype(int), n_depth_bins - 1)
    first = per[per.step == per.step.min()]
    for b, g in first.groupby("depth_bin"):
        for m in ("overlap_ratio", "overlap_mass_t", "H_s", "H_t", "rkl"):
            rows.append(dict(section="depth", key=str(b), metric=m, value=float(g[m].mean())))
    au = reward_auroc_by_depth(states[states.step == states.step.min()], rollouts, n_depth_bins)
    for _, r in au.iterrows():
        rows.append(dict(section="auroc", key=str(int(r.depth_bin)), metric="auroc_rbar",
                         value=r.auroc_rbar))
        rows.append(dict(section="auroc", key=str(int(r.depth_bin)), metric="mean_position",
                         value=r.mean_position))
    cont = run.table("continuations")
    if len(cont):
        adv = advantage_by_prompt(cont, rollouts)
        for _, r in adv.iterrows():
            for m in ("advantage", "ci_low", "ci_high", "n_prompts", "mean_prefix_len"):
                rows.append(dict(section="continuation", key=f"{r.depth:g}", metric=m, value=r[m]))
        paying = adv.ci_low > min_advantage
        if paying.iloc[0] and not paying.all():
            rows.append(dict(section="summary", key="", metric="advantage_stops_at_tokens",
                             value=float(adv[~paying].iloc[0].mean_prefix_len)))
    first_roll = rollouts[rollouts.step == rollouts.step.min()]
    recommended, reason = recommend_max_len(au, first_roll)
    rows.append(dict(section="summary", key=reason, metric="recommended_max_len",
                     value=recommended))
    if states.step.nunique() >= 3:
        per["position_bin"] = per.t // position_bin * position_bin
        ent = per.groupby(["step", "position_bin"], as_index=False).H_s.mean()
        for _, r in ent.iterrows():
            rows.append(dict(section="entropy_by_position", key=f"{int(r.step)}:{int(r.position_bin)}",
                             metric="H_s", value=float(r.H_s)))
        for m, v in back_to_front(ent).items():
            if isinstance(v, (bool, int, float, np.floating)):
                rows.append(dict(section="back_to_front", key="", metric=m, value=float(v)))
    return pd.DataFrame(rows)
