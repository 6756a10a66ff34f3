"""vLLM backend: same tables as the HF path (needs vLLM and a GPU; skipped otherwise)."""

import numpy as np
import pytest
import torch

from opd_diag import vllm_backend
from opd_diag.core.errors import OpdDiagError


def test_missing_vllm_is_a_clear_error():
    if vllm_backend.available():
        pytest.skip("vLLM is installed")
    with pytest.raises(OpdDiagError, match="pip install 'opd-diag\\[vllm\\]'"):
        vllm_backend.load_llm("nowhere")


@pytest.mark.skipif(not (vllm_backend.available() and torch.cuda.is_available()),
                    reason="needs vLLM and a CUDA GPU")
def test_vllm_rollouts_and_scores_match_hf(tiny_pair, tmp_path):
    from opd_diag.core.models import load_pair
    from opd_diag.core.prompts import load_prompts
    from opd_diag.states.capture import score_states
    from opd_diag.states.collect import render_prompts
    from opd_diag.states.rollout import SamplingConfig
    from opd_diag.testing import write_prompts

    pair = load_pair(*tiny_pair, student_device="cuda", teacher_device="cuda")
    sampling = SamplingConfig(n_samples=2, max_new_tokens=8, seed=1)
    prompts = render_prompts(pair, load_prompts(write_prompts(tmp_path / "p.jsonl", n=3)), sampling)
    vocab = pair.compare_vocab
    s_llm = vllm_backend.load_llm(str(tiny_pair[0]), dtype="float32", max_logprobs=vocab,
                                  gpu_memory_utilization=0.3)
    t_llm = vllm_backend.load_llm(str(tiny_pair[1]), dtype="float32", max_logprobs=vocab,
                                  gpu_memory_utilization=0.3)
    rows = [(r, s) for r in range(3) for s in range(2)]
    ro = vllm_backend.generate_rollouts_vllm(s_llm, pair.tokenizer, prompts, rows, sampling)
    assert ro.rollout_id.is_unique and (ro.n_tokens > 0).all()
    again = vllm_backend.generate_rollouts_vllm(s_llm, pair.tokenizer, prompts, rows[::-1], sampling)
    assert list(again.completion_ids)[::-1] == list(ro.completion_ids)  # per-row seeds
    p_ids = [prompts.input_ids.iat[r] for r, _ in rows]
    c_ids = list(ro.completion_ids)
    hf = score_states(pair.student.model, pair.teacher.model, p_ids, c_ids, top_k=8,
                      temperature=0.7, vocab=vocab, pad_id=pair.tokenizer.pad_token_id)
    vl = vllm_backend.score_states_vllm(s_llm, t_llm, p_ids, c_ids, top_k=8, temperature=0.7,
                                        vocab=vocab)
    for col in ("logp_s", "logp_t", "H_s", "H_t", "rkl", "fkl", "topk_logp_s", "topk_logp_t"):
        np.testing.assert_allclose(vl[col], hf[col], atol=2e-3, err_msg=col)
    assert (vl["topk_ids_s"][:, 0] == hf["topk_ids_s"][:, 0]).mean() > 0.99


def _vllm_skip_reason() -> str | None:
    if not vllm_backend.available():
        return "vLLM is not installed (pip install 'opd-diag[vllm]'): vLLM backend not run"
    if not torch.cuda.is_available():
        return "no CUDA GPU visible: vLLM backend not run"
    return None


needs_vllm = pytest.mark.skipif(_vllm_skip_reason() is not None,
                                reason=_vllm_skip_reason() or "")


@needs_vllm
def test_backend_vllm_capture_has_the_hf_schema_and_per_row_seeds(tiny_pair, tmp_path):
    from opd_diag.core.models import load_pair
    from opd_diag.core.prompts import load_prompts
    from opd_diag.core.runs import load_run
    from opd_diag.states.backend import VLLMBackend
    from opd_diag.states.collect import run_capture
    from opd_diag.states.rollout import SamplingConfig
    from opd_diag.testing import write_prompts

    pair = load_pair(*tiny_pair, student_device="cuda", teacher_device="cuda")
    prompts = load_prompts(write_prompts(tmp_path / "p.jsonl", n=3))
    sampling = SamplingConfig(n_samples=2, max_new_tokens=8, seed=1, batch_size=2)
    backend = VLLMBackend(gpu_memory_utilization=0.2, dtype="float32")
    run_capture(pair, prompts, tmp_path / "hf", sampling=sampling, progress=False)
    run_capture(pair, prompts, tmp_path / "v", sampling=sampling, progress=False, backend=backend)
    sampling6 = SamplingConfig(n_samples=2, max_new_tokens=8, seed=1, batch_size=6)
    run_capture(pair, prompts, tmp_path / "v6", sampling=sampling6, progress=False,
                backend=backend)
    hf, v, v6 = (load_run(tmp_path / d) for d in ("hf", "v", "v6"))
    assert list(v.rollouts.columns) == list(hf.rollouts.columns)
    assert list(v.states.columns) == list(hf.states.columns)
    assert list(v.rollouts.rollout_id) == list(hf.rollouts.rollout_id)
    # per-row seeds: the batch size does not change a vLLM row
    assert [list(x) for x in v.rollouts.completion_ids] == [list(x) for x in v6.rollouts.completion_ids]


@needs_vllm
def test_backend_vllm_weight_sync_changes_what_is_sampled(tiny_pair):
    from opd_diag.core.models import load_pair
    from opd_diag.states.backend import VLLMBackend
    from opd_diag.states.rollout import SamplingConfig

    pair = load_pair(*tiny_pair, student_device="cuda", teacher_device="cuda")
    backend = VLLMBackend(gpu_memory_utilization=0.2, dtype="float32")
    cfg = SamplingConfig(n_samples=1, temperature=0, max_new_tokens=6)
    ids = [[5, 6, 7, 8]]
    before = backend.sample(pair.student.model, ids, [0], cfg, eos_ids=[], pad_id=0)
    with torch.no_grad():
        pair.student.model.get_output_embeddings().weight.mul_(-1.0)  # flips the argmax
    backend.sync_weights(pair.student.model)
    after = backend.sample(pair.student.model, ids, [0], cfg, eos_ids=[], pad_id=0)
    assert before != after
