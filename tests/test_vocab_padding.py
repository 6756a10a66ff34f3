"""Issue 14 (2): the reachability and compatibility statistics mean the same thing at any
vocabulary size. Full-vocabulary student/teacher distributions over the zoo's 355 tokens are
padded to Qwen2.5's 151,936 rows with never-used tokens of negligible mass (both heads); the
statistics computed from the states columns the capture engine records must not change.
(The end-to-end version, padded *model* copies through the whole pre-flight, is
tests/test_vocab_padding_models.py.)"""

import numpy as np
import pandas as pd
import pytest

from opd_diag.probes.thinking import forking_mask
from opd_diag.probes.tokens import GRAD_RATIO_CUTOFFS, corrective_signal, reachability_frame

K = 16


def _states(logits_s, logits_t, token):
    """The capture engine's per-state columns from full-vocabulary logits (same definitions as
    opd_diag/states/capture.py: top-k of each model, the other model's log-probs on it, exact
    reverse KL, entropies)."""
    lp = logits_s - np.logaddexp.reduce(logits_s, axis=1, keepdims=True)
    lq = logits_t - np.logaddexp.reduce(logits_t, axis=1, keepdims=True)
    ks, kt = np.argsort(-lp, 1)[:, :K], np.argsort(-lq, 1)[:, :K]
    take = np.take_along_axis
    p, q = np.exp(lp), np.exp(lq)
    n = len(token)
    return pd.DataFrame(dict(
        rollout_id=[f"r{i // 10}" for i in range(n)], step=-1, t=np.arange(n) % 10, T=10,
        token=token, topk_ids_s=list(ks), topk_logp_s=list(take(lp, ks, 1)),
        logp_t_on_topk_s=list(take(lq, ks, 1)), topk_ids_t=list(kt),
        topk_logp_t=list(take(lq, kt, 1)), logp_s_on_topk_t=list(take(lp, kt, 1)),
        rkl=(p * (lp - lq)).sum(1), H_s=-(p * lp).sum(1), H_t=-(q * lq).sum(1),
        logp_s=take(lp, token[:, None], 1)[:, 0], logp_t=take(lq, token[:, None], 1)[:, 0]))


def _stats(states):
    g_f, ratio = corrective_signal(states)
    shares = {c: float((g_f * (ratio < c)).sum() / g_f.sum()) for c in GRAD_RATIO_CUTOFFS}
    fork = forking_mask(states)
    cov = ((np.stack(states.topk_ids_t.to_numpy())[:, :, None]
            == np.stack(states.topk_ids_s.to_numpy())[:, None, :]).any(-1)
           * np.exp(np.stack(states.topk_logp_t.to_numpy()))).sum(1) \
        / np.exp(np.stack(states.topk_logp_t.to_numpy())).sum(1)
    reach = reachability_frame(states)
    return shares, float(fork.mean()), float(cov[fork].mean()), reach.rank_s_of_teacher_top1 \
        if "rank_s_of_teacher_top1" in reach else None


def test_padding_the_vocabulary_does_not_change_the_statistics():
    rng = np.random.default_rng(0)
    n, v, width = 200, 355, 151_936
    # a student that is sure of itself, a teacher that often prefers tokens the student nearly
    # never gives (the out-of-reach mechanism), plus near-deterministic positions
    base = rng.normal(0, 1, (n, v))
    s = base * 3.0
    t = base * 3.0 + rng.normal(0, 2, (n, v))
    boost = rng.integers(0, v, n)
    t[np.arange(n), boost] += 12 * (rng.random(n) < 0.5)
    s[np.arange(n), boost] -= 8 * (rng.random(n) < 0.5)
    token = np.argmax(s + rng.gumbel(size=s.shape), 1)
    small = _stats(_states(s, t, token))
    pad = np.full((n, width - v), -80.0)  # 151,581 rows at ~e^-80 below the rest: never used
    big = _stats(_states(np.c_[s, pad], np.c_[t, pad], token))
    for c in GRAD_RATIO_CUTOFFS:
        assert big[0][c] == pytest.approx(small[0][c], abs=1e-9), c
    assert big[1] == small[1] and big[2] == pytest.approx(small[2], abs=1e-9)
    assert 0.05 < small[0][1e-2] < 0.95  # a statistic with something to measure
    # an absolute cutoff scaled by the vocabulary (p·V < 1e-2, i.e. p < 1e-2/V) is not invariant
    p_top1 = np.exp(np.stack(_states(s, t, token).logp_s_on_topk_t.to_numpy())[:, 0])
    assert (p_top1 * v < 1e-2).mean() != (p_top1 * width < 1e-2).mean()
