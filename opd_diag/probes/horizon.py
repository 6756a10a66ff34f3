"""Horizon: how the teacher's signal changes with depth into the trajectory (paper §6).

* continuation advantage by depth (from ``continuations``): where does the teacher stop being
  able to do better than the student from the student's own prefix?
* AUROC of the mean reward ``r̄`` over each depth bin's positions (per bin, never cumulative)
  against correctness (Mann–Whitney U from scipy), with a 95% CI resampled by prompt, on depth
  fractions (section ``auroc``) and on absolute token depths 0-16-32-64-… (``auroc_tokens``): is
  the dense signal still informative that deep?
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


def _auroc_ci(r_bar: pd.Series, labels: pd.Series, prompt_of: pd.Series, n_boot: int,
              seed: int) -> tuple[float, float]:
    """95% percentile CI of the AUROC, resampling *prompts* (a prompt's rollouts together)."""
    if len(r_bar) < 4 or labels.nunique() < 2:
        return np.nan, np.nan
    groups = [np.flatnonzero(prompt_of.to_numpy() == p) for p in pd.unique(prompt_of)]
    rng = np.random.default_rng(seed)
    scores, y = r_bar.to_numpy(), labels.to_numpy(bool)
    boots = []
    for _ in range(n_boot):
        idx = np.concatenate([groups[i] for i in rng.integers(0, len(groups), len(groups))])
        a = auroc(scores[idx], y[idx])
        if a == a:
            boots.append(a)
    if len(boots) < n_boot // 2:
        return np.nan, np.nan
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return float(lo), float(hi)


def _auroc_rows(s: pd.DataFrame, bin_of: pd.Series, bins: list[tuple], known: pd.Series,
                prompt_of: pd.Series, n_boot: int, seed: int) -> list[dict]:
    reward = s.logp_t - s.logp_s
    rows = []
    for b, extra in bins:
        here = (bin_of == b).to_numpy()
        r_bar = reward[here].groupby(s.rollout_id[here]).mean()
        labels = known.reindex(r_bar.index)
        lo, hi = _auroc_ci(r_bar, labels, prompt_of.reindex(r_bar.index), n_boot, seed)
        rows.append({"depth_bin": b, **extra,
                     "mean_position": float(s.t[here].mean()) if here.any() else np.nan,
                     "auroc_rbar": auroc(r_bar.to_numpy(), labels.to_numpy()),
                     "auroc_ci_low": lo, "auroc_ci_high": hi, "n_rollouts": len(r_bar),
                     "n_prompts": int(prompt_of.reindex(r_bar.index).nunique())})
    return rows


def reward_auroc_by_depth(states: pd.DataFrame, rollouts: pd.DataFrame, n_bins: int,
                          n_boot: int = 300, seed: int = 0) -> pd.DataFrame:
    """Per depth bin (not cumulative): AUROC of the bin's mean reward ``r̄`` (teacher minus student
    log-prob of the sampled tokens at the bin's positions only) against the rollout's outcome,
    with a 95% CI resampled by prompt, the bin's depth as a fraction and in absolute tokens (mean
    position)."""
    known = rollouts.dropna(subset=["correct"]).set_index("rollout_id")["correct"].astype(bool)
    prompt_of = rollouts.set_index("rollout_id").prompt_id
    s = states[states.rollout_id.isin(known.index)]
    if len(s) == 0:
        return pd.DataFrame()
    b_of = np.minimum((s.t / s["T"] * n_bins).astype(int), n_bins - 1)
    bins = [(b, {"depth_from": b / n_bins, "depth_upto": (b + 1) / n_bins}) for b in range(n_bins)]
    return pd.DataFrame(_auroc_rows(s, b_of, bins, known, prompt_of, n_boot, seed))


def token_edges(max_t: int, first: int = 16) -> list[int]:
    """Absolute depth bins in tokens: [0, 16), [16, 32), [32, 64), … doubling up to ``max_t``."""
    edges = [0, first]
    while edges[-1] <= max_t:
        edges.append(edges[-1] * 2)
    return edges


def reward_auroc_by_tokens(states: pd.DataFrame, rollouts: pd.DataFrame, n_boot: int = 300,
                           seed: int = 0) -> pd.DataFrame:
    """The same per-bin AUROC on absolute token depths (:func:`token_edges`): each bin holds the
    rollouts that reach it, so a user reads "the signal is informative up to ~N tokens"
    directly, whatever the rollouts' lengths."""
    known = rollouts.dropna(subset=["correct"]).set_index("rollout_id")["correct"].astype(bool)
    prompt_of = rollouts.set_index("rollout_id").prompt_id
    s = states[states.rollout_id.isin(known.index)]
    if len(s) == 0:
        return pd.DataFrame()
    edges = token_edges(int(s.t.max()))
    b_of = pd.Series(np.searchsorted(edges, s.t.to_numpy(), side="right") - 1, index=s.index)
    bins = [(b, {"tokens_from": edges[b], "tokens_upto": edges[b + 1]})
            for b in range(len(edges) - 1) if (b_of == b).any()]
    return pd.DataFrame(_auroc_rows(s, b_of, bins, known, prompt_of, n_boot, seed))


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


@register_probe("horizon", version=3, summary="teacher signal by depth: continuation advantage, "
                "per-bin AUROC of r̄ (fractions and absolute tokens, CIs by prompt), "
                "overlap/entropy by depth, back-to-front detector -> max length")
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
        for m in ("auroc_rbar", "auroc_ci_low", "auroc_ci_high", "mean_position", "n_rollouts"):
            rows.append(dict(section="auroc", key=str(int(r.depth_bin)), metric=m, value=r[m]))
    au_tok = reward_auroc_by_tokens(states[states.step == states.step.min()], rollouts)
    for _, r in au_tok.iterrows():
        for m in ("auroc_rbar", "auroc_ci_low", "auroc_ci_high", "mean_position", "n_rollouts"):
            rows.append(dict(section="auroc_tokens",
                             key=f"{int(r.tokens_from)}-{int(r.tokens_upto)}", metric=m,
                             value=r[m]))
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
