"""Sparse-teacher math: the teacher known only through its top-K log-probs plus the log-prob of
the student's sampled token (what a served teacher returns; ``--teacher-topk-only K``).

The student is local, so its full distribution ``p`` is known. Of the teacher ``q`` we observe
``q`` on ``S = TopK(q) ∪ {ŷ}``; the unobserved tail ``V \\ S`` (``n`` tokens) carries the mass
``r = 1 − Σ_S q`` (exact: the observed log-probs are normalised over the whole vocabulary), and
every tail token has ``q(v) ≤ q_K`` (the K-th largest). From that alone:

* **exact**: the sampled-token reward ``log q(ŷ) − log p(ŷ)``, the teacher's top-k lists, the
  student's log-probs on them, the overlap ratio and both overlap masses, Eq. 7 (``I`` lies in
  ``S``), the rank of the teacher's top-1 under the student (reachability), the tail mass;
* **bounded** (intervals that contain the truth for *every* tail consistent with the data):
  ``H(q) = H_S + H_tail`` with ``r·(−log q_K) ≤ H_tail ≤ r·log(n / r)`` (the upper end is the
  uniform tail); ``KL(q‖p)`` with tail term in ``[r·log(r / P_tail), r·(log q_K − log p_min)]``
  (log-sum inequality; ``p_min`` the student's smallest tail probability); ``KL(p‖q)`` with tail
  term ``≥ max(P_tail·log(P_tail / r), Σ_tail p·log(p / q_K))`` and **no finite upper bound** (a
  tail token the student likes may have any small teacher probability);
* **partial**: the teacher's log-probs on the student's top-k (``logp_t_on_topk_s``) are known
  only where the token is in ``S`` (NaN elsewhere);
* everything the states table keeps as a point value for a bounded quantity (``H_t``, ``rkl``,
  ``fkl``) is NaN: its ``_lo`` / ``_hi`` columns hold the interval.

Float32 round-off in ``r`` is absorbed by widening it by :data:`MASS_EPS` on the side that keeps
each bound valid.
"""

from __future__ import annotations

import torch

from .topk import topk_rows

MASS_EPS = 1e-6

COLUMN_STATUS: dict[str, str] = {
    "logp_s": "exact", "H_s": "exact", "topk_ids_s": "exact", "topk_logp_s": "exact",
    "logp_t": "exact", "topk_ids_t": "exact", "topk_logp_t": "exact",
    "logp_s_on_topk_t": "exact", "rank_s_of_top1_t": "exact", "tail_mass_t": "exact",
    "logp_t_on_topk_s": "partial",
    "H_t": "bounded", "fkl": "bounded", "rkl": "bounded_below",
}
"""Status of every states column in sparse mode (``exact`` | ``partial`` | ``bounded`` |
``bounded_below``); probe metrics derived from them inherit it (see ``METRIC_STATUS``)."""

METRIC_STATUS: dict[str, str] = {
    "overlap_ratio": "exact", "overlap_mass_s": "exact", "overlap_mass_t": "exact",
    "eq7_advantage": "exact", "sampled_reward": "exact", "reachability_top1_rank": "exact",
    "topk_mass_t": "exact", "H_s": "exact",
    "H_t": "bounded", "entropy_gap": "bounded", "fkl": "bounded", "rkl": "bounded_below",
    "thunlp_adv_intersection": "exact",
}
"""Status of the overlap / reachability metrics a sparse run still reports."""

BOUNDED = ("H_t", "rkl", "fkl")
EXTRA_COLUMNS = ("tail_mass_t", "H_t_lo", "H_t_hi", "fkl_lo", "fkl_hi", "rkl_lo", "rkl_hi")
"""Columns a sparse-mode states table has beyond the usual ones (float32)."""


def sparse_teacher_stats(zs_N_V: torch.Tensor, t_ids_N_K: torch.Tensor, t_logp_N_K: torch.Tensor,
                         t_logp_tok_N: torch.Tensor, token_N: torch.Tensor, top_k: int
                         ) -> dict[str, torch.Tensor]:
    """States columns of one chunk from the student's full (float32, temperature-scaled) logits
    and the teacher's sparse view.

    Args:
        zs_N_V: student logits over the compared vocabulary ``[0, V)``.
        t_ids_N_K, t_logp_N_K: the teacher's top-K ids and log-probs, sorted descending.
        t_logp_tok_N: the teacher's log-prob of the sampled token.
        token_N: the sampled tokens.
        top_k: list size kept in the table (``≤ K``); all K observed entries feed the bounds.
    """
    N, V = zs_N_V.shape
    K = t_ids_N_K.shape[1]
    if top_k > K:
        raise ValueError(f"top_k={top_k} exceeds the teacher's observed top-{K}")
    dev = zs_N_V.device
    t_ids, t_lp = t_ids_N_K.to(dev).long(), t_logp_N_K.to(dev).float()
    tok = token_N.to(dev).long()[:, None]
    lt_tok = t_logp_tok_N.to(dev).float()
    ls = torch.log_softmax(zs_N_V.float(), -1)
    p = ls.exp()
    # observed set S: the top-K plus the sampled token (when it is not among them)
    obs = torch.zeros((N, V), dtype=torch.bool, device=dev)
    obs.scatter_(1, t_ids, True)
    obs.scatter_(1, tok, True)
    lq_obs = torch.full((N, V), float("-inf"), device=dev)
    lq_obs.scatter_(1, tok, lt_tok[:, None])
    lq_obs.scatter_(1, t_ids, t_lp)
    q_obs = torch.where(obs, lq_obs.exp(), torch.zeros_like(p))
    mass_s = q_obs.sum(-1)
    r = (1.0 - mass_s).clamp(min=0.0)
    r_lo, r_hi = (r - MASS_EPS).clamp(min=0.0), r + MASS_EPS
    n_tail = (V - obs.sum(-1)).float()
    log_qk = t_lp[:, -1]
    tail = ~obs
    p_tail = torch.where(tail, p, torch.zeros_like(p)).sum(-1)
    ls_tail_min = torch.where(tail, ls, torch.full_like(ls, float("inf"))).amin(-1)
    has_tail = n_tail > 0
    # H(q) = H_S + H_tail
    h_obs = -torch.where(obs, q_obs * torch.where(obs, lq_obs, torch.zeros_like(ls)),
                         torch.zeros_like(p)).sum(-1)
    h_tail_lo = r_lo * (-log_qk)
    def uniform_tail(m):  # m log(n / m): the uniform tail's entropy, 0 at m = 0
        return torch.where(m > 0, m * (torch.log(n_tail.clamp(min=1)) - torch.log(m.clamp(min=1e-30))),
                           torch.zeros_like(m))

    h_tail_hi = torch.maximum(torch.maximum(uniform_tail(r_lo), uniform_tail(r_hi)), h_tail_lo)
    # KL(q‖p) = Σ_S q (log q − log p) + tail term
    fkl_obs = torch.where(obs, q_obs * (torch.where(obs, lq_obs, torch.zeros_like(ls)) - ls),
                          torch.zeros_like(p)).sum(-1)

    def xlogy(x, y):  # x log(x / y), 0 at x = 0
        return torch.where(x > 0, x * (torch.log(x.clamp(min=1e-30)) - torch.log(y)),
                           torch.zeros_like(x))

    pt = p_tail.clamp(min=1e-30)
    fkl_tail_lo = torch.minimum(xlogy(r_lo, pt), xlogy(r_hi, pt))
    slope = log_qk - ls_tail_min
    fkl_tail_hi = torch.maximum(r_lo * slope, r_hi * slope)
    # KL(p‖q) = Σ_S p (log p − log q) + tail term (≥ the two lower bounds; no upper bound)
    rkl_obs = torch.where(obs, p * (ls - torch.where(obs, lq_obs, torch.zeros_like(ls))),
                          torch.zeros_like(p)).sum(-1)
    rkl_tail_a = xlogy(p_tail, r_hi.clamp(min=1e-30))
    rkl_tail_b = torch.where(tail, p * (ls - log_qk[:, None]), torch.zeros_like(p)).sum(-1)
    rkl_tail_lo = torch.maximum(rkl_tail_a, rkl_tail_b)
    zero = torch.zeros_like(r)
    h_tail_lo, h_tail_hi = torch.where(has_tail, h_tail_lo, zero), torch.where(has_tail, h_tail_hi, zero)
    fkl_tail_lo = torch.where(has_tail, fkl_tail_lo, zero)
    fkl_tail_hi = torch.where(has_tail, fkl_tail_hi, zero)
    rkl_tail_lo = torch.where(has_tail, rkl_tail_lo, zero)
    ks_val, ks_ids = topk_rows(ls, top_k)
    lq_on_s = lq_obs.gather(1, ks_ids)
    lq_on_s = torch.where(obs.gather(1, ks_ids), lq_on_s, torch.full_like(lq_on_s, float("nan")))
    nan = torch.full_like(r, float("nan"))
    return {
        "logp_s": ls.gather(1, tok)[:, 0], "logp_t": lt_tok,
        "H_s": -(p * ls).sum(-1), "H_t": nan, "rkl": nan, "fkl": nan,
        "topk_ids_s": ks_ids, "topk_logp_s": ks_val, "logp_t_on_topk_s": lq_on_s,
        "topk_ids_t": t_ids[:, :top_k], "topk_logp_t": t_lp[:, :top_k],
        "logp_s_on_topk_t": ls.gather(1, t_ids[:, :top_k]),
        "rank_s_of_top1_t": (zs_N_V > zs_N_V.gather(1, t_ids[:, :1])).sum(-1),
        "tail_mass_t": r,
        "H_t_lo": h_obs + h_tail_lo, "H_t_hi": h_obs + h_tail_hi,
        "fkl_lo": (fkl_obs + fkl_tail_lo).clamp(min=0), "fkl_hi": (fkl_obs + fkl_tail_hi).clamp(min=0),
        "rkl_lo": (rkl_obs + rkl_tail_lo).clamp(min=0), "rkl_hi": torch.full_like(r, float("inf")),
    }
