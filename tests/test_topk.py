"""topk_rows (core/topk.py): torch.topk's values and indices through block maxima on wide rows."""

from __future__ import annotations

import pytest
import torch

from opd_diag.core import topk as T
from opd_diag.core.topk import topk_rows


@pytest.mark.parametrize("V", [8192, 9000, 32000, 50257])
@pytest.mark.parametrize("k", [1, 16, 64])
def test_equals_torch_topk(V, k):
    g = torch.Generator().manual_seed(V + k)
    x = torch.randn(7, V, generator=g) * 4
    # rows whose large entries crowd into one block, or sit in the short last block
    x[1, 128:128 + 64] += 30
    x[2, -5:] += 30
    x[3, ::97] += 20
    values, ids = topk_rows(x, k)
    ref_v, ref_i = x.topk(k, dim=-1)
    assert torch.equal(values, ref_v)
    assert torch.equal(ids, ref_i)


def test_column_slice_of_a_wider_head():
    x = torch.randn(5, 40_000, generator=torch.Generator().manual_seed(0))
    part = x[:, :33_333]  # the compared vocabulary of a padded head
    values, ids = topk_rows(part, 16)
    assert torch.equal(values, part.topk(16, dim=-1).values)
    assert torch.equal(ids, part.topk(16, dim=-1).indices)
    assert int(ids.max()) < 33_333


def test_ties_give_a_valid_top_k():
    x = torch.zeros(3, 16_384)
    x[0, ::512] = 1.0  # 32 equal maxima, 16 wanted
    x[1, 100:140] = 2.0
    x[2] = torch.arange(16_384.0) % 7  # many equal values across every block
    values, ids = topk_rows(x, 16)
    ref = x.topk(16, dim=-1).values
    assert torch.equal(values, ref)
    assert torch.equal(x.gather(1, ids), values)  # the indices hold those values
    assert all(len(set(row)) == 16 for row in ids.tolist())


def test_non_finite_entries_like_torch():
    x = torch.randn(3, 10_000, generator=torch.Generator().manual_seed(1))
    x[0, 4321] = float("nan")
    x[1, :5000] = float("-inf")
    x[2, 77] = float("inf")
    values, ids = topk_rows(x, 8)
    ref_v, ref_i = x.topk(8, dim=-1)
    assert torch.equal(values.nan_to_num(), ref_v.nan_to_num())
    assert torch.equal(ids, ref_i)


def test_narrow_rows_and_small_block_counts_use_torch_topk(monkeypatch):
    calls = []
    real = torch.Tensor.topk

    def spy(self, *a, **kw):
        calls.append(tuple(self.shape))
        return real(self, *a, **kw)

    monkeypatch.setattr(torch.Tensor, "topk", spy)
    topk_rows(torch.randn(4, T.BLOCK_TOPK_MIN_V - 1), 16)  # narrow row
    topk_rows(torch.randn(4, 20_000), 100)  # k too large for 312 blocks
    assert calls == [(4, T.BLOCK_TOPK_MIN_V - 1), (4, 20_000)]
    calls.clear()
    topk_rows(torch.randn(4, 20_000), 16)  # block maxima, then the candidates
    assert calls == [(4, 20_000 // T.BLOCK), (4, 16 * T.BLOCK + 20_000 % T.BLOCK)]


def test_capture_statistics_at_a_wide_vocabulary_match_torch_topk():
    from opd_diag.states.capture import chunk_stats

    g = torch.Generator().manual_seed(3)
    zs, zt = torch.randn(6, 12_000, generator=g) * 3, torch.randn(6, 12_000, generator=g) * 3
    st = chunk_stats(zs, zt, torch.zeros(6, dtype=torch.long), 16, __import__("numpy").zeros(6))
    assert torch.equal(st["topk_ids_s"], zs.topk(16, dim=-1).indices)
    assert torch.equal(st["topk_ids_t"], zt.topk(16, dim=-1).indices)
