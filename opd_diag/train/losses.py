"""The student's differentiable side of an OPD step: one forward with grad, then the objective.

Context: the capture engine has already scored every visited state under both models (no grad)
and kept what the sampled-token and top-k objectives need from the teacher: ``logp_t`` on the
sampled token, ``logp_t_on_topk_s`` and ``topk_logp_t`` on both top-k lists. So those objectives
never run the teacher again; only the full-vocabulary objectives (reverse/forward KL, JSD) need
the teacher's whole distribution and run its backbone once more.

Memory: the LM head is applied to chunks of positions; with more than one chunk each chunk runs
under activation checkpointing, so autograd keeps ``[chunk, V]`` logits for one chunk at a time
(recomputed in backward) instead of ``[N, V]`` for the whole batch.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch
from torch.utils.checkpoint import checkpoint

from .. import divergences as D
from ..capture import final_hidden, lm_head_logits
from .config import TrainConfig

_CHUNK_ELEMENTS = 1 << 24


def states_tensors(table: pa.Table, columns: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Columns of a states table as tensors (fixed-size lists → ``[N, K]``), without pandas."""
    out = {}
    for name in columns:
        col = table.column(name).combine_chunks()
        if pa.types.is_fixed_size_list(col.type):
            arr = col.flatten().to_numpy().reshape(len(col), col.type.list_size)
        else:
            arr = col.to_numpy()
        out[name] = torch.from_numpy(np.array(arr, copy=True))
    return out


def _hidden_at_predictions(model, prompt_ids, completion_ids, pad_id) -> tuple[torch.Tensor, ...]:
    """Final hidden states at every position that predicts a completion token (rollout order)."""
    seqs = [list(p) + list(c) for p, c in zip(prompt_ids, completion_ids, strict=True)]
    L = max(map(len, seqs))
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    rows, preds = [], []
    for b, (s, p, c) in enumerate(zip(seqs, prompt_ids, completion_ids, strict=True)):
        ids[b, : len(s)], mask[b, : len(s)] = torch.tensor(s), 1
        rows.append(np.full(len(c), b))
        preds.append(np.arange(len(p) - 1, len(p) + len(c) - 1))
    row_N, pred_N = (torch.from_numpy(np.concatenate(x)) for x in (rows, preds))
    dev = next(model.parameters()).device
    h_B_L_H = final_hidden(model, ids.to(dev), mask.to(dev))
    return h_B_L_H[row_N.to(dev), pred_N.to(dev)], row_N


def _chunk_loss_fn(student, teacher, cfg: TrainConfig, vocab: int, temp: float):
    """Per-token loss of one chunk: ``fn(h_s_N_H, h_t_N_H | None, *state tensors) -> loss_N``."""
    def logp(model, h):
        z = lm_head_logits(model, h)[:, :vocab].float() / temp
        return torch.log_softmax(z, dim=-1)

    def fn(h_s, h_t, token, logp_t, ids_s, lq_on_s, ids_t, lq_t):
        lp_N_V = logp(student, h_s)
        if cfg.objective == "sampled_token":
            return D.sampled_token_opd_loss(lp_N_V.gather(1, token[:, None])[:, 0], logp_t)
        if cfg.objective == "topk":
            return D.topk_opd_loss(lp_N_V.gather(1, ids_s), lq_on_s, lp_N_V.gather(1, ids_t), lq_t,
                                   ids_s, ids_t, cfg.strategy, cfg.weighting)
        with torch.no_grad():
            lq_N_V = logp(teacher, h_t).to(lp_N_V.device)
        if cfg.objective == "reverse_kl":
            return D.reverse_kl_loss(lp_N_V, lq_N_V)
        if cfg.objective == "forward_kl":
            return D.forward_kl_loss(lp_N_V, lq_N_V)
        return D.generalized_jsd_loss(lp_N_V, lq_N_V, cfg.beta)
    return fn


def opd_loss(student, teacher, prompt_ids: list[list[int]], completion_ids: list[list[int]],
             states: pa.Table, cfg: TrainConfig, *, vocab: int, pad_id: int,
             chunk_tokens: int | None = None) -> tuple[torch.Tensor, int]:
    """The aggregated OPD loss (with grad) of one batch of rollouts, and its token count.

    Args:
        prompt_ids, completion_ids: the rollouts whose states are in ``states`` (same order,
            non-empty completions), as produced by ``capture_rollouts``.
        states: the captured states table of these rollouts.
        vocab: compared vocabulary (``pair.compare_vocab``).
    """
    k = cfg.top_k
    cols = states_tensors(states, ("token", "logp_t", "topk_ids_s", "logp_t_on_topk_s",
                                   "topk_ids_t", "topk_logp_t"))
    extras = [cols["token"].long(), cols["logp_t"], cols["topk_ids_s"][:, :k].long(),
              cols["logp_t_on_topk_s"][:, :k], cols["topk_ids_t"][:, :k].long(),
              cols["topk_logp_t"][:, :k]]
    h_s, row_N = _hidden_at_predictions(student, prompt_ids, completion_ids, pad_id)
    h_t = None
    if cfg.needs_teacher_logits:
        with torch.no_grad():
            h_t, _ = _hidden_at_predictions(teacher, prompt_ids, completion_ids, pad_id)
    dev = h_s.device
    extras = [x.to(dev) for x in extras]
    fn = _chunk_loss_fn(student, teacher, cfg, vocab, cfg.temperature)
    N = h_s.shape[0]
    chunk = chunk_tokens or max(1, _CHUNK_ELEMENTS // vocab)
    parts = []
    for lo in range(0, N, chunk):
        sl = slice(lo, min(N, lo + chunk))
        args = (h_s[sl], None if h_t is None else h_t[sl], *(x[sl] for x in extras))
        parts.append(fn(*args) if chunk >= N else checkpoint(fn, *args, use_reentrant=False))
    loss_N = torch.cat(parts)
    loss = D.aggregate_loss(loss_N, row_N.to(dev), len(prompt_ids), cfg.aggregation)
    return loss, N
