import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import log_softmax as np_log_softmax
from scipy.stats import entropy as scipy_entropy

from opd_diag import divergences as D


def _rand_logp(n, v, seed, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(torch.randn(n, v, generator=g) * scale, dim=-1)


def test_kl_and_entropy_match_scipy():
    p, q = _rand_logp(5, 40, 0), _rand_logp(5, 40, 1)
    for i in range(5):
        pi, qi = p[i].exp().double().numpy(), q[i].exp().double().numpy()
        assert D.reverse_kl(p, q)[i].item() == pytest.approx(scipy_entropy(pi, qi), abs=1e-5)
        assert D.forward_kl(p, q)[i].item() == pytest.approx(scipy_entropy(qi, pi), abs=1e-5)
        assert D.entropy(p)[i].item() == pytest.approx(scipy_entropy(pi), abs=1e-5)


def test_one_pass_entropy_matches_log_softmax():
    z = torch.randn(7, 300, generator=torch.Generator().manual_seed(0)) * 5
    lse, h = D.log_normalizer_and_entropy(z)
    assert torch.allclose(lse, torch.logsumexp(z, -1), atol=1e-5)
    assert torch.allclose(h, D.entropy(torch.log_softmax(z, -1)), atol=1e-5)


def test_softmax_dots_give_entropy_and_both_kls():
    g = torch.Generator().manual_seed(3)
    zp, zq = torch.randn(6, 500, generator=g) * 4, torch.randn(6, 500, generator=g) * 4
    scratch = torch.full((8, 500), float("nan"))  # stale contents must not leak into results
    lse_p, pzp, pzq = D.softmax_dots(zp, zq, scratch)
    lse_q, qzq, qzp = D.softmax_dots(zq, zp)
    h_p, h_q, rkl, fkl = D.entropy_and_kls_from_dots(lse_p, pzp, pzq, lse_q, qzq, qzp)
    lp, lq = torch.log_softmax(zp, -1), torch.log_softmax(zq, -1)
    assert torch.allclose(lse_p, torch.logsumexp(zp, -1), atol=1e-5)
    assert torch.allclose(h_p, D.entropy(lp), atol=1e-4)
    assert torch.allclose(h_q, D.entropy(lq), atol=1e-4)
    assert torch.allclose(rkl, D.reverse_kl(lp, lq), atol=1e-4)
    assert torch.allclose(fkl, D.forward_kl(lp, lq), atol=1e-4)


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 1.0])
def test_generalized_jsd_matches_trl(beta):
    trl = pytest.importorskip("trl.experimental.gkd.gkd_trainer")
    s, t = torch.randn(2, 6, 50) * 2, torch.randn(2, 6, 50) * 2
    ours = D.generalized_jsd(torch.log_softmax(s, -1), torch.log_softmax(t, -1), beta).sum()
    ref = trl.GKDTrainer.generalized_jsd_loss(s, t, beta=beta, reduction="sum")
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-5)


def test_identical_distributions_give_zero_everything():
    p = _rand_logp(4, 30, 2)
    assert torch.allclose(D.reverse_kl(p, p), torch.zeros(4), atol=1e-6)
    assert torch.allclose(D.generalized_jsd(p, p, 0.5), torch.zeros(4), atol=1e-6)
    vals, ids = p.topk(8, dim=-1)
    a_in_b, b_in_a = D.topk_membership(ids, ids)
    assert a_in_b.all() and b_in_a.all()
    assert torch.allclose(D.overlap_token_advantage(vals, vals, a_in_b), torch.zeros(4), atol=1e-6)
    ms, mt = D.overlap_masses(vals, a_in_b, vals, b_in_a)
    assert torch.allclose(ms, vals.exp().sum(-1)) and torch.allclose(mt, ms)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 12), scale=st.floats(0.1, 8.0))
def test_eq7_is_minus_kl_over_intersection_size(seed, k, scale):
    rng = np.random.default_rng(seed)
    v = 20
    lp = np_log_softmax(rng.normal(size=v) * scale)
    lq = np_log_softmax(rng.normal(size=v) * scale)
    s_ids, t_ids = np.argsort(-lp)[:k], np.argsort(-lq)[:k]
    inter = np.intersect1d(s_ids, t_ids)
    mask = torch.from_numpy(np.isin(s_ids, t_ids))[None]
    adv = D.overlap_token_advantage(torch.tensor(lp[s_ids])[None], torch.tensor(lq[s_ids])[None],
                                    mask).item()
    if len(inter) == 0:
        assert np.isnan(adv)
        return
    p_bar = np.exp(lp[inter]) / np.exp(lp[inter]).sum()
    q_bar = np.exp(lq[inter]) / np.exp(lq[inter]).sum()
    expected = -scipy_entropy(p_bar, q_bar) / len(inter)
    assert adv == pytest.approx(expected, abs=1e-6)
    assert adv <= 1e-9


def test_thunlp_form_differs_from_eq7_and_is_pooled():
    p, q = _rand_logp(3, 30, 5), _rand_logp(3, 30, 6)
    vals, ids = p.topk(8, dim=-1)
    q_on = q.gather(1, ids)
    _, t_ids = q.topk(8, dim=-1)
    mask, _ = D.topk_membership(ids, t_ids)
    s, n = D.thunlp_advantage_terms(vals, q_on, mask)
    w = torch.softmax(vals, -1)
    manual = torch.where(mask, w * (q_on - vals), torch.zeros_like(w)).sum(-1)
    assert torch.allclose(s, manual) and torch.equal(n, mask.sum(-1))


def test_cpu_scratch_is_reused_per_thread_and_grows():
    """The capture statistics' and the KL gradient's temporaries live in one buffer per thread
    (a fresh multi-megabyte tensor per pass costs page faults on a CPU)."""
    import threading

    a = D.cpu_scratch(8, 100, torch.float32)
    assert a.shape == (2, 8, 100)
    b = D.cpu_scratch(4, 50, torch.float32)  # smaller: the same storage
    assert b.data_ptr() == a.data_ptr()
    big = D.cpu_scratch(2, D.SCRATCH_ELEMENTS, torch.float32)  # larger than any block: grows
    assert big.shape == (2, 2, D.SCRATCH_ELEMENTS)
    assert D.cpu_scratch(8, 100, torch.float32).data_ptr() == big.data_ptr()
    assert D.cpu_scratch(8, 100, torch.float64).dtype == torch.float64  # one buffer per dtype
    other = []
    thread = threading.Thread(target=lambda: other.append(D.cpu_scratch(8, 100, torch.float32)))
    thread.start()
    thread.join()
    assert other[0].data_ptr() != big.data_ptr()  # threads never share a buffer


def test_softmax_dots_with_a_work_buffer_equal_vecdot():
    g = torch.Generator().manual_seed(0)
    z, w = torch.randn(6, 300, generator=g) * 3, torch.randn(6, 300, generator=g) * 3
    plain = D.softmax_dots(z, w)
    buffers = torch.empty(2, 6, 300)
    for a, b in zip(plain, D.softmax_dots(z, w, buffers[0], buffers[1]), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
