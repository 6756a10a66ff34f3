"""One OPD micro-batch: a single forward per model gives both the loss and the states table.

Context: the diagnostics need both models' statistics at every visited state (the capture
engine's ``states`` columns) and the objective needs the student's log-probs *with grad* at the
same states. Both come from the same logits, so the student runs once, with grad, and the
teacher once, without: per chunk of positions the captured statistics are computed from the
*detached* student logits by the capture engine's own :func:`~opd_diag.states.capture.chunk_stats`
(the states table is the one ``opd-diag capture`` writes, column for column), and the objective
from the live ones. The full-vocabulary objectives (reverse/forward KL, JSD) reuse the same
teacher logits; nothing runs a model twice.

Memory: the LM heads are applied to chunks of positions. With more than one chunk each chunk's
objective runs under activation checkpointing, so autograd keeps ``[chunk, V]`` logits for one
chunk at a time (recomputed in backward) and never ``[N, V]``; the captured statistics are
computed once, in the first pass, and reused by the recomputation.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint

from ..core import divergences as D
from ..states.capture import (
    check_head,
    chunk_stats,
    empty_scored,
    final_hidden,
    lm_head_logits,
    prediction_index,
    store_chunk,
)
from .config import TrainConfig

_CHUNK_ELEMENTS = 1 << 24


class StudentStates(torch.nn.Module):
    """The student's differentiable forward, up to its final hidden states at the predicting
    positions. Under ``torchrun`` this module is what ``DistributedDataParallel`` wraps (the LM
    head is applied outside, chunk by chunk, and still gets its gradients all-reduced)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids_B_L, mask_B_L, row_N, pred_N) -> torch.Tensor:
        # HF gradient checkpointing acts only on layers in training mode: switch the decoder
        # layers alone (not their dropout submodules) while the student otherwise stays in eval
        layers = [m for m in self.model.modules() if getattr(m, "gradient_checkpointing", False)]
        for m in layers:
            m.training = True
        try:
            return final_hidden(self.model, ids_B_L, mask_B_L)[row_N, pred_N]
        finally:
            for m in layers:
                m.training = False


def loss_denominator(cfg: TrainConfig, n_tokens: int, n_rollouts: int) -> int:
    """What the aggregated loss divides by: tokens (``token-mean``) or sequences (``seq-mean-*``)."""
    return n_tokens if cfg.aggregation == "token-mean" else n_rollouts


def _objective(cfg: TrainConfig, zs: torch.Tensor, zt: torch.Tensor | None,
               st: dict[str, torch.Tensor], token_N: torch.Tensor) -> torch.Tensor:
    """Per-token loss from the student's live logits ``zs`` and the chunk's captured statistics."""
    k = cfg.top_k
    if cfg.objective in ("sampled_token", "topk"):
        lse_s = torch.logsumexp(zs, dim=-1, keepdim=True)
        if cfg.objective == "sampled_token":
            return D.sampled_token_opd_loss((zs.gather(1, token_N[:, None]) - lse_s)[:, 0],
                                            st["logp_t"])
        ids_s, ids_t = st["topk_ids_s"][:, :k], st["topk_ids_t"][:, :k]
        return D.topk_opd_loss(zs.gather(1, ids_s) - lse_s, st["logp_t_on_topk_s"][:, :k],
                               zs.gather(1, ids_t) - lse_s, st["topk_logp_t"][:, :k],
                               ids_s, ids_t, cfg.strategy, cfg.weighting)
    if cfg.objective in ("reverse_kl", "forward_kl"):  # value captured, gradient in closed form
        reverse = cfg.objective == "reverse_kl"
        return D.kl_loss_from_stats(zs, zt, st["lse_s"], st["lse_t"],
                                    st["rkl" if reverse else "fkl"], reverse=reverse)
    if 0.0 < cfg.beta < 1.0:  # value and closed-form gradient from the logits' normalisers
        return D.jsd_loss_from_stats(zs, zt, st["lse_s"], st["lse_t"], cfg.beta)
    lp_N_V = torch.log_softmax(zs, dim=-1)
    lq_N_V = zt - st["lse_t"][:, None]
    return D.generalized_jsd_loss(lp_N_V, lq_N_V, cfg.beta)


def _compared(logits_N_W: torch.Tensor, vocab: int) -> torch.Tensor:
    """The compared vocabulary's columns of a head's logits (the tensor itself when that is all
    of them)."""
    return logits_N_W if logits_N_W.shape[-1] == vocab else logits_N_W[:, :vocab]


def opd_forward(student_states: torch.nn.Module, student, teacher,
                prompt_ids: list[list[int]], completion_ids: list[list[int]], cfg: TrainConfig,
                *, vocab: int, pad_id: int, denominator: int,
                chunk_tokens: int | None = None) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
    """The OPD loss (with grad) of a micro-batch of rollouts and its captured states.

    Args:
        student_states: :class:`StudentStates` of ``student`` (or its DDP wrapper).
        prompt_ids, completion_ids: the rollouts (non-empty completions).
        vocab: compared vocabulary (``pair.compare_vocab``).
        denominator: :func:`loss_denominator` of the *whole* step (all micro-batches, all ranks),
            so the micro-batch losses sum to the step's loss and their gradients to its gradient.

    Returns:
        ``(loss, scored)``: ``scored`` has :func:`opd_diag.states.capture.score_states`'s columns.
    """
    for role, model in (("student", student), ("teacher", teacher)):
        check_head(model, prompt_ids[0], completion_ids[0], role)  # once per model
    ids, mask, row_N, pred_N, t_N, token_N = prediction_index(prompt_ids, completion_ids, pad_id)
    s_dev, t_dev = (next(m.parameters()).device for m in (student, teacher))
    idx = [torch.from_numpy(x) for x in (row_N, pred_N)]
    h_s = student_states(ids.to(s_dev), mask.to(s_dev), *(x.to(s_dev) for x in idx))
    with torch.no_grad():
        h_t = final_hidden(teacher, ids.to(t_dev), mask.to(t_dev))[idx[0].to(t_dev),
                                                                    idx[1].to(t_dev)]
    temp, N = cfg.temperature, len(row_N)
    tok_N = token_N.to(s_dev)
    scored, captured = empty_scored(N, cfg.capture_top_k), {}

    def chunk_loss(lo: int, h_s_n: torch.Tensor, h_t_n: torch.Tensor) -> torch.Tensor:
        hi = lo + len(h_s_n)
        # float32, outside autocast; no slice or division that is a no-op (each would cost
        # an [n, V] pass in backward)
        zs = _compared(lm_head_logits(student, h_s_n), vocab)
        if temp != 1.0:
            zs = zs / temp
        st, zt = captured.get(lo), None
        if st is None or cfg.needs_teacher_logits:  # a recomputation needs no new statistics
            with torch.no_grad():
                zt = _compared(lm_head_logits(teacher, h_t_n), vocab)
                zt = (zt.div_(temp) if temp != 1.0 else zt).to(s_dev)
        if st is None:
            st = captured[lo] = chunk_stats(zs.detach(), zt, tok_N[lo:hi], cfg.capture_top_k,
                                            row_N[lo:hi])
            store_chunk(scored, lo, st)
        return _objective(cfg, zs, zt, st, tok_N[lo:hi])

    chunk = chunk_tokens or max(1, _CHUNK_ELEMENTS // vocab)
    parts = []
    for lo in range(0, N, chunk):
        args = (lo, h_s[lo: lo + chunk], h_t[lo: lo + chunk])
        parts.append(chunk_loss(*args) if chunk >= N
                     else checkpoint(chunk_loss, *args, use_reentrant=False))
    loss_N = torch.cat(parts)
    n_rows = len(prompt_ids)
    local = loss_denominator(cfg, N, n_rows)
    loss = D.aggregate_loss(loss_N, idx[0].to(s_dev), n_rows, cfg.aggregation) * (local / denominator)
    scored.update(row=row_N, t=t_N.astype(np.int32), token=token_N.numpy().astype(np.int32))
    return loss, scored


def idle_forward(student_states: torch.nn.Module, student, pad_id: int) -> torch.Tensor:
    """A zero loss that touches every parameter: a rank with no tokens in a micro-batch still
    takes part in DDP's gradient all-reduce."""
    dev = next(student.parameters()).device
    ids, mask = torch.full((1, 1), pad_id, device=dev), torch.ones((1, 1), dtype=torch.long, device=dev)
    zero = torch.zeros(1, dtype=torch.long, device=dev)
    return lm_head_logits(student, student_states(ids, mask, zero, zero)).sum() * 0.0
