"""Capture with a sparse teacher (``--teacher-topk-only K``): the student is scored in full, the
teacher only through its top-K log-probs and the log-prob of the sampled token at each position.

The teacher's view is a :class:`TeacherTopK` — from a served teacher (an OpenAI-compatible
``/v1/completions`` response, :mod:`opd_diag.integrations.openai`) or, to check what the mode
loses, from a local teacher whose full logits are censored to that view (:func:`local_topk`).
The math and each column's status (exact / partial / bounded) are in :mod:`opd_diag.core.sparse`.

Temperature: a served teacher's log-probs are what the server returns (vLLM and OpenAI-style
servers report temperature-1 log-probs). :func:`local_topk` applies the capture temperature
to the local teacher, so a censored local teacher matches a full capture at any temperature.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core.errors import OpdDiagError
from ..core.sparse import EXTRA_COLUMNS, sparse_teacher_stats
from ..core.topk import topk_rows
from .capture import _CHUNK_ELEMENTS, final_hidden, lm_head_logits, prediction_index


@dataclass
class TeacherTopK:
    """The teacher at every completion position of a batch (rows in rollout order, then t).

    Attributes:
        ids: ``[N, K]`` top-K token ids, log-probs descending.
        logp: ``[N, K]`` their log-probs (normalised over the teacher's whole vocabulary).
        logp_token: ``[N]`` the log-prob of the completion token at each position.
    """

    ids: np.ndarray
    logp: np.ndarray
    logp_token: np.ndarray

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids, dtype=np.int64)
        self.logp = np.asarray(self.logp, dtype=np.float32)
        self.logp_token = np.asarray(self.logp_token, dtype=np.float32)
        if self.ids.ndim != 2 or self.ids.shape != self.logp.shape:
            raise OpdDiagError(f"teacher top-k: ids {self.ids.shape} and logp {self.logp.shape} "
                               "must both be [positions, K]")
        if len(self.logp_token) != len(self.ids):
            raise OpdDiagError(f"teacher top-k: {len(self.logp_token)} sampled-token log-probs "
                               f"for {len(self.ids)} positions")
        if not np.isfinite(self.logp).all() or not np.isfinite(self.logp_token).all():
            raise OpdDiagError("teacher top-k: log-probs must be finite (a -inf top-k entry "
                               "means the server returned fewer than K alternatives)")
        order = np.argsort(-self.logp, axis=1, kind="stable")
        self.ids = np.take_along_axis(self.ids, order, 1)
        self.logp = np.take_along_axis(self.logp, order, 1)

    @property
    def k(self) -> int:
        return int(self.ids.shape[1])


@torch.no_grad()
def local_topk(teacher, prompt_ids: list[list[int]], completion_ids: list[list[int]], *, k: int,
               temperature: float = 1.0, vocab: int, pad_id: int,
               chunk_tokens: int | None = None) -> TeacherTopK:
    """A local teacher censored to what a served one returns: top-``k`` + sampled-token log-prob."""
    temp = temperature if temperature > 0 else 1.0
    ids, mask, row_N, pred_N, _, token_N = prediction_index(prompt_ids, completion_ids, pad_id)
    dev = next(teacher.parameters()).device
    h = final_hidden(teacher, ids.to(dev), mask.to(dev))
    h = h[torch.from_numpy(row_N).to(dev), torch.from_numpy(pred_N).to(dev)]
    chunk = chunk_tokens or max(1, _CHUNK_ELEMENTS // vocab)
    out_ids, out_lp, out_tok = [], [], []
    for lo in range(0, len(row_N), chunk):
        z = lm_head_logits(teacher, h[lo: lo + chunk])[:, :vocab].float().div_(temp)
        lq = torch.log_softmax(z, -1)
        v, i = topk_rows(lq, k)
        out_ids.append(i.cpu())
        out_lp.append(v.cpu())
        out_tok.append(lq.gather(1, token_N[lo: lo + chunk].to(dev)[:, None])[:, 0].cpu())
    return TeacherTopK(torch.cat(out_ids).numpy(), torch.cat(out_lp).numpy(),
                       torch.cat(out_tok).numpy())


@torch.no_grad()
def score_states_topk_only(student, teacher_view: TeacherTopK, prompt_ids: list[list[int]],
                           completion_ids: list[list[int]], *, top_k: int,
                           temperature: float = 1.0, vocab: int, pad_id: int,
                           chunk_tokens: int | None = None) -> dict[str, np.ndarray]:
    """:func:`opd_diag.states.capture.score_states`'s columns with a sparse teacher, plus the
    interval columns of :data:`opd_diag.core.sparse.EXTRA_COLUMNS`."""
    if top_k > teacher_view.k:
        raise OpdDiagError(f"--top-k {top_k} exceeds the teacher's observed top-{teacher_view.k} "
                           f"(--teacher-topk-only): lower --top-k to ≤ {teacher_view.k}")
    if int(teacher_view.ids.max(initial=0)) >= vocab:
        raise OpdDiagError(f"teacher top-k holds token ids ≥ the compared vocabulary ({vocab}); "
                           "is the served teacher using the same tokenizer?")
    temp = temperature if temperature > 0 else 1.0
    ids, mask, row_N, pred_N, t_N, token_N = prediction_index(prompt_ids, completion_ids, pad_id)
    N = len(row_N)
    if len(teacher_view.ids) != N:
        raise OpdDiagError(f"teacher top-k covers {len(teacher_view.ids)} positions; the batch "
                           f"has {N} completion positions")
    dev = next(student.parameters()).device
    h = final_hidden(student, ids.to(dev), mask.to(dev))
    h = h[torch.from_numpy(row_N).to(dev), torch.from_numpy(pred_N).to(dev)]
    chunk = chunk_tokens or max(1, _CHUNK_ELEMENTS // vocab)
    parts = []
    for lo in range(0, N, chunk):
        hi = min(N, lo + chunk)
        zs = lm_head_logits(student, h[lo:hi])[:, :vocab].float().div_(temp)
        cols = sparse_teacher_stats(zs, torch.from_numpy(teacher_view.ids[lo:hi]),
                                    torch.from_numpy(teacher_view.logp[lo:hi]),
                                    torch.from_numpy(teacher_view.logp_token[lo:hi]),
                                    token_N[lo:hi], top_k)
        parts.append({k: v.cpu().numpy() for k, v in cols.items()})
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    for k, v in out.items():
        out[k] = v.astype(np.int32 if "ids" in k or k.startswith("rank") else np.float32)
    out.update(row=row_N, t=t_N.astype(np.int32), token=token_N.numpy().astype(np.int32))
    assert set(EXTRA_COLUMNS) <= set(out)
    return out
