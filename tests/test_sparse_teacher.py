"""Sparse teacher mode (--teacher-topk-only K): exact columns equal the full capture, bounded
ones contain the truth, and the probe reports each metric's status."""

import numpy as np
import pytest

from opd_diag.core.errors import OpdDiagError
from opd_diag.core.models import load_pair
from opd_diag.core.prompts import validate_prompts
from opd_diag.core.runs import load_run
from opd_diag.probes import run_probe
from opd_diag.states.capture import CaptureConfig, score_states
from opd_diag.states.collect import generate_rollouts, render_prompts, run_capture
from opd_diag.states.rollout import SamplingConfig
from opd_diag.states.sparse import TeacherTopK, local_topk, score_states_topk_only
from opd_diag.zoo import get_pair, model_dir

EXACT = ("logp_s", "logp_t", "H_s", "topk_ids_s", "topk_logp_s", "topk_ids_t", "topk_logp_t",
         "logp_s_on_topk_t", "rank_s_of_top1_t")


@pytest.fixture(scope="module")
def zoo_batch():
    zp = get_pair("success")
    pair = load_pair(model_dir(zp.student), model_dir(zp.teacher))
    sampling = SamplingConfig(n_samples=2, max_new_tokens=zp.hyper.max_new_tokens, seed=3,
                              temperature=1.0)
    prompts = render_prompts(pair, validate_prompts(zp.prompts(6), "zoo"), sampling)
    rows = [(r, s) for r in range(len(prompts)) for s in range(2)]
    ro = generate_rollouts(pair, prompts, rows, sampling)
    ro = ro[ro.n_tokens > 0]
    p_ids = [prompts.set_index("prompt_id").input_ids[p] for p in ro.prompt_id]
    return pair, zp, p_ids, list(ro.completion_ids)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sparse_matches_full_where_exact_and_bounds_contain_truth(zoo_batch, temperature):
    pair, _, p_ids, c_ids = zoo_batch
    vocab, pad = pair.compare_vocab, pair.tokenizer.pad_token_id
    full = score_states(pair.student.model, pair.teacher.model, p_ids, c_ids, top_k=4,
                        temperature=temperature, vocab=vocab, pad_id=pad)
    widths = {}
    for K in (4, 32):
        view = local_topk(pair.teacher.model, p_ids, c_ids, k=K, temperature=temperature,
                          vocab=vocab, pad_id=pad)
        sp = score_states_topk_only(pair.student.model, view, p_ids, c_ids, top_k=4,
                                    temperature=temperature, vocab=vocab, pad_id=pad)
        for col in EXACT:
            np.testing.assert_allclose(sp[col], full[col], atol=2e-4, rtol=1e-4, err_msg=col)
        for col in ("H_t", "rkl", "fkl"):
            assert np.isnan(sp[col]).all()
            lo, hi = sp[f"{col}_lo"], sp[f"{col}_hi"]
            assert (lo <= full[col] + 1e-4).all(), (K, col, (lo - full[col]).max())
            assert (full[col] <= hi + 1e-4).all(), (K, col, (full[col] - hi).max())
        assert np.isinf(sp["rkl_hi"]).all()  # no finite upper bound exists
        # partial column: exact wherever observed, NaN exactly where the token is unobserved
        obs = ~np.isnan(sp["logp_t_on_topk_s"])
        in_view = (sp["topk_ids_s"][:, :, None] == view.ids[:, None, :]).any(-1) | (
            sp["topk_ids_s"] == sp["token"][:, None])
        assert (obs == in_view).all()
        np.testing.assert_allclose(sp["logp_t_on_topk_s"][obs], full["logp_t_on_topk_s"][obs],
                                   atol=2e-4)
        true_tail = 1 - np.exp(view.logp).sum(1) - np.where(
            (view.ids == sp["token"][:, None]).any(1), 0, np.exp(view.logp_token))
        np.testing.assert_allclose(sp["tail_mass_t"], np.clip(true_tail, 0, None), atol=1e-5)
        widths[K] = {c: float(np.mean(sp[f"{c}_hi"] - sp[f"{c}_lo"])) for c in ("H_t", "fkl")}
    for c in ("H_t", "fkl"):  # more of the teacher observed -> tighter intervals
        assert widths[32][c] < widths[4][c], (c, widths)


def test_run_capture_sparse_and_probe_statuses(zoo_batch, tmp_path):
    pair, zp, _, _ = zoo_batch
    prompts = validate_prompts(zp.prompts(4), "zoo")
    sampling = SamplingConfig(n_samples=2, max_new_tokens=zp.hyper.max_new_tokens, seed=1)
    full = run_capture(pair, prompts, tmp_path / "full", sampling=sampling,
                       capture=CaptureConfig(top_k=4), progress=False)
    sparse = run_capture(pair, prompts, tmp_path / "sparse", sampling=sampling,
                         capture=CaptureConfig(top_k=4, teacher_topk_only=8), progress=False)
    rs, rf = load_run(sparse), load_run(full)
    assert rs.meta["teacher_topk_only"]["k"] == 8
    assert rs.meta["teacher_topk_only"]["status"]["rkl"] == "bounded_below"
    assert {"H_t_lo", "H_t_hi", "rkl_lo", "fkl_hi", "tail_mass_t"} <= set(rs.states.columns)
    ps = run_probe("sparse_teacher", rs).set_index("metric")
    pf = run_probe("sparse_teacher", rf).set_index("metric")
    assert (pf.status == "exact").all()
    for m in ("overlap_ratio", "overlap_mass_s", "overlap_mass_t", "eq7_advantage",
              "sampled_reward", "reachability_top1_rank", "reach_top1_in_topk_s"):
        assert ps.at[m, "status"] == "exact"
        assert ps.at[m, "value"] == pytest.approx(pf.at[m, "value"], abs=1e-4), m
    for m in ("H_t", "fkl", "rkl", "entropy_gap"):
        assert ps.at[m, "status"].startswith("bounded")
        assert np.isnan(ps.at[m, "value"])
        assert ps.at[m, "lo"] - 1e-4 <= pf.at[m, "value"] <= ps.at[m, "hi"] + 1e-4, m
    # the overlap probe still runs on a sparse run; its exact metrics agree with the full run
    os_, of = run_probe("overlap", rs), run_probe("overlap", rf)
    a, b = (x[x.level == "run"].iloc[0] for x in (os_, of))
    assert a.overlap_ratio == pytest.approx(b.overlap_ratio, abs=1e-6)


def test_bad_sparse_inputs_are_clear_errors(zoo_batch):
    with pytest.raises(OpdDiagError, match="teacher-topk-only 2 must be an integer ≥ --top-k"):
        CaptureConfig(top_k=4, teacher_topk_only=2)
    with pytest.raises(OpdDiagError, match="must be finite"):
        TeacherTopK(np.zeros((2, 3)), np.full((2, 3), -np.inf), np.zeros(2))
    pair, _, p_ids, c_ids = zoo_batch
    n = sum(len(c) for c in c_ids[:1])
    view = TeacherTopK(np.zeros((n + 1, 4)), np.full((n + 1, 4), -1.0), np.zeros(n + 1) - 1)
    with pytest.raises(OpdDiagError, match="completion positions"):
        score_states_topk_only(pair.student.model, view, p_ids[:1], c_ids[:1], top_k=4,
                               vocab=pair.compare_vocab, pad_id=pair.tokenizer.pad_token_id)


FIXTURE = __import__("pathlib").Path(__file__).parent / "fixtures" / "openai_completion_echo_logprobs.json"


def test_openai_adapter_reads_a_recorded_completions_response(zoo_batch):
    from opd_diag.integrations import openai as oa

    pair = zoo_batch[0]
    rec = oa.load_response(FIXTURE)
    seq, P = rec["request"]["prompt"], rec["prompt_len"]
    prompt, completion = seq[:P], seq[P:]
    assert oa.request_body("teacher-a", prompt, completion, 5) == rec["request"]
    view = oa.teacher_topk([rec["response"]], [prompt], [completion], k=5)
    assert view.ids.shape == (len(completion), 5)
    local = local_topk(pair.teacher.model, [prompt], [completion], k=5,
                       vocab=pair.compare_vocab, pad_id=pair.tokenizer.pad_token_id)
    np.testing.assert_array_equal(view.ids, local.ids)
    np.testing.assert_allclose(view.logp, local.logp, atol=1e-5)
    np.testing.assert_allclose(view.logp_token, local.logp_token, atol=1e-5)
    sp = score_states_topk_only(pair.student.model, view, [prompt], [completion], top_k=4,
                                vocab=pair.compare_vocab, pad_id=pair.tokenizer.pad_token_id)
    full = score_states(pair.student.model, pair.teacher.model, [prompt], [completion], top_k=4,
                        vocab=pair.compare_vocab, pad_id=pair.tokenizer.pad_token_id)
    np.testing.assert_allclose(sp["logp_t"], full["logp_t"], atol=1e-4)
    assert (sp["H_t_lo"] <= full["H_t"] + 1e-4).all() and (full["H_t"] <= sp["H_t_hi"] + 1e-4).all()


def test_openai_adapter_refuses_bad_responses():
    import copy

    from opd_diag.integrations import openai as oa

    rec = oa.load_response(FIXTURE)
    seq, P = rec["request"]["prompt"], rec["prompt_len"]
    prompt, completion = seq[:P], seq[P:]
    with pytest.raises(OpdDiagError, match="need 8; raise 'logprobs'"):
        oa.parse_completion(rec["response"], prompt, completion, k=8)
    shifted = [completion[0] + 1] + completion[1:]
    with pytest.raises(OpdDiagError, match="is not the rollout's token"):
        oa.parse_completion(rec["response"], prompt, shifted, k=5)
    text = copy.deepcopy(rec["response"])
    text["choices"][0]["logprobs"]["tokens"][P] = " 7"
    with pytest.raises(OpdDiagError, match="return_tokens_as_token_ids"):
        oa.parse_completion(text, prompt, completion, k=5)
    with pytest.raises(OpdDiagError, match="echo"):
        oa.parse_completion({"choices": [{"text": "x"}]}, prompt, completion, k=5)
