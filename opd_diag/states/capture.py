"""Both models at every student-visited state, as one table, in bounded memory.

For each rollout (prompt + student completion) we run one student and one teacher forward pass
up to the final hidden states, then apply each LM head to a chunk of completion positions at a
time. Per chunk we need the log-normaliser, the entropy, the top-k and a few gathers; all come
from one exp pass and one top-k pass over ``[chunk, V]`` logits, so peak extra memory scales
with ``chunk × V`` and never with ``T × V`` (a float32 ``[B, T, V]`` log-softmax of a 1,024-token
Qwen rollout is 620 MB per model; a 220-row chunk is 128 MB).

One states row per completion position t (the state is prompt + student tokens < t):

=====================  =======================================================================
token                  the student's sampled token ŷ_t
logp_s, logp_t         log p(ŷ_t), log q(ŷ_t) (full vocabulary, at the rollout temperature)
H_s, H_t               full-vocabulary entropies of p and q
rkl, fkl               exact KL(p ‖ q) and KL(q ‖ p) over the full vocabulary
topk_ids_s, topk_logp_s, logp_t_on_topk_s    student top-k, both models' log-probs on it
topk_ids_t, topk_logp_t, logp_s_on_topk_t    teacher top-k, both models' log-probs on it
rank_s_of_top1_t       rank of the teacher's top-1 token in the student's distribution (0 = the
                       student's own argmax): how far the teacher's correction is from reach
=====================  =======================================================================
"""

from __future__ import annotations

import weakref
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from ..core.divergences import (
    SCRATCH_ELEMENTS,
    cpu_scratch,
    entropy_and_kls_from_dots,
    softmax_dots,
)
from ..core.errors import OpdDiagError
from ..core.topk import topk_rows

# 32M floats = 128 MB per [chunk, V] float32 buffer. Each chunk re-reads both LM heads'
# weights, so bigger chunks are faster (at V = 152K a 1,056-row head GEMM takes 2.26 s in one
# piece, 2.88 s in 220-row chunks, 3.27 s in 110-row chunks) and cost memory: 220 rows keep
# peak extra memory under 1/8 of a naive float32 capture (benchmarks/capture.py).
_CHUNK_ELEMENTS = 1 << 25
# On CPU the statistics walk a chunk in blocks of rows that stay in cache (4 MB per [rows, V]
# float32 block): the exp, dot-product, top-k and rank passes then read each block from cache
# instead of streaming the whole chunk from memory once per pass (3x faster at V = 152K); the
# block is the size of a reused cpu_scratch buffer.
_BLOCK_ELEMENTS = SCRATCH_ELEMENTS


@dataclass
class CaptureConfig:
    """How states are captured.

    Attributes:
        top_k: size of the top-k lists kept for both models (default 16, as the paper).
        batch_size: rollouts per forward pass.
        chunk_tokens: completion positions per LM-head chunk; None picks ``32M / V``.
        teacher_topk_only: sparse teacher mode (``--teacher-topk-only K``): the teacher is
            seen only through its top-K log-probs and the sampled token's (``states/sparse.py``).
    """

    top_k: int = 16
    batch_size: int = 8
    chunk_tokens: int | None = None
    teacher_topk_only: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.top_k, int) or self.top_k <= 0:
            raise OpdDiagError(f"top_k must be a positive integer, got {self.top_k!r}")
        if self.batch_size <= 0:
            raise OpdDiagError(f"capture batch_size must be positive, got {self.batch_size}")
        if self.chunk_tokens is not None and self.chunk_tokens <= 0:
            raise OpdDiagError(f"chunk_tokens must be positive, got {self.chunk_tokens}")
        if self.teacher_topk_only is not None and not (
                isinstance(self.teacher_topk_only, int) and self.teacher_topk_only >= self.top_k):
            raise OpdDiagError(f"--teacher-topk-only {self.teacher_topk_only} must be an integer "
                               f"≥ --top-k ({self.top_k}): the teacher's top-k lists come from it")

    def to_dict(self) -> dict:
        return asdict(self)


def lm_head_logits(model, hidden_N_H: torch.Tensor) -> torch.Tensor:
    """A causal LM's output head in float32, with the config's logit scalings.

    The product runs in float32 whatever the model's dtype (bf16 logits tie and shuffle the
    top-k tail), outside any autocast, and stays differentiable for a float32 (master-weight)
    student. Scalings: Cohere ``logit_scale`` (×), Granite ``logits_scaling`` (÷), Gemma
    ``final_logit_softcapping``. Anything else a model's forward does to its logits (e.g.
    MiniCPM's hidden scaling) is caught by :func:`check_head` on a capture's first batch.
    """
    head = model.get_output_embeddings()
    with torch.autocast(hidden_N_H.device.type, enabled=False):
        if isinstance(head, torch.nn.Linear):
            bias = None if head.bias is None else head.bias.float()
            logits = torch.nn.functional.linear(hidden_N_H.float(), head.weight.float(), bias)
        else:
            logits = head(hidden_N_H).float()
    cfg = model.config
    scale = getattr(cfg, "logit_scale", None)
    if isinstance(scale, (int, float)) and not isinstance(scale, bool):
        logits = logits * scale
    granite = getattr(cfg, "logits_scaling", None)
    if isinstance(granite, (int, float)) and not isinstance(granite, bool) and granite != 1:
        logits = logits / granite
    cap = getattr(cfg, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


_HEAD_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_HEAD_POSITIONS = 4


def _head_tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """(atol, rtol): 1e-3, widened to the resolution of the model's dtype (its bf16 logits are
    rounded products, so the error scales with the position's largest logit)."""
    return 1e-3, max(1e-3, 2 * torch.finfo(dtype).eps)


@torch.no_grad()
def check_head(model, prompt_ids: list[int], completion_ids: list[int], role: str) -> None:
    """Stop unless :func:`lm_head_logits` reproduces ``model(...).logits`` on this rollout.

    Run once per model (the first batch of a capture or of training): one rollout, a few
    completion positions, the same single-row input for both paths (so the decoder's numbers
    are identical and only the heads are compared), tolerance 1e-3 in the model's dtype.
    """
    if model in _HEAD_CHECKED:
        return
    dev = next(model.parameters()).device
    ids, mask, _, pred_N, _, _ = prediction_index([prompt_ids], [completion_ids], 0)
    pick = np.unique(np.linspace(0, len(pred_N) - 1, _HEAD_POSITIONS).round().astype(int))
    pos = torch.from_numpy(pred_N[pick]).to(dev)
    ids, mask = ids.to(dev), mask.to(dev)
    ours = lm_head_logits(model, final_hidden(model, ids, mask)[0, pos])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    try:  # only the picked positions' logits (a full [L, V] would be GBs at real lengths)
        theirs = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                       use_cache=False, logits_to_keep=pos).logits[0].float()
    except TypeError:  # a forward without logits_to_keep
        theirs = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                       use_cache=False).logits[0, pos].float()
    if theirs.shape[0] != len(pos):
        theirs = theirs[pos]
    dtype = next(model.parameters()).dtype
    if torch.is_autocast_enabled(dev.type):  # the training loop's bf16 autocast
        dtype = torch.get_autocast_dtype(dev.type)
    atol, rtol = _head_tolerance(dtype)
    err = (ours - theirs).abs()
    bad = err > atol + rtol * theirs.abs().amax(-1, keepdim=True)  # rounding scales with the row
    if bool(bad.any()):
        arch = (getattr(model.config, "architectures", None) or [type(model).__name__])[0]
        raise OpdDiagError(
            f"the {role}'s output head is not reproduced by the capture engine: {arch} "
            f"(model_type {getattr(model.config, 'model_type', '?')!r}) changes its logits in "
            f"a way lm_head_logits does not know (max |diff| {float(err.max()):.4g} over "
            f"{len(pick)} positions, tolerance {atol:g} + {rtol:g}·max|logit|). Captured "
            "distributions would differ from the ones the sampler used; this architecture is "
            "not supported yet (please report it with its config.json)")
    _HEAD_CHECKED[model] = True


def final_hidden(model, input_ids_B_L: torch.Tensor, mask_B_L: torch.Tensor) -> torch.Tensor:
    """Final (post-norm) hidden states of a right-padded batch, without computing logits."""
    base = model.base_model if model.base_model is not model else None
    if base is None:
        raise OpdDiagError(
            f"{type(model).__name__} has no separate decoder (base_model); cannot capture states"
        )
    positions = (mask_B_L.cumsum(-1) - 1).clamp(min=0)
    out = base(input_ids=input_ids_B_L, attention_mask=mask_B_L, position_ids=positions,
               use_cache=False)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


def _right_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def _check_finite(lse: torch.Tensor, role: str, rows: np.ndarray) -> None:
    if not torch.isfinite(lse).all():
        bad = int(rows[int((~torch.isfinite(lse)).nonzero()[0, 0])])
        raise OpdDiagError(
            f"the {role} produced NaN/inf logits (rollout row {bad} of the batch); check the "
            f"checkpoint and dtype (try --{role}-dtype float32)"
        )


def prediction_index(prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int
                     ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray, np.ndarray,
                                torch.Tensor]:
    """A right-padded batch and where its completion tokens are predicted.

    Position i predicts token i+1, so completion token j of row b is predicted at P_b + j − 1.

    Returns:
        ``(ids_B_L, mask_B_L, row_N, pred_N, t_N, token_N)``: one entry per completion position,
        rows in rollout order, then t.
    """
    seqs = [list(p) + list(c) for p, c in zip(prompt_ids, completion_ids, strict=True)]
    ids, mask = _right_pad(seqs, pad_id)
    rows, preds, tgt_t = [], [], []
    for b, (p, c) in enumerate(zip(prompt_ids, completion_ids, strict=True)):
        rows.append(np.full(len(c), b))
        preds.append(np.arange(len(p) - 1, len(p) + len(c) - 1))
        tgt_t.append(np.arange(len(c)))
    row_N, pred_N, t_N = (np.concatenate(x) for x in (rows, preds, tgt_t))
    token_N = ids[torch.from_numpy(row_N), torch.from_numpy(pred_N + 1)]
    return ids, mask, row_N, pred_N, t_N, token_N


def chunk_stats(zs: torch.Tensor, zt: torch.Tensor, token_N: torch.Tensor, top_k: int,
                rows: np.ndarray) -> dict[str, torch.Tensor]:
    """The states columns of one chunk from both models' float32, temperature-scaled logits.

    One exp pass per model (normaliser, entropy and both KLs from dot products of the same
    unnormalised probabilities) and one top-k pass (:func:`~opd_diag.core.topk.topk_rows`:
    through block maxima on wide CPU rows). On CPU the chunk is walked in cache-sized
    blocks of rows (``_BLOCK_ELEMENTS``) whose temporaries go into the thread's reused
    :func:`~opd_diag.core.divergences.cpu_scratch` buffers; on an accelerator it is one block. ``zs`` and ``zt`` (``[n, V]``, same device) must not require grad; the OPD
    loop passes the detached logits of its differentiable student forward.

    Args:
        token_N: the sampled tokens of these positions.
        rows: batch row of each position (named in the NaN/inf error).
    """
    n, V = zs.shape
    tok_N = token_N.to(zs.device)
    if zs.device.type != "cpu":
        return _block_stats(zs, zt, tok_N, top_k, rows, None)
    block = max(1, _BLOCK_ELEMENTS // max(V, 1))
    scratch = cpu_scratch(min(block, n), V, zs.dtype)
    if block >= n:
        return _block_stats(zs, zt, tok_N, top_k, rows, scratch)
    parts = [_block_stats(zs[lo: lo + block], zt[lo: lo + block], tok_N[lo: lo + block], top_k,
                          rows[lo: lo + block], scratch) for lo in range(0, n, block)]
    return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}


def _block_stats(zs: torch.Tensor, zt: torch.Tensor, tok_N: torch.Tensor, top_k: int,
                 rows: np.ndarray, scratch: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """One block's statistics; ``scratch`` is :func:`~opd_diag.core.divergences.cpu_scratch`
    (CPU) or ``None``."""
    n = zs.shape[0]
    exp_buf, work = (None, None) if scratch is None else (scratch[0, :n], scratch[1, :n])
    lse_s, pzp, pzq = softmax_dots(zs, zt, exp_buf, work)
    lse_t, qzq, qzp = softmax_dots(zt, zs, exp_buf, work)
    if not bool(torch.isfinite(lse_s + lse_t + pzp + pzq + qzq + qzp).all()):  # one sync
        # a NaN/+inf logit breaks its model's normaliser; a −inf one leaves that finite but not
        # the dot products with the model's logits (pzp, qzp: the student's; qzq, pzq: the
        # teacher's)
        _check_finite(lse_s, "student", rows)
        _check_finite(lse_t, "teacher", rows)
        _check_finite(pzp + qzp, "student", rows)
        _check_finite(qzq + pzq, "teacher", rows)
    h_s, h_t, rkl, fkl = entropy_and_kls_from_dots(lse_s, pzp, pzq, lse_t, qzq, qzp)
    tok = tok_N[:, None]
    ks_val, ks_ids = topk_rows(zs, top_k)
    kt_val, kt_ids = topk_rows(zt, top_k)
    return {
        "logp_s": zs.gather(1, tok)[:, 0] - lse_s,
        "logp_t": zt.gather(1, tok)[:, 0] - lse_t,
        "H_s": h_s, "H_t": h_t,
        "rkl": rkl.clamp_(min=0), "fkl": fkl.clamp_(min=0),
        "topk_ids_s": ks_ids, "topk_logp_s": ks_val - lse_s[:, None],
        "logp_t_on_topk_s": zt.gather(1, ks_ids) - lse_t[:, None],
        "topk_ids_t": kt_ids, "topk_logp_t": kt_val - lse_t[:, None],
        "logp_s_on_topk_t": zs.gather(1, kt_ids) - lse_s[:, None],
        "rank_s_of_top1_t": _count_above(zs, zs.gather(1, kt_ids[:, :1]), work),
        "lse_s": lse_s, "lse_t": lse_t,
    }


def _count_above(z_N_V: torch.Tensor, threshold_N_1: torch.Tensor,
                 work: torch.Tensor | None) -> torch.Tensor:
    """How many entries of each row exceed its threshold (int64 ``[N]``). With a float
    ``work`` buffer the comparison lands there and is summed in float32, exact below 2^24
    columns (a bool tensor's sum goes through an int64 copy of it)."""
    if work is None or z_N_V.shape[-1] >= 2**24:
        return (z_N_V > threshold_N_1).sum(-1)
    return torch.gt(z_N_V, threshold_N_1, out=work).sum(-1).long()


def empty_scored(N: int, top_k: int) -> dict[str, np.ndarray]:
    """Preallocated output columns of :func:`score_states` for ``N`` positions."""
    out = {name: np.empty(N, np.float32) for name in ("logp_s", "logp_t", "H_s", "H_t", "rkl", "fkl")}
    out["rank_s_of_top1_t"] = np.empty(N, np.int32)
    for name in ("topk_ids_s", "topk_ids_t"):
        out[name] = np.empty((N, top_k), np.int32)
    for name in ("topk_logp_s", "logp_t_on_topk_s", "topk_logp_t", "logp_s_on_topk_t"):
        out[name] = np.empty((N, top_k), np.float32)
    return out


def store_chunk(out: dict[str, np.ndarray], lo: int, cols: dict[str, torch.Tensor]) -> None:
    """Copy a :func:`chunk_stats` result into rows ``lo:`` of :func:`empty_scored` columns."""
    for name, arr in out.items():
        value = cols[name]
        arr[lo: lo + len(value)] = value.cpu().numpy()


@torch.no_grad()
def score_states(
    student,
    teacher,
    prompt_ids: list[list[int]],
    completion_ids: list[list[int]],
    *,
    top_k: int,
    temperature: float = 1.0,
    vocab: int,
    pad_id: int,
    chunk_tokens: int | None = None,
) -> dict[str, np.ndarray]:
    """Score every completion position of a batch under both models.

    Args:
        student, teacher: HF causal LMs (any devices / dtypes; results are float32 on CPU).
        prompt_ids, completion_ids: per rollout; completions must be non-empty.
        top_k: top-k size for both models.
        temperature: logits are divided by it (the rollout temperature; 0 is treated as 1).
        vocab: ids ``[0, vocab)`` are compared (the shared tokenizer range).
        pad_id: any id; padded positions are never read.
        chunk_tokens: positions per head application; None picks ``32M / vocab``.

    Returns:
        Column arrays with one entry per completion position (rows in rollout order, then t):
        ``row`` (index into the batch), ``t``, ``token`` and the columns of the module docstring.
    """
    if top_k > vocab:
        raise OpdDiagError(f"top_k={top_k} exceeds the compared vocabulary ({vocab} tokens)")
    temp = temperature if temperature > 0 else 1.0
    ids, mask, row_N, pred_N, t_N, token_N = prediction_index(prompt_ids, completion_ids, pad_id)

    for role, model in (("student", student), ("teacher", teacher)):
        check_head(model, prompt_ids[0], completion_ids[0], role)  # once per model
    hidden = {}
    for role, model in (("student", student), ("teacher", teacher)):
        dev = next(model.parameters()).device
        h = final_hidden(model, ids.to(dev), mask.to(dev))
        hidden[role] = h[torch.from_numpy(row_N).to(dev), torch.from_numpy(pred_N).to(dev)]
        del h
    N = len(row_N)
    chunk = chunk_tokens or max(1, _CHUNK_ELEMENTS // vocab)
    out = empty_scored(N, top_k)
    s_dev = next(student.parameters()).device
    for lo in range(0, N, chunk):
        hi = min(N, lo + chunk)
        zs = lm_head_logits(student, hidden["student"][lo:hi])[:, :vocab]
        zt = lm_head_logits(teacher, hidden["teacher"][lo:hi])[:, :vocab]
        if temp != 1.0:
            zs, zt = zs.div_(temp), zt.div_(temp)
        store_chunk(out, lo, chunk_stats(zs, zt.to(s_dev), token_N[lo:hi], top_k, row_N[lo:hi]))
        del zs, zt
    out.update(row=row_N, t=t_N.astype(np.int32), token=token_N.numpy().astype(np.int32))
    return out


_LIST_COLUMNS = ("topk_ids_s", "topk_logp_s", "logp_t_on_topk_s",
                 "topk_ids_t", "topk_logp_t", "logp_s_on_topk_t")


def states_table(scored: dict[str, np.ndarray], rollout_ids: list[str], steps: list[int],
                 n_tokens: list[int]) -> pa.Table:
    """Arrow table of states rows: id columns, scalars, and top-k lists as fixed-size lists."""
    row = scored["row"]
    cols = {
        "rollout_id": pa.array(np.asarray(rollout_ids, dtype=object)[row], pa.string()),
        "step": pa.array(np.asarray(steps, dtype=np.int64)[row]),
        "t": pa.array(scored["t"]),
        "T": pa.array(np.asarray(n_tokens, dtype=np.int32)[row]),
        "token": pa.array(scored["token"]),
    }
    for name in ("logp_s", "logp_t", "H_s", "H_t", "rkl", "fkl", "rank_s_of_top1_t"):
        cols[name] = pa.array(scored[name])
    for name in ("tail_mass_t", "H_t_lo", "H_t_hi", "fkl_lo", "fkl_hi", "rkl_lo", "rkl_hi"):
        if name in scored:  # sparse-teacher intervals (core/sparse.py)
            cols[name] = pa.array(scored[name])
    for name in _LIST_COLUMNS:
        arr = scored[name]
        cols[name] = pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), arr.shape[1])
    return pa.table(cols)


def states_frame(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas()
