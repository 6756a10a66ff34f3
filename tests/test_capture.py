"""The capture engine against a brute-force full-vocabulary computation."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from opd_diag import divergences as D
from opd_diag.core.models import load_pair
from opd_diag.core.prompts import load_prompts
from opd_diag.core.runs import load_run, read_table, stack_list_column
from opd_diag.probes import run_probe
from opd_diag.states.capture import CaptureConfig, score_states
from opd_diag.states.collect import run_capture
from opd_diag.states.rollout import SamplingConfig


def _brute_force(model, seqs, prompt_lens, vocab, temperature):
    rows = []
    for seq, P in zip(seqs, prompt_lens):
        with torch.no_grad():
            logits = model(torch.tensor([seq])).logits[0, :, :vocab].double() / temperature
        logp = torch.log_softmax(logits, -1)
        rows.append(logp[P - 1: len(seq) - 1])
    return torch.cat(rows)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_matches_brute_force_with_chunking(big_vocab_pair, temperature):
    pair = load_pair(*big_vocab_pair)
    assert pair.compare_vocab == 50_000  # teacher head is 50,048 wide
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(4, 50_000, (n,), generator=g).tolist() for n in (3, 6, 4)]
    comps = [torch.randint(4, 50_000, (n,), generator=g).tolist() for n in (9, 2, 5)]
    k = 16
    got = score_states(pair.student.model, pair.teacher.model, prompts, comps, top_k=k,
                       temperature=temperature, vocab=pair.compare_vocab, pad_id=0, chunk_tokens=4)
    seqs = [p + c for p, c in zip(prompts, comps)]
    lens = [len(p) for p in prompts]
    lp = _brute_force(pair.student.model, seqs, lens, 50_000, temperature)
    lq = _brute_force(pair.teacher.model, seqs, lens, 50_000, temperature)
    tokens = torch.tensor(np.concatenate(comps))
    assert np.array_equal(got["token"], tokens.numpy())
    atol = 1e-5
    np.testing.assert_allclose(got["logp_s"], lp.gather(1, tokens[:, None])[:, 0], atol=atol)
    np.testing.assert_allclose(got["logp_t"], lq.gather(1, tokens[:, None])[:, 0], atol=atol)
    np.testing.assert_allclose(got["H_s"], D.entropy(lp), atol=atol)
    np.testing.assert_allclose(got["H_t"], D.entropy(lq), atol=atol)
    np.testing.assert_allclose(got["rkl"], D.reverse_kl(lp, lq), atol=atol, rtol=1e-5)
    np.testing.assert_allclose(got["fkl"], D.forward_kl(lp, lq), atol=atol, rtol=1e-5)
    vs, ids_s = lp.topk(k, -1)
    vt, ids_t = lq.topk(k, -1)
    assert np.array_equal(got["topk_ids_s"], ids_s.numpy())
    assert np.array_equal(got["topk_ids_t"], ids_t.numpy())
    np.testing.assert_allclose(got["topk_logp_s"], vs, atol=atol)
    np.testing.assert_allclose(got["topk_logp_t"], vt, atol=atol)
    np.testing.assert_allclose(got["logp_t_on_topk_s"], lq.gather(1, ids_s), atol=atol)
    np.testing.assert_allclose(got["logp_s_on_topk_t"], lp.gather(1, ids_t), atol=atol)
    rank = (lp > lp.gather(1, ids_t[:, :1])).sum(-1)
    assert np.array_equal(got["rank_s_of_top1_t"], rank.numpy())


def test_full_reverse_kl_equals_trl_generalized_jsd(tiny_pair):
    trl = pytest.importorskip("trl.experimental.gkd.gkd_trainer")
    pair = load_pair(*tiny_pair)
    prompt, comp = [1, 5, 6, 7], [8, 9, 10, 11, 2]
    got = score_states(pair.student.model, pair.teacher.model, [prompt], [comp], top_k=4,
                       vocab=64, pad_id=0)
    ids = torch.tensor([prompt + comp])
    with torch.no_grad():
        s = pair.student.model(ids).logits[:, len(prompt) - 1: -1]
        t = pair.teacher.model(ids).logits[:, len(prompt) - 1: -1]
    ref = trl.GKDTrainer.generalized_jsd_loss(s, t, beta=1.0, reduction="sum")
    assert float(got["rkl"].sum()) == pytest.approx(ref.item(), rel=1e-5)


def test_identical_models_give_zero_divergence_and_full_overlap(same_pair, prompts_file, tmp_path):
    pair = load_pair(*same_pair)
    out = run_capture(pair, load_prompts(prompts_file), tmp_path / "run", progress=False,
                      sampling=SamplingConfig(n_samples=2, max_new_tokens=12))
    run = load_run(out)
    s = run.states
    assert len(s) > 0
    np.testing.assert_allclose(s.rkl, 0, atol=1e-5)
    np.testing.assert_allclose(s.fkl, 0, atol=1e-5)
    np.testing.assert_allclose(s.logp_s, s.logp_t, atol=1e-6)
    df = run_probe("overlap", run)
    r = df[df.level == "run"].iloc[0]
    assert r.overlap_ratio == pytest.approx(1.0)
    assert r.overlap_mass_s == pytest.approx(r.topk_mass_s, abs=1e-6)
    assert r.overlap_mass_t == pytest.approx(r.topk_mass_t, abs=1e-6)
    assert r.eq7_advantage == pytest.approx(0.0, abs=1e-6)
    assert r.sampled_rkl == pytest.approx(0.0, abs=1e-6)


def test_same_seed_same_tables_and_resume(tiny_pair, prompts_file, tmp_path):
    pair = load_pair(*tiny_pair)
    prompts = load_prompts(prompts_file)
    kw = dict(progress=False, sampling=SamplingConfig(n_samples=3, max_new_tokens=10, batch_size=4,
                                                      seed=7), capture=CaptureConfig(top_k=8))
    a = load_run(run_capture(pair, prompts, tmp_path / "a", **kw))
    b_dir = run_capture(pair, prompts, tmp_path / "b", **kw)
    b = load_run(b_dir)
    pd.testing.assert_frame_equal(a.rollouts, b.rollouts)
    pd.testing.assert_frame_equal(a.states, b.states)
    # Simulate a kill after batch 1: its states shard is gone, the run is still "running".
    shards = sorted((b_dir / "states.parquet").glob("part-*.parquet"))
    assert len(shards) == 3
    shards[-1].unlink()
    (b_dir / "rollouts.parquet" / shards[-1].name).unlink()
    meta = json.loads((b_dir / "run.json").read_text())
    meta["status"] = "running"
    (b_dir / "run.json").write_text(json.dumps(meta))
    run_capture(pair, prompts, b_dir, resume=True, **kw)
    c = load_run(b_dir)
    pd.testing.assert_frame_equal(a.states, c.states)
    pd.testing.assert_frame_equal(a.rollouts, c.rollouts)
    assert c.meta["status"] == "complete"


def test_different_seed_different_rollouts(tiny_pair, prompts_file, tmp_path):
    pair = load_pair(*tiny_pair)
    prompts = load_prompts(prompts_file)
    runs = [load_run(run_capture(pair, prompts, tmp_path / f"r{s}", progress=False,
                                 sampling=SamplingConfig(n_samples=2, max_new_tokens=10, seed=s)))
            for s in (0, 1)]
    assert list(runs[0].rollouts.completion) != list(runs[1].rollouts.completion)


def test_run_json_records_provenance_and_vocab(big_vocab_pair, tmp_path):
    pair = load_pair(*big_vocab_pair)
    prompts = pd.DataFrame({"prompt_id": [0], "prompt": ["w1 w2 w3"], "answer": [None]})
    run = load_run(run_capture(pair, prompts, tmp_path / "r", progress=False,
                               sampling=SamplingConfig(n_samples=1, max_new_tokens=4)))
    meta = run.meta
    assert meta["schema_version"] == 1 and meta["status"] == "complete"
    assert meta["models"]["compare_vocab"] == 50_000
    assert meta["models"]["teacher"]["logit_width"] == 50_048
    assert "50000" in meta["models"]["compare_note"].replace(",", "")
    assert meta["versions"]["torch"] and meta["config"]["capture"]["top_k"] == 16
    assert "sampling" in meta["seeds"]
    ids = stack_list_column(run.states, "topk_ids_t")
    assert ids.max() < 50_000
    assert read_table(tmp_path / "r" / "prompts.parquet").render.iat[0] == "raw"


# --- issue 12: the capture head must be the model's head ---------------------------------


def test_granite_logits_scaling_is_captured_exactly(tmp_path):
    """Granite divides its logits by ``logits_scaling`` (8 here); the capture must too."""
    from opd_diag.core.models import load_model
    from opd_diag.testing import make_granite_dir

    m = load_model(make_granite_dir(tmp_path / "granite", logits_scaling=8.0))
    rng = np.random.default_rng(0)
    prompts = [list(rng.integers(4, 64, 5)) for _ in range(2)]
    comps = [list(rng.integers(4, 64, n)) for n in (6, 3)]
    sc = score_states(m.model, m.model, prompts, comps, top_k=4, vocab=64, pad_id=0)
    ref = _brute_force(m.model, [p + c for p, c in zip(prompts, comps)], [5, 5], 64, 1.0)
    tok = torch.tensor(np.concatenate(comps))
    expected = ref.gather(1, tok[:, None])[:, 0].float().numpy()
    np.testing.assert_allclose(sc["logp_s"], expected, atol=1e-4)


def test_head_check_stops_on_an_unknown_logit_transform(tiny_pair):
    """A config field the re-implemented head applies but the model's forward does not (or the
    reverse, e.g. MiniCPM's hidden scaling) is caught on the first batch, naming the arch."""
    from opd_diag.core.errors import OpdDiagError
    from opd_diag.core.models import load_model

    m = load_model(tiny_pair[1])
    m.model.config.logit_scale = 3.0  # Llama's forward ignores it; lm_head_logits would apply it
    with pytest.raises(OpdDiagError, match="LlamaForCausalLM.*not reproduced|not reproduced.*LlamaForCausalLM"):
        score_states(m.model, m.model, [[1, 5, 6]], [[7, 8, 9]], top_k=4, vocab=64, pad_id=0)


def test_head_runs_in_float32_for_bf16_models(tiny_pair):
    from opd_diag.core.models import load_model
    from opd_diag.states.capture import lm_head_logits

    m = load_model(tiny_pair[1], dtype="bfloat16")
    h = torch.randn(5, m.model.config.hidden_size).to(torch.bfloat16)
    z = lm_head_logits(m.model, h)
    assert z.dtype == torch.float32
    W = m.model.get_output_embeddings().weight
    torch.testing.assert_close(z, h.float() @ W.float().T)
    # and the bf16 capture passes the head check at bf16 tolerance
    score_states(m.model, m.model, [[1, 5, 6]], [[7, 8, 9]], top_k=4, vocab=64, pad_id=0)


@pytest.mark.parametrize("block_elements", [50 * 4, 50 * 7, 50 * 200])
def test_chunk_stats_blocks_agree_with_one_pass(monkeypatch, block_elements):
    """The CPU block walk (cache-sized row blocks, one reused scratch buffer) gives the same
    columns as one pass over the chunk, including a ragged last block."""
    from opd_diag.states import capture as C

    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(37, 50, generator=g) * 3, torch.randn(37, 50, generator=g) * 3
    tok = torch.randint(0, 50, (37,), generator=g)
    rows = np.arange(37)
    monkeypatch.setattr(C, "_BLOCK_ELEMENTS", 10**9)
    whole = C.chunk_stats(zs, zt, tok, 5, rows)
    monkeypatch.setattr(C, "_BLOCK_ELEMENTS", block_elements)
    blocked = C.chunk_stats(zs, zt, tok, 5, rows)
    assert whole.keys() == blocked.keys()
    for name in whole:
        assert torch.allclose(whole[name].float(), blocked[name].float(), atol=1e-5), name
    ls, lt = torch.log_softmax(zs, -1), torch.log_softmax(zt, -1)
    assert torch.allclose(blocked["logp_s"], ls.gather(1, tok[:, None])[:, 0], atol=1e-5)
    assert torch.allclose(blocked["rkl"], (ls.exp() * (ls - lt)).sum(-1), atol=1e-4)
    rank = (zs > zs.gather(1, zt.argmax(-1, keepdim=True))).sum(-1)
    assert torch.equal(blocked["rank_s_of_top1_t"], rank)


def test_cpu_scratch_path_equals_the_accelerator_path():
    """On CPU the exp pass, the dot products and the reachability count run in a reused buffer
    (float comparisons summed in float32); on an accelerator in fresh tensors: the same columns."""
    from opd_diag.states import capture as C

    g = torch.Generator().manual_seed(1)
    zs, zt = torch.randn(40, 700, generator=g) * 3, torch.randn(40, 700, generator=g) * 3
    tok, rows = torch.randint(0, 700, (40,), generator=g), np.arange(40)
    fresh = C._block_stats(zs, zt, tok, 8, rows, None)
    reused = C.chunk_stats(zs, zt, tok, 8, rows)
    assert fresh.keys() == reused.keys()
    for name in fresh:
        assert fresh[name].dtype == reused[name].dtype, name
        torch.testing.assert_close(reused[name], fresh[name], rtol=1e-6, atol=1e-6, msg=name)
    assert torch.equal(reused["rank_s_of_top1_t"], fresh["rank_s_of_top1_t"])
