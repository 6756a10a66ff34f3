"""Horizon: how the teacher's signal changes with depth into the trajectory (paper §6).

* continuation advantage by depth (from ``continuations``): where does the teacher stop being
  able to do better than the student from the student's own prefix?
* AUROC of the sequence-mean reward ``r̄`` (positions up to each depth bin) against correctness
  (Mann–Whitney U from scipy): is the dense signal still informative that deep?
* overlap ratio and entropies by depth bin;
* on training runs, student entropy by position × step and a back-to-front destabilisation
  detector (high entropy appearing at late positions first and spreading earlier, paper Fig. 13).

Output includes ``recommended_max_len``: the prefix depth (tokens) at which the teacher's
continuation advantage stops being significantly positive.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ..core.errors import OpdDiagError
from ..core.runs import Run
from .novelty import continuation_advantage
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
    known = rollouts.dropna(subset=["correct"]).set_index("rollout_id")["correct"].astype(bool)
    s = states[states.rollout_id.isin(known.index)]
    rows = []
    if len(s) == 0:
        return pd.DataFrame()
    reward = s.logp_t - s.logp_s
    frac = (s.t + 1) / s["T"]
    for b in range(n_bins):
        upto = frac <= (b + 1) / n_bins
        r_bar = reward[upto].groupby(s.rollout_id[upto]).mean()
        labels = known.reindex(r_bar.index).to_numpy()
        rows.append({"depth_bin": b, "depth_upto": (b + 1) / n_bins,
                     "auroc_rbar": auroc(r_bar.to_numpy(), labels), "n_rollouts": len(r_bar)})
    return pd.DataFrame(rows)


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


@register_probe("horizon", version=1, summary="teacher signal by depth: continuation advantage, "
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
    for _, r in reward_auroc_by_depth(states[states.step == states.step.min()], rollouts,
                                      n_depth_bins).iterrows():
        rows.append(dict(section="auroc", key=str(int(r.depth_bin)), metric="auroc_rbar",
                         value=r.auroc_rbar))
    cont = run.table("continuations")
    recommended = np.nan
    if len(cont):
        adv = continuation_advantage(cont)
        for _, r in adv.iterrows():
            for m in ("advantage", "ci_low", "ci_high", "mean_prefix_len"):
                rows.append(dict(section="continuation", key=f"{r.depth:g}", metric=m, value=r[m]))
        paying = adv.ci_low > min_advantage
        if paying.iloc[0] and not paying.all():
            stop = adv[~paying].iloc[0]
            recommended = float(stop.mean_prefix_len)
    rows.append(dict(section="summary", key="", metric="recommended_max_len", value=recommended))
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
