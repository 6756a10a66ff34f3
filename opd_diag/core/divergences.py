"""Pure math shared by the capture engine, the probes and the OPD loop.

Everything here is a function of log-probabilities (or logits) over the last dimension, in
float32, with shapes named by suffix: ``_N`` positions, ``_V`` vocabulary, ``_K`` top-k slots.
The training signal and the diagnostic are therefore the same code.

Notation (DESIGN.md): at a student-visited state, ``p`` is the student and ``q`` the teacher
next-token distribution; ``S_p = TopK(p)``, ``S_q = TopK(q)``, ``I = S_p ∩ S_q``.
"""

from __future__ import annotations

import threading

import torch

# ---------------------------------------------------------------------------------------------
# Full-vocabulary quantities
# ---------------------------------------------------------------------------------------------


def log_normalizer_and_entropy(logits_N_V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(logsumexp, entropy)`` of ``softmax(logits)`` with one exp pass.

    Intuition: with ``lse = log Σ exp z`` and ``log p = z - lse``, ``H = -Σ p log p`` reuses the
    log-probabilities the normaliser already gave.
    """
    z = logits_N_V.float()
    lse_N = torch.logsumexp(z, dim=-1)
    logp = z - lse_N.unsqueeze(-1)
    # -Σ p log p term by term: no cancellation between two large numbers (lse and Σ p z)
    return lse_N, -(logp.exp() * logp).sum(-1)


#: elements of one :func:`cpu_scratch` buffer (4 MB of float32: a block of rows that stays in
#: cache while several passes read it)
SCRATCH_ELEMENTS = 1 << 20
_SCRATCH = threading.local()


def cpu_scratch(rows: int, V: int, dtype: torch.dtype) -> torch.Tensor:
    """``[2, rows, V]``: two views of this thread's reused CPU buffer, for the ``[rows, V]``
    temporaries of the capture statistics and the KL gradient (each view at least
    ``rows × V`` elements; the buffer grows to :data:`SCRATCH_ELEMENTS` per view, or one
    request where that is larger, and is kept).

    A fresh multi-megabyte tensor per pass costs page faults on a CPU: glibc hands large blocks
    back to the kernel on free. Inside the OPD loop re-faulting them cost more than the
    arithmetic (at 384 x 2,048: a row-wise dot product 1.15 ms against 0.15 ms into a reused
    buffer; the reachability rank 2.9 ms, its bool tensor summed through an int64 copy, against
    0.13 ms).
    """
    need = rows * V
    buf = getattr(_SCRATCH, "buffers", {}).get(dtype)
    if buf is None or buf.numel() < 2 * need:
        buf = torch.empty(2 * max(need, min(SCRATCH_ELEMENTS, 4 * need)), dtype=dtype)
        _SCRATCH.buffers = {**getattr(_SCRATCH, "buffers", {}), dtype: buf}
    return buf[: 2 * need].view(2, rows, V)


def softmax_dots(logits_N_V: torch.Tensor, other_N_V: torch.Tensor,
                 scratch: torch.Tensor | None = None, work: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logsumexp(z), ⟨p, z⟩, ⟨p, w⟩)`` for ``p = softmax(z)``, with one exp pass.

    The capture engine's hot path. The unnormalised ``exp(z − max z)`` goes into ``scratch``
    and the products of the two dot products into ``work`` (preallocated ``[≥N, V]`` float32
    buffers, so a block loop allocates nothing: a row-wise ``vecdot`` allocates its ``[N, V]``
    product); the normaliser divides the dot products, never the ``[N, V]`` probabilities.
    Entropy and both KLs follow from these (:func:`entropy_and_kls_from_dots`).
    """
    n = logits_N_V.shape[0]
    m = logits_N_V.amax(-1, keepdim=True)
    if scratch is None:
        e = torch.sub(logits_N_V, m).exp_()
    else:
        e = torch.sub(logits_N_V, m, out=scratch[:n]).exp_()
    total = e.sum(-1)
    if work is None:
        pz, pw = torch.linalg.vecdot(e, logits_N_V), torch.linalg.vecdot(e, other_N_V)
    else:
        pz = torch.mul(e, logits_N_V, out=work[:n]).sum(-1)
        pw = torch.mul(e, other_N_V, out=work[:n]).sum(-1)
    return m.squeeze(-1) + total.log(), pz / total, pw / total


def entropy_and_kls_from_dots(
    lse_p_N: torch.Tensor, pzp_N: torch.Tensor, pzq_N: torch.Tensor,
    lse_q_N: torch.Tensor, qzq_N: torch.Tensor, qzp_N: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(H(p), H(q), KL(p‖q), KL(q‖p))`` from normalisers and dot products.

    With ``log p = z_p − lse_p``: ``H(p) = lse_p − ⟨p, z_p⟩`` and
    ``KL(p‖q) = ⟨p, z_p⟩ − lse_p − ⟨p, z_q⟩ + lse_q`` (and symmetrically), where the dot
    products come from :func:`softmax_dots`.
    """
    h_p, h_q = lse_p_N - pzp_N, lse_q_N - qzq_N
    return h_p, h_q, (pzp_N - lse_p_N - pzq_N + lse_q_N), (qzq_N - lse_q_N - qzp_N + lse_p_N)


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


# ---------------------------------------------------------------------------------------------
# OPD objectives (per-token losses; the loop aggregates them with `aggregate_loss`)
#
# Conventions: ``student_*`` tensors carry the gradient (log-probs of the student at the
# rollout temperature, full-vocabulary normalised); ``teacher_*`` tensors are constants. Every
# objective is 0 with zero gradient when the teacher equals the student.
#
# The policy-gradient objectives (sampled-token, top-k) are written as thunlp/OPD's on-policy
# PPO loss with ratio 1: ``−A · exp(log p − stop_grad(log p))``, whose value is ``−A`` and whose
# gradient is ``−A ∇log p``, with the advantage ``A`` (the reward) detached.
# ---------------------------------------------------------------------------------------------

TOPK_STRATEGIES = ("only_stu", "only_tch", "intersection", "union", "union-intersection")
TOPK_WEIGHTINGS = ("student_p", "teacher_p", "none")
AGGREGATIONS = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean")


def _unit_ratio(student_logp: torch.Tensor) -> torch.Tensor:
    """``exp(log p − stop_grad(log p))``: 1 in value, ``∇log p`` in gradient."""
    return torch.exp(student_logp - student_logp.detach())


def sampled_token_opd_loss(student_logp_N: torch.Tensor, teacher_logp_N: torch.Tensor) -> torch.Tensor:
    """Sampled-token OPD (thunlp ``LOG_PROB_TOP_K=0``, Thinking Machines): per-token loss.

    Reward ``r_t = log q(ŷ_t) − log p(ŷ_t)`` (the k1 estimate of −KL(p‖q), detached); loss
    ``−r_t · ratio``. Value: ``log p(ŷ) − log q(ŷ)`` (the k1 reverse-KL estimate); gradient with
    respect to the student logits ``z``: ``−r_t (e_ŷ − p)``.

    Args:
        student_logp_N: ``log p(ŷ_t)`` with gradient.
        teacher_logp_N: ``log q(ŷ_t)``.
    """
    reward_N = (teacher_logp_N - student_logp_N).detach()
    return -reward_N * _unit_ratio(student_logp_N)


def topk_support(ids_s_N_K: torch.Tensor, ids_t_N_K: torch.Tensor, strategy: str
                 ) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """thunlp's support sets as masks over the two top-k lists ``S_p`` and ``S_q``.

    Returns ``(valid_s_N_K, valid_t_N_K, normalize)``: which slots of each list are in the
    support (a token in both lists counts once), and whether the weights are renormalised:

    ==================== ============================== ==========================================
    only_stu             S_p                            weights renormalised over S_p
    only_tch             S_q                            weights renormalised over S_q
    intersection         S_p ∩ S_q (student slots)      weights renormalised over the intersection
    union                S_p ∪ S_q (teacher duplicates  weights renormalised over the union
                         masked)
    union-intersection   (S_p ∖ S_q) ∪ (S_q ∖ S_p)      raw (unnormalised) weights
    ==================== ============================== ==========================================
    """
    s_in_t, t_in_s = topk_membership(ids_s_N_K, ids_t_N_K)
    yes_s, yes_t = torch.ones_like(s_in_t), torch.ones_like(t_in_s)
    no_s, no_t = torch.zeros_like(s_in_t), torch.zeros_like(t_in_s)
    table = {
        "only_stu": (yes_s, no_t, True),
        "only_tch": (no_s, yes_t, True),
        "intersection": (s_in_t, no_t, True),
        "union": (yes_s, ~t_in_s, True),
        "union-intersection": (~s_in_t, ~t_in_s, False),
    }
    if strategy not in table:
        raise ValueError(f"unknown top-k strategy {strategy!r}; use one of {TOPK_STRATEGIES}")
    return table[strategy]


def topk_weights(student_logp_N_K: torch.Tensor, teacher_logp_N_K: torch.Tensor,
                 valid_N_K: torch.Tensor, weighting: str, normalize: bool = True) -> torch.Tensor:
    """thunlp's ``compute_reward_weights``: softmax of the chosen log-probs over the valid slots.

    ``student_p`` weighs by the student, ``teacher_p`` by the teacher, ``none`` uniformly; with
    ``normalize=False`` (``union-intersection``) the raw probabilities (``none``: 1) are used.
    Invalid slots get weight 0. Always detached.
    """
    if weighting == "student_p":
        logw = student_logp_N_K
    elif weighting == "teacher_p":
        logw = teacher_logp_N_K
    elif weighting == "none":
        logw = torch.zeros_like(student_logp_N_K)
    else:
        raise ValueError(f"unknown top-k weighting {weighting!r}; use one of {TOPK_WEIGHTINGS}")
    logw = logw.detach().masked_fill(~valid_N_K, float("-inf"))
    if normalize:
        logw = logw - torch.logsumexp(logw, dim=-1, keepdim=True)
    return torch.nan_to_num(logw.exp(), nan=0.0, posinf=0.0, neginf=0.0)


def topk_opd_loss(
    student_logp_on_s_N_K: torch.Tensor, teacher_logp_on_s_N_K: torch.Tensor,
    student_logp_on_t_N_K: torch.Tensor, teacher_logp_on_t_N_K: torch.Tensor,
    ids_s_N_K: torch.Tensor, ids_t_N_K: torch.Tensor,
    strategy: str = "only_stu", weighting: str = "student_p",
) -> torch.Tensor:
    """Top-k OPD (thunlp ``dp_actor.compute_distillation_reward``): per-token loss.

    On the support ``S`` of ``strategy`` (see :func:`topk_support`), with detached weights
    ``w`` (:func:`topk_weights`) and full-vocabulary log-probs, each candidate ``v`` gets the
    reward ``A(v) = w(v) (log q(v) − log p(v))`` and the loss is ``−Σ_{v∈S} A(v) · ratio(v)``.
    Value: ``Σ_{v∈S} w(v) (log p(v) − log q(v))``; gradient w.r.t. the logits:
    ``−Σ_{v∈S} A(v) (e_v − p)`` — a score-function estimate of the subset reverse KL.

    Args:
        student_logp_on_s_N_K / teacher_logp_on_s_N_K: both models on the student's top-k ids.
        student_logp_on_t_N_K / teacher_logp_on_t_N_K: both models on the teacher's top-k ids.
        ids_s_N_K / ids_t_N_K: the two top-k id lists (set membership decides the support).
    """
    valid_s, valid_t, normalize = topk_support(ids_s_N_K, ids_t_N_K, strategy)
    lp_N_2K = torch.cat([student_logp_on_s_N_K, student_logp_on_t_N_K], dim=-1)
    lq_N_2K = torch.cat([teacher_logp_on_s_N_K, teacher_logp_on_t_N_K], dim=-1)
    valid_N_2K = torch.cat([valid_s, valid_t], dim=-1)
    w_N_2K = topk_weights(lp_N_2K, lq_N_2K, valid_N_2K, weighting, normalize)
    diff = torch.where(valid_N_2K, lq_N_2K - lp_N_2K, torch.zeros_like(lq_N_2K))
    advantage_N_2K = (w_N_2K * diff).detach()
    return -(advantage_N_2K * _unit_ratio(lp_N_2K)).sum(-1)


def reverse_kl_loss(student_logp_N_V: torch.Tensor, teacher_logp_N_V: torch.Tensor) -> torch.Tensor:
    """Full-vocabulary reverse KL(p‖q) per token with its exact gradient (GKD / TRL ``beta=1``).

    Gradient w.r.t. the student logits: ``p(v) (log p(v) − log q(v) − KL(p‖q))``.
    """
    return reverse_kl(student_logp_N_V, teacher_logp_N_V)


class _KLFromStats(torch.autograd.Function):
    """See :func:`kl_loss_from_stats`."""

    @staticmethod
    def forward(ctx, zs_N_V, zt_N_V, lse_s_N, lse_t_N, value_N, reverse: bool):
        ctx.save_for_backward(zs_N_V, zt_N_V, lse_s_N, lse_t_N, value_N.detach())
        ctx.reverse = reverse
        return value_N.detach().clone()

    @staticmethod
    def backward(ctx, grad_N):
        zs, zt, lse_s, lse_t, value = ctx.saved_tensors
        zs, g = zs.detach(), grad_N[:, None]
        grad = torch.sub(zs, lse_s[:, None]).exp_()  # p, then the gradient in place
        c = (lse_t - lse_s - value)[:, None] * g if ctx.reverse else None
        # the second [N, V] operand per block of rows in a reused buffer on a CPU (a fresh
        # multi-megabyte tensor costs page faults there), all at once elsewhere
        N, V = zs.shape
        work = None
        rows = N
        if zs.device.type == "cpu":
            rows = max(1, SCRATCH_ELEMENTS // max(V, 1))
            work = cpu_scratch(min(rows, N), V, zs.dtype)[1]
        for lo in range(0, N, rows):
            hi, part = lo + rows, grad[lo: lo + rows]
            out = None if work is None else work[: len(part)]
            if ctx.reverse:
                # p (log p − log q − KL(p‖q)) = p (zs − zt + lse_t − lse_s − KL), scaled by the
                # incoming gradient before the product (the capture rejects non-finite logits,
                # so no 0·log 0 terms reach this)
                part.mul_(torch.sub(zs[lo:hi], zt[lo:hi], out=out).mul_(g[lo:hi]).add_(c[lo:hi]))
            else:  # (p − q) · g
                part.sub_(torch.sub(zt[lo:hi], lse_t[lo:hi, None], out=out).exp_()).mul_(g[lo:hi])
        return grad, None, None, None, None, None


def kl_loss_from_stats(zs_N_V: torch.Tensor, zt_N_V: torch.Tensor, lse_s_N: torch.Tensor,
                       lse_t_N: torch.Tensor, value_N: torch.Tensor, reverse: bool = True
                       ) -> torch.Tensor:
    """Full-vocabulary KL per token between ``softmax(zs)`` and ``softmax(zt)``, differentiable
    in the student logits ``zs``, from statistics already computed.

    The OPD loop's capture engine has each position's normalisers and exact KLs
    (:func:`softmax_dots`, :func:`entropy_and_kls_from_dots`) from the same logits, so the
    loss *value* is ``value_N`` (``KL(p‖q)`` with ``reverse``, else ``KL(q‖p)``) and only the
    gradient is computed, in backward, with the closed forms of :func:`reverse_kl_loss`
    (``p (log p − log q − KL)``) and :func:`forward_kl_loss` (``p − q``). That replaces the
    log-softmax, exp and product passes of the autograd form (and the ``[N, V]`` tensors they
    keep for backward) by one recomputation from the logits. ``zt`` and the statistics carry no
    gradient.
    """
    return _KLFromStats.apply(zs_N_V, zt_N_V.detach(), lse_s_N.detach(), lse_t_N.detach(),
                              value_N, reverse)


def forward_kl_loss(student_logp_N_V: torch.Tensor, teacher_logp_N_V: torch.Tensor) -> torch.Tensor:
    """Full-vocabulary forward KL(q‖p) at student-visited states (TRL ``beta=0``).

    Gradient w.r.t. the student logits: ``p − q`` — it points at the teacher's token even where
    the student gives it almost no mass, which reverse KL cannot (feasibility.md §4).
    """
    return forward_kl(student_logp_N_V, teacher_logp_N_V)


class _JSDFromStats(torch.autograd.Function):
    """See :func:`jsd_loss_from_stats`."""

    @staticmethod
    def forward(ctx, zs_N_V, zt_N_V, lse_s_N, lse_t_N, beta: float):
        lp = torch.sub(zs_N_V, lse_s_N[:, None])
        p = lp.exp()
        lq = torch.sub(zt_N_V, lse_t_N[:, None])
        q = lq.exp()
        log_m = torch.lerp(p, q, beta).log_()  # M = β q + (1 − β) p
        kl_q = torch.linalg.vecdot(q, lq.sub_(log_m))  # KL(q‖M)
        d_p = lp.sub_(log_m)  # log p − log M
        kl_p = torch.linalg.vecdot(p, d_p)  # KL(p‖M)
        ctx.save_for_backward(p, d_p, kl_p)
        ctx.beta = beta
        return beta * kl_q + (1 - beta) * kl_p

    @staticmethod
    def backward(ctx, grad_N):
        p, d_p, kl_p = ctx.saved_tensors
        c = (1 - ctx.beta) * grad_N[:, None]
        # ∂JSD/∂z = p ((1 − β)(log p − log M) − Σ_u p(u) (1 − β)(log p − log M)(u))
        return p.mul_(torch.addcmul(-kl_p[:, None] * c, d_p, c)), None, None, None, None


def jsd_loss_from_stats(zs_N_V: torch.Tensor, zt_N_V: torch.Tensor, lse_s_N: torch.Tensor,
                        lse_t_N: torch.Tensor, beta: float) -> torch.Tensor:
    """:func:`generalized_jsd_loss` for ``0 < β < 1`` from the logits and their normalisers
    (the capture statistics), with the closed-form gradient of its docstring: about a dozen
    ``[N, V]`` passes in forward and backward together, where the autograd form takes two to
    three times as many. Differentiable in the student logits ``zs`` only."""
    if not 0.0 < beta < 1.0:
        raise ValueError(f"jsd_loss_from_stats needs 0 < beta < 1, got {beta}")
    return _JSDFromStats.apply(zs_N_V, zt_N_V.detach(), lse_s_N.detach(), lse_t_N.detach(),
                               float(beta))


def generalized_jsd_loss(student_logp_N_V: torch.Tensor, teacher_logp_N_V: torch.Tensor,
                         beta: float) -> torch.Tensor:
    """Generalised JSD(β) per token in TRL's convention (β=0 forward, β=1 reverse KL).

    For ``0 < β < 1``, with ``m = β q + (1 − β) p``, ``∂JSD/∂p(v) = (1 − β) log(p(v)/m(v))``, so
    the gradient w.r.t. the logits is ``p(v) (g(v) − Σ_u p(u) g(u))`` with that ``g``.
    """
    return generalized_jsd(student_logp_N_V, teacher_logp_N_V, beta)


def aggregate_loss(loss_N: torch.Tensor, seq_N: torch.Tensor, n_seqs: int,
                   mode: str = "token-mean") -> torch.Tensor:
    """Reduce per-token losses to a scalar (verl/thunlp ``agg_loss`` modes).

    ``token-mean``: Σ over all tokens / number of tokens (thunlp's default, TRL's
    ``num_items_in_batch``); ``seq-mean-token-sum``: mean over sequences of the per-sequence
    sum; ``seq-mean-token-mean``: mean over sequences of the per-sequence mean.

    Args:
        seq_N: index in ``[0, n_seqs)`` of the sequence each token belongs to.
    """
    if mode == "token-mean":
        return loss_N.sum() / max(loss_N.numel(), 1)
    if mode not in AGGREGATIONS:
        raise ValueError(f"unknown loss aggregation {mode!r}; use one of {AGGREGATIONS}")
    sums = torch.zeros(n_seqs, dtype=loss_N.dtype, device=loss_N.device).index_add(0, seq_N, loss_N)
    if mode == "seq-mean-token-mean":
        counts = torch.bincount(seq_N, minlength=n_seqs).clamp(min=1).to(loss_N.dtype)
        sums = sums / counts
    return sums.mean()
