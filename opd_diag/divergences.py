"""Pure math shared by the capture engine, the probes and the OPD loop.

Everything here is a function of log-probabilities (or logits) over the last dimension, in
float32, with shapes named by suffix: ``_N`` positions, ``_V`` vocabulary, ``_K`` top-k slots.
The training signal and the diagnostic are therefore the same code.

Notation (DESIGN.md): at a student-visited state, ``p`` is the student and ``q`` the teacher
next-token distribution; ``S_p = TopK(p)``, ``S_q = TopK(q)``, ``I = S_p ∩ S_q``.
"""

from __future__ import annotations

import torch

# ---------------------------------------------------------------------------------------------
# Full-vocabulary quantities
# ---------------------------------------------------------------------------------------------


def log_normalizer_and_entropy(logits_N_V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(logsumexp, entropy)`` of ``softmax(logits)`` with one exp pass.

    Intuition: with ``lse = log Σ exp z``, ``p = exp(z - lse)`` and ``H = -Σ p (z - lse) =
    lse - Σ p z``, so the entropy costs one extra multiply-add over the probabilities we
    already need for the normaliser.
    """
    z = logits_N_V.float()
    lse_N = torch.logsumexp(z, dim=-1)
    p = (z - lse_N.unsqueeze(-1)).exp_()
    return lse_N, lse_N - (p * z).sum(-1)


def softmax_stats(logits_N_V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(probs, logsumexp)`` of float32 logits with a single exp pass.

    The capture engine's hot path: everything else it needs (entropy, both KLs) is a dot
    product of these probabilities with the logits, see :func:`entropy_and_kls`.
    """
    m = logits_N_V.amax(-1, keepdim=True)
    p = torch.sub(logits_N_V, m).exp_()
    total = p.sum(-1, keepdim=True)
    p.div_(total)
    return p, (m + total.log()).squeeze(-1)


def entropy_and_kls(
    p_N_V: torch.Tensor, lse_p_N: torch.Tensor, z_p_N_V: torch.Tensor,
    q_N_V: torch.Tensor, lse_q_N: torch.Tensor, z_q_N_V: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(H(p), H(q), KL(p‖q), KL(q‖p))`` from probabilities, normalisers and logits.

    With ``log p = z_p − lse_p``: ``H(p) = lse_p − ⟨p, z_p⟩`` and
    ``KL(p‖q) = ⟨p, z_p⟩ − lse_p − ⟨p, z_q⟩ + lse_q`` — four dot products, no ``[N, V]``
    temporaries.
    """
    pzp, pzq = torch.linalg.vecdot(p_N_V, z_p_N_V), torch.linalg.vecdot(p_N_V, z_q_N_V)
    qzq, qzp = torch.linalg.vecdot(q_N_V, z_q_N_V), torch.linalg.vecdot(q_N_V, z_p_N_V)
    h_p, h_q = lse_p_N - pzp, lse_q_N - qzq
    return h_p, h_q, (pzp - lse_p_N - pzq + lse_q_N), (qzq - lse_q_N - qzp + lse_p_N)


def entropy(logp_N_V: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of each row of log-probabilities."""
    p = logp_N_V.exp()
    return -(p * torch.where(p > 0, logp_N_V, torch.zeros_like(logp_N_V))).sum(-1)


def kl(logp_a_N_V: torch.Tensor, logp_b_N_V: torch.Tensor) -> torch.Tensor:
    """KL(a ‖ b) = Σ_v a(v) (log a(v) − log b(v)) per row; 0·log 0 terms count as 0."""
    a = logp_a_N_V.exp()
    diff = torch.where(a > 0, logp_a_N_V - logp_b_N_V, torch.zeros_like(a))
    return (a * diff).sum(-1)


def reverse_kl(student_logp_N_V: torch.Tensor, teacher_logp_N_V: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q): the OPD objective per token (mode-seeking, evaluated on student states)."""
    return kl(student_logp_N_V, teacher_logp_N_V)


def forward_kl(student_logp_N_V: torch.Tensor, teacher_logp_N_V: torch.Tensor) -> torch.Tensor:
    """KL(q ‖ p): mass-covering; its gradient reaches tokens the student never samples."""
    return kl(teacher_logp_N_V, student_logp_N_V)


def generalized_jsd(
    student_logp_N_V: torch.Tensor, teacher_logp_N_V: torch.Tensor, beta: float
) -> torch.Tensor:
    """Generalised JSD of GKD (Agarwal et al. 2024) in TRL's convention, per row.

    ``M = β q + (1 − β) p``; ``JSD_β = β KL(q ‖ M) + (1 − β) KL(p ‖ M)``. ``β = 0`` is the
    forward KL(q ‖ p) and ``β = 1`` the reverse KL(p ‖ q) (the limits, taken exactly).
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    if beta == 0.0:
        return forward_kl(student_logp_N_V, teacher_logp_N_V)
    if beta == 1.0:
        return reverse_kl(student_logp_N_V, teacher_logp_N_V)
    b = torch.tensor(beta, dtype=student_logp_N_V.dtype, device=student_logp_N_V.device)
    mix = torch.logaddexp(student_logp_N_V + torch.log1p(-b), teacher_logp_N_V + torch.log(b))
    return beta * kl(teacher_logp_N_V, mix) + (1 - beta) * kl(student_logp_N_V, mix)


# ---------------------------------------------------------------------------------------------
# Top-k sets
# ---------------------------------------------------------------------------------------------


def topk_membership(ids_a_N_K: torch.Tensor, ids_b_N_K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks ``(a_in_b, b_in_a)``: which slots of each top-k list the other list holds."""
    eq = ids_a_N_K.unsqueeze(-1) == ids_b_N_K.unsqueeze(-2)  # N, K_a, K_b
    return eq.any(-1), eq.any(-2)


def renormalize(logp_N_K: torch.Tensor, mask_N_K: torch.Tensor) -> torch.Tensor:
    """Log-probs renormalised over the masked slots (−inf elsewhere; rows with no slot: NaN)."""
    masked = logp_N_K.masked_fill(~mask_N_K, float("-inf"))
    return masked - torch.logsumexp(masked, dim=-1, keepdim=True)


def overlap_token_advantage(
    student_logp_N_K: torch.Tensor, teacher_logp_N_K: torch.Tensor, mask_N_K: torch.Tensor
) -> torch.Tensor:
    """The paper's Eq. 7 per position: ``(1/|I|) Σ_{v∈I} p̄(v) (log q̄(v) − log p̄(v))``.

    ``p̄, q̄`` are the two distributions renormalised over ``I`` (given as ``mask`` over the
    slots of one top-k list holding both models' full-vocabulary log-probs). The sum is
    ``−KL(p̄ ‖ q̄)``, so the value is ≤ 0 and rises toward 0 as OPD aligns the pair. Positions
    with an empty intersection give NaN.
    """
    p_bar = renormalize(student_logp_N_K, mask_N_K)
    q_bar = renormalize(teacher_logp_N_K, mask_N_K)
    term = torch.where(mask_N_K, p_bar.exp() * (q_bar - p_bar), torch.zeros_like(p_bar))
    size = mask_N_K.sum(-1)
    out = term.sum(-1) / size.clamp(min=1)
    return out.masked_fill(size == 0, float("nan"))


def thunlp_advantage_terms(
    student_logp_N_K: torch.Tensor, teacher_logp_N_K: torch.Tensor, mask_N_K: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """thunlp/OPD's logged ``adv_intersection`` as ``(sum over I, |I|)`` per position.

    The code form: weights ``p̃ = softmax over the student's top-K`` (not over ``I``), terms
    ``p̃(v) (log q(v) − log p(v))`` with full-vocabulary log-probs, then a token-pooled mean over
    all (position, token) pairs in ``I``. Returning the sum and the count lets callers pool.
    """
    weights = torch.softmax(student_logp_N_K.float(), dim=-1)
    term = weights * (teacher_logp_N_K - student_logp_N_K)
    return torch.where(mask_N_K, term, torch.zeros_like(term)).sum(-1), mask_N_K.sum(-1)


def overlap_masses(
    student_topk_logp_N_K: torch.Tensor,
    s_in_t_N_K: torch.Tensor,
    teacher_topk_logp_N_K: torch.Tensor,
    t_in_s_N_K: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Overlap mass (paper App. B.1, Eqs. 9–10): ``Σ_{v∈I} p(v)`` and ``Σ_{v∈I} q(v)``."""
    mass_s = (student_topk_logp_N_K.exp() * s_in_t_N_K).sum(-1)
    mass_t = (teacher_topk_logp_N_K.exp() * t_in_s_N_K).sum(-1)
    return mass_s, mass_t
