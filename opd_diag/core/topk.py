"""Row-wise top-k of wide logit rows, the capture engine's most expensive pass on CPU.

``torch.topk`` over a 152K-token row on a CPU costs about as much as the exp and dot-product
passes together (it looks at every element with a branchy selection). The k largest entries
of a row, though, lie in the k blocks of the row with the largest block maxima: an entry in any
other block is beaten by the k block maxima above it. So :func:`topk_rows` takes the maxima of
fixed-size blocks (one vectorised pass), the top k of those, and the top k of the ``k × block``
candidates they hold. The values are ``torch.topk``'s exactly; among exactly equal values the
chosen indices may differ (``torch.topk`` promises no order among ties either). NaN counts as
the largest value, as in ``torch.topk``, since a block holding one has a NaN maximum.

Used on CPU for rows of at least :data:`BLOCK_TOPK_MIN_V` entries (2-5x faster there,
``benchmarks/capture.py``); narrower rows and accelerators call ``torch.topk``.
"""

from __future__ import annotations

import torch

#: entries per block whose maximum stands for it
BLOCK = 64
#: narrowest row (on CPU) that goes through block maxima; below it ``torch.topk`` is as fast
BLOCK_TOPK_MIN_V = 8192


def topk_rows(x_N_V: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk(x_N_V, k, dim=-1)`` (largest first, sorted) of a 2-d tensor: ``(values,
    indices)``, each ``[N, k]``. ``x_N_V`` may be a column slice of a wider tensor."""
    n, V = x_N_V.shape
    n_blocks = V // BLOCK
    if x_N_V.device.type != "cpu" or V < BLOCK_TOPK_MIN_V or n_blocks < 4 * k \
            or x_N_V.stride(-1) != 1:
        return x_N_V.topk(k, dim=-1)
    maxima = x_N_V[:, : n_blocks * BLOCK].view(n, n_blocks, BLOCK).amax(-1)
    blocks = maxima.topk(k, dim=-1, sorted=False).indices
    offsets = torch.arange(BLOCK, device=x_N_V.device)
    candidates = (blocks[:, :, None] * BLOCK + offsets).view(n, k * BLOCK)
    if n_blocks * BLOCK < V:  # the short last block is always a candidate
        rest = torch.arange(n_blocks * BLOCK, V, device=x_N_V.device).expand(n, -1)
        candidates = torch.cat([candidates, rest], 1)
    values, where = x_N_V.gather(1, candidates).topk(k, dim=-1)
    return values, candidates.gather(1, where)
