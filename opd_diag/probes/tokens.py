"""Token-level probes: where the teacher's signal lands, and whether the student can use it.

* ``reachability`` — at positions where the teacher disagrees with the student, where does the
  teacher's preferred token sit in the student's distribution? Reverse-KL and sampled-token OPD
  move mass only through tokens the student samples (the gradient of ``KL(p‖q)`` w.r.t. a logit
  is ``p(v)(log p(v) − log q(v) − KL)``, ~0 where ``p(v) ≈ 0``), so a correction the student gives
  ~zero probability is out of reach however right the teacher is; forward KL or a cold start can
  still teach it.
* ``token_level`` — TIP quadrants (student entropy × divergence, median split), TA-OPD
  teachability (teacher mass on the student's top-k × top-k disagreement), teacher-noise rate on
  answer tokens, the share of near-zero advantages, and the reward/outcome conflict rate.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..core.divergences import kl, renormalize
from ..core.errors import OpdDiagError
from ..core.runs import Run, stack_list_column
from .registry import register_probe

UNREACHABLE_P = 1e-3
"""v1 (kept as ``rkl_share_unreachable_p``, reported, not decided on): a teacher token the
student gives less than this absolute probability. An absolute probability means different
things at a 355- and a 151,936-token vocabulary, so the verdict uses the gradient ratio below."""

NEAR_ZERO_ADVANTAGE = 1e-4
"""OPSA's (arXiv 2608.31046) "advantage concentration" line: a token whose per-token reward
``A = log q − log p`` has ``|A| <= 1e-4`` carries almost no teacher signal (OPSA: 51.7 % of all
tokens, 97.5 % of the top-20 % by student log-prob, with Qwen3-1.7B). The noise rate is reported
both over all answer tokens and over the signal-bearing ones (``|A| >`` this): the sign of a
near-zero ``A`` is mostly rounding."""

GRAD_RATIO_CUTOFFS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
"""Cutoffs of the sensitivity curve (``section`` ``curve`` of the reachability table)."""
GRAD_RATIO = 1e-2
"""The decision cutoff: a teacher token is out of reach when the reverse-KL gradient on its logit
is below this fraction of the forward-KL gradient (see :func:`corrective_signal`)."""


def corrective_signal(states: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per (state, teacher top-k token): the forward-KL pull ``g_f = max(q(v) − p(v), 0)`` (the
    gradient of ``KL(q‖p)`` on the student's logit ``v``: the teacher's corrective signal) and the
    ratio ``|g_r| / g_f`` of the reverse-KL gradient ``g_r = p(v)(log p(v) − log q(v) − KL(p‖q))``
    to it (``inf`` where ``g_f = 0``). Both are ratios of probabilities of the same token, so they
    do not change when never-used rows (≈ 0 mass in both models) are appended to the heads —
    unlike an absolute probability cutoff, whose meaning moves with the vocabulary size."""
    lq = stack_list_column(states, "topk_logp_t").astype(np.float64)
    lp = stack_list_column(states, "logp_s_on_topk_t").astype(np.float64)
    q, p = np.exp(lq), np.exp(lp)
    g_f = np.clip(q - p, 0, None)
    g_r = np.abs(p * (lp - lq - states["rkl"].to_numpy()[:, None]))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(g_f > 0, g_r / g_f, np.inf)
    return g_f, ratio


def _states(run: Run) -> pd.DataFrame:
    states = run.states
    if len(states) == 0:
        raise OpdDiagError(f"{run.path} has no states; run `opd-diag capture` first")
    return states


def reachability_frame(states: pd.DataFrame, unreachable_p: float = UNREACHABLE_P) -> pd.DataFrame:
    """Per-state reachability columns (all states; ``disagree`` marks the ones that count).

    Columns: ``disagree`` (teacher top-1 ≠ student's sampled token), ``p_s_teacher_top1`` (the
    student's probability of the teacher's top-1), ``q_teacher_top1``, ``teacher_top1_in_student_topk``,
    ``rank_s_of_teacher_top1`` (0 = the student's own argmax; present when the capture recorded
    it), ``corrective_mass`` (``Σ_{v∈S_q} max(q(v) − p(v), 0)``, the mass the teacher wants moved,
    over the teacher's top-k) and ``corrective_mass_outside_s`` (the part on tokens outside the
    student's top-k).
    """
    ids_t = stack_list_column(states, "topk_ids_t")
    ids_s = stack_list_column(states, "topk_ids_s")
    lq = stack_list_column(states, "topk_logp_t").astype(np.float64)
    lp_on_t = stack_list_column(states, "logp_s_on_topk_t").astype(np.float64)
    in_s = (ids_t[:, :, None] == ids_s[:, None, :]).any(-1)
    gap = np.clip(np.exp(lq) - np.exp(lp_on_t), 0, None)
    out = states[["rollout_id", "step", "t", "T"]].copy()
    out["disagree"] = ids_t[:, 0] != states["token"].to_numpy()
    out["p_s_teacher_top1"] = np.exp(lp_on_t[:, 0])
    out["q_teacher_top1"] = np.exp(lq[:, 0])
    out["teacher_top1_in_student_topk"] = in_s[:, 0]
    if "rank_s_of_top1_t" in states:
        out["rank_s_of_teacher_top1"] = states["rank_s_of_top1_t"].to_numpy()
    out["corrective_mass"] = gap.sum(-1)
    out["corrective_mass_outside_s"] = (gap * ~in_s).sum(-1)
    out["unreachable"] = out["disagree"] & (out["p_s_teacher_top1"] < unreachable_p)
    out["rkl"] = states["rkl"].to_numpy()
    return out


def _failed_rollouts(run: Run, states: pd.DataFrame) -> tuple[pd.Series, str]:
    """Mask of the states measured: the student's failed rollouts when outcomes are known and
    any failed, else every state (the ``measured_on`` row says which)."""
    known = run.rollouts.dropna(subset=["correct"])
    failed = set(known.rollout_id[~known.correct.astype(bool)])
    if failed:
        return states.rollout_id.isin(failed), "failed_rollouts"
    return pd.Series(True, index=states.index), "all_rollouts"


@register_probe("reachability", version=2, summary="share of the teacher's corrective signal out "
                "of reverse-KL's reach (gradient ratio, sensitivity curve, on the student's failed "
                "rollouts); rank, probability, corrective mass outside its top-k")
def reachability_probe(run: Run, unreachable_p: float = UNREACHABLE_P,
                       grad_ratio: float = GRAD_RATIO) -> pd.DataFrame:
    """Per-step summary of the teacher's corrections, one row per step, with the sensitivity
    curve as columns ``grad_share_unreachable@1e-02`` … ``@1e-06`` (:data:`GRAD_RATIO_CUTOFFS`).

    ``grad_share_unreachable`` (the decision statistic) = the share of the teacher's corrective
    signal ``Σ g_f`` (:func:`corrective_signal`, over its top-k at every position) that sits on
    tokens whose reverse-KL gradient is below ``grad_ratio`` × their forward-KL gradient, on the
    student's failed rollouts (where the teacher's advantage lives) when outcomes are known."""
    states = _states(run)
    per = reachability_frame(states, unreachable_p)
    g_f, ratio = corrective_signal(states)
    where, measured_on = _failed_rollouts(run, states)
    rows = []
    for step, g in per.groupby("step", sort=True):
        d = g[g.disagree]
        idx = g.index.to_numpy()
        sel = idx[where.loc[idx].to_numpy()]
        pos = states.index.get_indexer(sel)
        total_f = g_f[pos].sum()

        def share(cut, pos=pos, total_f=total_f):
            return float((g_f[pos] * (ratio[pos] < cut)).sum() / total_f) if total_f > 0 else 0.0

        total_cm = d.corrective_mass.sum()
        row = {
            "step": step,
            "n_states": len(g),
            "n_states_measured": len(sel),
            "measured_on": measured_on,
            "grad_share_unreachable": share(grad_ratio),
            "grad_ratio": grad_ratio,
            "disagree_share": float(g.disagree.mean()),
            "n_disagree": len(d),
            "unreachable_share": float(d.unreachable.mean()) if len(d) else 0.0,
            "unreachable_share_of_states": float(g.unreachable.mean()),
            "teacher_top1_outside_student_topk": float((~d.teacher_top1_in_student_topk).mean())
            if len(d) else 0.0,
            "median_p_s_teacher_top1": float(d.p_s_teacher_top1.median()) if len(d) else np.nan,
            "corrective_mass_outside_share": float(d.corrective_mass_outside_s.sum() / total_cm)
            if total_cm > 0 else 0.0,
            "rkl_share_unreachable_p": float(g.rkl[g.unreachable].sum() / g.rkl.sum())
            if g.rkl.sum() > 0 else 0.0,
            "unreachable_p": unreachable_p,
        }
        if "rank_s_of_teacher_top1" in d:
            row["median_rank_s_of_teacher_top1"] = float(d.rank_s_of_teacher_top1.median()) \
                if len(d) else np.nan
        for c in GRAD_RATIO_CUTOFFS:  # the sensitivity curve, one column per cutoff
            row[f"grad_share_unreachable@{c:.0e}"] = share(c)
        row["rkl_share_unreachable"] = row["rkl_share_unreachable_p"]  # v1 name (plots)
        rows.append(row)
    return pd.DataFrame(rows)


def _quantile_norm(x: np.ndarray) -> np.ndarray:
    lo, hi = np.nanquantile(x, 0.05), np.nanquantile(x, 0.95)
    return np.clip((x - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(x)


def teachability_frame(states: pd.DataFrame) -> pd.DataFrame:
    """TA-OPD per state: ``C = Σ_{v∈TopK(p)} q(v)``, ``D = KL(q̄ ‖ p̄)`` over the student's top-k.

    ``D_learn = D·C`` is disagreement the teacher expresses on tokens the student already
    considers; ``D_incompat = D·(1 − C)`` is disagreement off the student's support.
    """
    lp = torch.from_numpy(stack_list_column(states, "topk_logp_s").astype(np.float32))
    lq = torch.from_numpy(stack_list_column(states, "logp_t_on_topk_s").astype(np.float32))
    mask = torch.ones_like(lp, dtype=torch.bool)
    d = kl(renormalize(lq, mask), renormalize(lp, mask)).numpy()
    c = lq.exp().sum(-1).numpy()
    out = states[["rollout_id", "step", "t"]].copy()
    out["C"], out["D"] = c, d
    out["D_learn"], out["D_incompat"] = d * c, d * (1 - c)
    return out


def answer_token_mask(states: pd.DataFrame, rollouts: pd.DataFrame, n_answer_tokens: int
                      ) -> np.ndarray:
    """True for the last ``n_answer_tokens`` content positions of each rollout (before EOS).

    A tokenizer-agnostic stand-in for "the tokens of the final answer": in the zoo and in
    ``\\boxed{}`` / ``#### x`` formats the answer closes the completion.
    """
    stop = rollouts.set_index("rollout_id")["stop_reason"]
    eos = states["rollout_id"].map(stop).eq("eos").to_numpy()
    last = states["T"].to_numpy() - 1 - eos  # last content position
    t = states["t"].to_numpy()
    return (t <= last) & (t > last - n_answer_tokens)


@register_probe("token_level", version=2, summary="TIP quadrants, TA-OPD teachability, "
                "teacher-noise rate on answer tokens, reward/outcome conflicts")
def token_level_probe(run: Run, n_answer_tokens: int = 8) -> pd.DataFrame:
    """Long table ``(step, group, metric, value)`` of token-level diagnostics."""
    states = _states(run)
    rollouts = run.rollouts
    ta = teachability_frame(states)
    reward_t = (states["logp_t"] - states["logp_s"]).to_numpy()
    rows: list[dict] = []
    for step in sorted(states["step"].unique()):
        sel = (states["step"] == step).to_numpy()
        h, dv = states["H_s"].to_numpy()[sel], states["rkl"].to_numpy()[sel]
        hi_h, hi_d = h > np.median(h), dv >= np.median(dv)
        total = dv.sum()
        for name, m in (("Q1_high_H_high_D", hi_h & hi_d), ("Q2_high_H_low_D", hi_h & ~hi_d),
                        ("Q3_low_H_high_D", ~hi_h & hi_d), ("Q4_low_H_low_D", ~hi_h & ~hi_d)):
            rows.append(dict(step=step, group="tip", metric=f"{name}_share", value=m.mean()))
            rows.append(dict(step=step, group="tip", metric=f"{name}_kl_share",
                             value=dv[m].sum() / total if total > 0 else 0.0))
        t = ta[sel]
        for col in ("C", "D", "D_learn", "D_incompat"):
            rows.append(dict(step=step, group="teachability", metric=f"mean_{col}",
                             value=float(t[col].mean())))
        learn, incompat = t["D_learn"].sum(), t["D_incompat"].sum()
        rows.append(dict(step=step, group="teachability", metric="learnable_share",
                         value=learn / (learn + incompat) if learn + incompat > 0 else np.nan))
        rows.append(dict(step=step, group="teacher_noise", metric="near_zero_share_all",
                         value=float((np.abs(reward_t[sel]) <= NEAR_ZERO_ADVANTAGE).mean())))
        rows += _outcome_rows(step, states[sel], rollouts, reward_t[sel], n_answer_tokens)
    return pd.DataFrame(rows)


def _outcome_rows(step, states, rollouts, reward, n_answer_tokens) -> list[dict]:
    """Teacher-noise rate and reward/outcome conflicts (need ``rollouts.correct``)."""
    known = rollouts.dropna(subset=["correct"])
    known = known[known.rollout_id.isin(states.rollout_id.unique())]
    if len(known) == 0:
        return []
    correct = states["rollout_id"].map(known.set_index("rollout_id")["correct"])
    has = correct.notna().to_numpy()
    ans = answer_token_mask(states, rollouts, n_answer_tokens) & has
    ok = correct.fillna(False).astype(bool).to_numpy()
    wrong_sign = np.where(ok, reward < 0, reward > 0)
    rows = []
    signal = np.abs(reward) > NEAR_ZERO_ADVANTAGE
    for name, m in (("all", ans), ("correct", ans & ok), ("incorrect", ans & ~ok),
                    ("signal", ans & signal)):
        rows.append(dict(step=step, group="teacher_noise", metric=f"wrong_sign_rate_{name}",
                         value=float(wrong_sign[m].mean()) if m.any() else np.nan))
    rows.append(dict(step=step, group="teacher_noise", metric="near_zero_share_answer",
                     value=float((~signal[ans]).mean()) if ans.any() else np.nan))
    r_bar = pd.Series(reward).groupby(states["rollout_id"].to_numpy()).mean()
    r_ok = known.set_index("rollout_id")["correct"].astype(bool).reindex(r_bar.index)
    conflict = ((2 * r_ok.astype(float) - 1) * r_bar < 0).mean()
    rows.append(dict(step=step, group="outcome", metric="conflict_rate", value=float(conflict)))
    rows.append(dict(step=step, group="outcome", metric="n_rollouts_with_outcome",
                     value=float(len(r_bar))))
    return rows
