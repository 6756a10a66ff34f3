"""OPD objectives: zero at teacher = student, closed-form gradients, TRL equivalence."""

from __future__ import annotations

import os

import pytest
import torch

from opd_diag import divergences as D

N, V, K = 5, 12, 4


def _logits(seed: int, scale: float = 2.0) -> torch.Tensor:
    return torch.randn(N, V, generator=torch.Generator().manual_seed(seed)) * scale


def _topk_inputs(z_s: torch.Tensor, lq_N_V: torch.Tensor, k: int = K):
    lp = torch.log_softmax(z_s, -1)
    ids_s = lp.detach().topk(k, -1).indices
    ids_t = lq_N_V.topk(k, -1).indices
    return (lp.gather(1, ids_s), lq_N_V.gather(1, ids_s), lp.gather(1, ids_t),
            lq_N_V.gather(1, ids_t), ids_s, ids_t)


def _loss(objective: str, z_s: torch.Tensor, lq_N_V: torch.Tensor, token_N: torch.Tensor,
          strategy: str = "only_stu", weighting: str = "student_p", beta: float = 0.5):
    lp = torch.log_softmax(z_s, -1)
    if objective == "sampled_token":
        return D.sampled_token_opd_loss(lp.gather(1, token_N[:, None])[:, 0],
                                        lq_N_V.gather(1, token_N[:, None])[:, 0])
    if objective == "topk":
        return D.topk_opd_loss(*_topk_inputs(z_s, lq_N_V), strategy, weighting)
    if objective == "reverse_kl":
        return D.reverse_kl_loss(lp, lq_N_V)
    if objective == "forward_kl":
        return D.forward_kl_loss(lp, lq_N_V)
    return D.generalized_jsd_loss(lp, lq_N_V, beta)


ALL = [("sampled_token", {}), ("reverse_kl", {}), ("forward_kl", {}), ("jsd", {"beta": 0.3})] + [
    ("topk", {"strategy": s, "weighting": w}) for s in D.TOPK_STRATEGIES for w in D.TOPK_WEIGHTINGS]


@pytest.mark.parametrize(("objective", "kw"), ALL)
def test_teacher_equals_student_gives_zero_loss_and_gradient(objective, kw):
    z = _logits(0).requires_grad_()
    lq = torch.log_softmax(z.detach(), -1)
    token = torch.randint(0, V, (N,), generator=torch.Generator().manual_seed(1))
    loss = _loss(objective, z, lq, token, **kw)
    loss.sum().backward()
    assert loss.abs().max() < 1e-6
    assert z.grad.abs().max() < 1e-6


def _grad(objective, z0, lq, token, **kw):
    z = z0.clone().requires_grad_()
    _loss(objective, z, lq, token, **kw).sum().backward()
    return z.grad


def test_full_vocab_gradients_match_closed_forms():
    z0, lq = _logits(0), torch.log_softmax(_logits(1), -1)
    token = torch.zeros(N, dtype=torch.long)
    p, q, lp = torch.softmax(z0, -1), lq.exp(), torch.log_softmax(z0, -1)
    rkl = (p * (lp - lq)).sum(-1, keepdim=True)
    torch.testing.assert_close(_grad("reverse_kl", z0, lq, token), p * (lp - lq - rkl))
    torch.testing.assert_close(_grad("forward_kl", z0, lq, token), p - q)
    beta = 0.3
    g = (1 - beta) * (lp - torch.log(beta * q + (1 - beta) * p))
    expected = p * (g - (p * g).sum(-1, keepdim=True))
    torch.testing.assert_close(_grad("jsd", z0, lq, token, beta=beta), expected)


def test_policy_gradient_objectives_match_closed_forms():
    z0, lq = _logits(2), torch.log_softmax(_logits(3), -1)
    p, lp = torch.softmax(z0, -1), torch.log_softmax(z0, -1)
    token = torch.randint(0, V, (N,), generator=torch.Generator().manual_seed(4))
    onehot = torch.nn.functional.one_hot(token, V).float()
    reward = (lq - lp).gather(1, token[:, None])
    torch.testing.assert_close(_grad("sampled_token", z0, lq, token), -reward * (onehot - p))
    # top-k, only_stu / student_p: −Σ_{v∈S} w(v)(log q(v) − log p(v)) (e_v − p)
    ids = lp.topk(K, -1).indices
    w = torch.softmax(lp.gather(1, ids), -1)
    adv = w * (lq - lp).gather(1, ids)
    e_v = torch.nn.functional.one_hot(ids, V).float()  # N, K, V
    expected = -(adv[..., None] * (e_v - p[:, None, :])).sum(1)
    torch.testing.assert_close(_grad("topk", z0, lq, token), expected)


def test_topk_supports_and_weights_follow_thunlp():
    ids_s = torch.tensor([[1, 2, 3, 4]])
    ids_t = torch.tensor([[3, 4, 5, 6]])
    expect = {"only_stu": ([1, 1, 1, 1], [0, 0, 0, 0], True),
              "only_tch": ([0, 0, 0, 0], [1, 1, 1, 1], True),
              "intersection": ([0, 0, 1, 1], [0, 0, 0, 0], True),
              "union": ([1, 1, 1, 1], [0, 0, 1, 1], True),
              "union-intersection": ([1, 1, 0, 0], [0, 0, 1, 1], False)}
    for strategy, (vs, vt, norm) in expect.items():
        got_s, got_t, got_norm = D.topk_support(ids_s, ids_t, strategy)
        assert got_s.int().tolist() == [vs] and got_t.int().tolist() == [vt] and got_norm == norm
    lp = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1]]))
    valid = torch.tensor([[True, True, False, False]])
    torch.testing.assert_close(D.topk_weights(lp, lp, valid, "student_p"),
                               torch.tensor([[4 / 7, 3 / 7, 0.0, 0.0]]))
    torch.testing.assert_close(D.topk_weights(lp, lp, valid, "none"), torch.tensor([[0.5, 0.5, 0, 0]]))
    torch.testing.assert_close(D.topk_weights(lp, lp, valid, "student_p", normalize=False),
                               torch.tensor([[0.4, 0.3, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="strategy"):
        D.topk_support(ids_s, ids_t, "bogus")
    with pytest.raises(ValueError, match="weighting"):
        D.topk_weights(lp, lp, valid, "bogus")


def test_reverse_kl_token_mean_equals_trl_generalized_jsd_beta1():
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.gkd.gkd_trainer import GKDTrainer

    B, T = 3, 6
    gen = torch.Generator().manual_seed(7)
    zs, zt = torch.randn(B, T, V, generator=gen) * 2, torch.randn(B, T, V, generator=gen) * 2
    labels = torch.ones(B, T, dtype=torch.long)
    labels[0, 4:], labels[2, 2:] = -100, -100
    keep = labels != -100
    for beta, ours in ((1.0, D.reverse_kl_loss), (0.0, D.forward_kl_loss),
                       (0.5, lambda a, b: D.generalized_jsd_loss(a, b, 0.5))):
        trl = GKDTrainer.generalized_jsd_loss(zs, zt, labels=labels, beta=beta)
        per_token = ours(torch.log_softmax(zs[keep], -1), torch.log_softmax(zt[keep], -1))
        seq = keep.nonzero()[:, 0]
        torch.testing.assert_close(D.aggregate_loss(per_token, seq, B), trl)


def test_aggregations():
    loss = torch.tensor([1.0, 3.0, 10.0])
    seq = torch.tensor([0, 0, 1])
    assert D.aggregate_loss(loss, seq, 2, "token-mean").item() == pytest.approx(14 / 3)
    assert D.aggregate_loss(loss, seq, 2, "seq-mean-token-sum").item() == pytest.approx(7.0)
    assert D.aggregate_loss(loss, seq, 2, "seq-mean-token-mean").item() == pytest.approx(6.0)
    with pytest.raises(ValueError):
        D.aggregate_loss(loss, seq, 2, "bogus")


@pytest.mark.parametrize("scratch_elements", [None, 3 * V + 1])
@pytest.mark.parametrize("reverse", [True, False])
def test_kl_from_captured_stats_matches_the_autograd_form(reverse, scratch_elements, monkeypatch):
    """The loop's KL objectives take their value from the capture statistics and their gradient
    from the closed form in backward: both equal the autograd forms, at peaked and flat rows
    (also when the CPU backward walks the rows in blocks of 3 through its reused buffer)."""
    import numpy as np

    from opd_diag.states.capture import chunk_stats

    if scratch_elements:
        monkeypatch.setattr(D, "SCRATCH_ELEMENTS", scratch_elements)

    for scale in (0.5, 4.0, 15.0):
        zs0, zt = _logits(2, scale), _logits(3, scale)
        st = chunk_stats(zs0, zt, torch.zeros(N, dtype=torch.long), K, np.arange(N))
        w = torch.rand(N, generator=torch.Generator().manual_seed(4))
        ref_z, new_z = zs0.clone().requires_grad_(), zs0.clone().requires_grad_()
        lq = torch.log_softmax(zt, -1)
        ref = (D.reverse_kl_loss if reverse else D.forward_kl_loss)(
            torch.log_softmax(ref_z, -1), lq)
        new = D.kl_loss_from_stats(new_z, zt, st["lse_s"], st["lse_t"],
                                   st["rkl" if reverse else "fkl"], reverse=reverse)
        (ref * w).sum().backward()
        (new * w).sum().backward()
        torch.testing.assert_close(new, ref, rtol=1e-5, atol=1e-5)
        # float32 rounding of two summation orders, relative to the largest component
        torch.testing.assert_close(new_z.grad, ref_z.grad, rtol=0,
                                   atol=2e-5 * float(ref_z.grad.abs().max()))
        assert new_z.grad.abs().max() > 1e-3  # a real gradient, not zeros on both sides
    same = _logits(5).requires_grad_()  # teacher = student: zero loss, zero gradient
    st = chunk_stats(same.detach(), same.detach(), torch.zeros(N, dtype=torch.long), K,
                     np.arange(N))
    loss = D.kl_loss_from_stats(same, same.detach(), st["lse_s"], st["lse_t"],
                                st["rkl" if reverse else "fkl"], reverse=reverse)
    loss.sum().backward()
    assert loss.abs().max() < 1e-5 and same.grad.abs().max() < 1e-6



@pytest.mark.parametrize("bad", [float("-inf"), float("nan")])
def test_capture_stats_reject_a_non_finite_logit(bad):
    """One −inf (a masked token) or NaN logit keeps the normaliser finite but would turn the
    entropies and KLs into NaN: the capture names the model and the row instead."""
    import numpy as np

    from opd_diag.core.errors import OpdDiagError
    from opd_diag.states.capture import chunk_stats

    zs, zt = _logits(6, 3.0), _logits(7, 3.0)
    zs[3, 2] = bad
    with pytest.raises(OpdDiagError, match="student produced NaN/inf logits.*row 13"):
        chunk_stats(zs, zt, torch.zeros(N, dtype=torch.long), K, np.arange(10, 10 + N))
    zs[3, 2], zt[1, 0] = 0.0, bad
    with pytest.raises(OpdDiagError, match="teacher produced NaN/inf logits.*row 11"):
        chunk_stats(zs, zt, torch.zeros(N, dtype=torch.long), K, np.arange(10, 10 + N))


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
def test_jsd_from_stats_matches_the_autograd_form(beta):
    """The loop's JSD (0 < β < 1) takes the logits' normalisers from the capture statistics and
    its gradient in closed form: value and gradient equal the autograd generalized JSD at
    peaked and flat rows; teacher = student gives zero loss and gradient."""
    import numpy as np

    from opd_diag.states.capture import chunk_stats

    for scale in (0.5, 4.0, 15.0):
        zs0, zt = _logits(2, scale), _logits(3, scale)
        st = chunk_stats(zs0, zt, torch.zeros(N, dtype=torch.long), K, np.arange(N))
        w = torch.rand(N, generator=torch.Generator().manual_seed(4))
        ref_z, new_z = zs0.clone().requires_grad_(), zs0.clone().requires_grad_()
        ref = D.generalized_jsd_loss(torch.log_softmax(ref_z, -1), torch.log_softmax(zt, -1),
                                     beta)
        new = D.jsd_loss_from_stats(new_z, zt, st["lse_s"], st["lse_t"], beta)
        (ref * w).sum().backward()
        (new * w).sum().backward()
        torch.testing.assert_close(new, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(new_z.grad, ref_z.grad, rtol=0,
                                   atol=2e-5 * float(ref_z.grad.abs().max()))
        assert new_z.grad.abs().max() > 1e-4
    same = _logits(5).requires_grad_()
    st = chunk_stats(same.detach(), same.detach(), torch.zeros(N, dtype=torch.long), K,
                     np.arange(N))
    loss = D.jsd_loss_from_stats(same, same.detach(), st["lse_s"], st["lse_t"], beta)
    loss.sum().backward()
    assert loss.abs().max() < 1e-5 and same.grad.abs().max() < 1e-6
    with pytest.raises(ValueError, match="0 < beta < 1"):
        D.jsd_loss_from_stats(same, same.detach(), st["lse_s"], st["lse_t"], 1.0)
