import shutil

import pandas as pd
import pytest
import torch

from opd_diag.core.errors import OpdDiagError
from opd_diag.core.models import load_model, load_pair
from opd_diag.core.prompts import load_prompts
from opd_diag.states.collect import generate_rollouts, render_prompts
from opd_diag.states.rollout import SamplingConfig, render_prompt


def _prompts(pair, prompts_file, cfg):
    return render_prompts(pair, load_prompts(prompts_file), cfg)


def test_greedy_matches_hf_generate(tiny_pair, prompts_file):
    pair = load_pair(*tiny_pair)
    cfg = SamplingConfig(n_samples=1, temperature=0.0, max_new_tokens=8)
    prompts = _prompts(pair, prompts_file, cfg)
    # different prompt lengths so left padding matters
    prompts.at[0, "input_ids"] = prompts.input_ids.iat[0][:3]
    rows = [(r, 0) for r in range(len(prompts))]
    ours = generate_rollouts(pair, prompts, rows, cfg)
    model, tok = pair.student.model, pair.tokenizer
    for r in range(len(prompts)):
        ids = torch.tensor([prompts.input_ids.iat[r]])
        ref = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=8, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id)[0, ids.shape[1]:].tolist()
        if tok.eos_token_id in ref:
            ref = ref[: ref.index(tok.eos_token_id) + 1]
        assert ours.completion_ids.iat[r] == ref


def test_rows_do_not_depend_on_batching(tiny_pair, prompts_file):
    pair = load_pair(*tiny_pair)
    prompts = _prompts(pair, prompts_file, SamplingConfig())
    rows = [(r, s) for r in range(len(prompts)) for s in range(2)]
    big = generate_rollouts(pair, prompts, rows, SamplingConfig(max_new_tokens=10, seed=3))
    small = pd.concat([generate_rollouts(pair, prompts, [row],
                                         SamplingConfig(max_new_tokens=10, seed=3))
                       for row in rows], ignore_index=True)
    assert list(big.completion_ids) == list(small.completion_ids)
    assert set(big.stop_reason) <= {"eos", "length"}
    assert all(n == len(c) for n, c in zip(big.n_tokens, big.completion_ids))


def test_tiny_top_p_is_greedy(tiny_pair, prompts_file):
    pair = load_pair(*tiny_pair)
    prompts = _prompts(pair, prompts_file, SamplingConfig())
    rows = [(r, 0) for r in range(len(prompts))]
    greedy = generate_rollouts(pair, prompts, rows, SamplingConfig(temperature=0, max_new_tokens=6))
    nucleus = generate_rollouts(pair, prompts, rows, SamplingConfig(top_p=1e-6, max_new_tokens=6))
    assert list(greedy.completion_ids) == list(nucleus.completion_ids)


def test_chat_template_used_unless_raw(tiny_pair):
    tok = load_model(tiny_pair[0]).tokenizer
    tok.chat_template = "{% for m in messages %}w1 {{ m['content'] }} w2{% endfor %}"
    text, ids, how = render_prompt(tok, "w5 w6")
    assert how == "chat_template" and text == "w1 w5 w6 w2"
    assert ids == tok("w1 w5 w6 w2", add_special_tokens=False)["input_ids"]
    text, ids, how = render_prompt(tok, "w5 w6", raw=True)
    assert how == "raw" and ids[0] == tok.bos_token_id


@pytest.mark.parametrize("kw", [dict(n_samples=0), dict(temperature=-1), dict(top_p=0),
                                dict(max_new_tokens=0), dict(batch_size=0)])
def test_bad_sampling_config(kw):
    with pytest.raises(OpdDiagError):
        SamplingConfig(**kw)


# --- issue 12: base vs instruct pairs ------------------------------------------------------


def test_base_instruct_special_tokens_warn_and_stop_on_both_eos(tiny_pair, prompts_file, tmp_path,
                                                               capsys):
    """Same token→id map, different EOS declaration: a warning (stderr and run.json), and the
    student stops on the teacher's EOS too."""
    import json

    from opd_diag.states.capture import CaptureConfig
    from opd_diag.states.collect import run_capture
    from opd_diag.testing import make_model_dir, make_tokenizer

    greedy = SamplingConfig(n_samples=1, temperature=0.0, max_new_tokens=6)
    pair = load_pair(*tiny_pair)
    first = generate_rollouts(pair, _prompts(pair, prompts_file, greedy), [(0, 0)], greedy)
    tok0 = int(first.completion_ids.iat[0][0])  # the student's greedy first token on prompt 0
    assert tok0 not in pair.stop_token_ids
    name = pair.tokenizer.convert_ids_to_tokens(tok0)
    teacher = make_model_dir(tmp_path / "instruct", base=tiny_pair[1],
                             tokenizer=make_tokenizer(64, eos_token=name))
    capsys.readouterr()
    pair = load_pair(tiny_pair[0], teacher)
    assert "different eos_token" in capsys.readouterr().err
    assert tok0 in pair.stop_token_ids
    out = run_capture(pair, load_prompts(prompts_file), tmp_path / "run", sampling=greedy,
                      capture=CaptureConfig(top_k=4), progress=False)
    roll = pd.read_parquet(out / "rollouts.parquet")
    row = roll[roll.prompt_id == roll.prompt_id.min()].iloc[0]
    assert list(row.completion_ids) == [tok0] and row.stop_reason == "eos"
    meta = json.loads((out / "run.json").read_text())["models"]
    assert tok0 in meta["stop_token_ids"]["used"]
    assert tok0 in meta["stop_token_ids"]["teacher"]
    assert tok0 not in meta["stop_token_ids"]["student"]
    assert any("eos_token" in w for w in meta["tokenizer_warnings"])


def _tiny_arch(kind: str):
    import transformers

    cls = {"llama": "Llama", "qwen2": "Qwen2", "qwen3": "Qwen3", "mistral": "Mistral"}[kind]
    cfg = getattr(transformers, f"{cls}Config")(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        head_dim=8, tie_word_embeddings=False)
    torch.manual_seed(0)
    return getattr(transformers, f"{cls}ForCausalLM")(cfg).eval()


@pytest.mark.parametrize("kind", ["llama", "qwen2", "qwen3", "mistral"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_lean_decode_gives_the_generic_forwards_samples(kind, temperature):
    from opd_diag.states.lean import lean_supported
    from opd_diag.states.rollout import SamplingConfig, sample_batch

    model = _tiny_arch(kind)
    assert lean_supported(model, 64) is None
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 64, (int(n),), generator=gen).tolist() for n in (3, 7, 5, 9, 2, 6)]
    cfg = SamplingConfig(n_samples=1, temperature=temperature, max_new_tokens=40)
    kw = dict(eos_ids=[2], pad_id=0)
    generic = sample_batch(model, prompts, list(range(6)), cfg, lean=False, **kw)
    lean = sample_batch(model, prompts, list(range(6)), cfg, lean=True, **kw)
    assert lean == generic
    assert max(len(c) for c, _ in lean) > 10  # the rows really decoded


def test_lean_decode_on_the_zoo_and_its_fallbacks():
    from transformers import GPT2Config, GPT2LMHeadModel

    from opd_diag.core.models import load_pair
    from opd_diag.states.lean import lean_supported
    from opd_diag.states.rollout import SamplingConfig, sample_batch
    from opd_diag.zoo import get_pair, model_dir

    zp = get_pair("success")
    pair = load_pair(model_dir(zp.student), model_dir(zp.teacher))
    ids = [pair.tokenizer(p)["input_ids"] for p in zp.prompts(12).prompt]
    cfg = SamplingConfig(n_samples=1, temperature=1.0, max_new_tokens=zp.hyper.max_new_tokens)
    kw = dict(eos_ids=pair.stop_token_ids, pad_id=pair.tokenizer.pad_token_id)
    assert sample_batch(pair.student.model, ids, list(range(12)), cfg, lean=True, **kw) == \
        sample_batch(pair.student.model, ids, list(range(12)), cfg, lean=False, **kw)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=4))
    assert "architecture 'gpt2'" in lean_supported(gpt2, 64)
    windowed = _tiny_arch("mistral")
    windowed.config.sliding_window = 16
    assert "sliding-window" in lean_supported(windowed, 64)
    # a declined model still samples, through the generic forward
    out = sample_batch(gpt2.eval(), [[5, 6, 7]], [0], SamplingConfig(max_new_tokens=5),
                       eos_ids=[2], pad_id=0)
    assert len(out[0][0]) >= 1


@pytest.mark.parametrize("kind", ["llama", "qwen2", "qwen3", "mistral"])
def test_fused_eager_step_matches_the_models_modules(kind):
    """The fused eager step (one q/k/v and one gate/up projection, one rotation, fused RMSNorm,
    grouped heads in the kernel) gives the logits of the model's own modules, step after step
    over a left-padded batch; qwen2's q/k/v biases and qwen3's q/k norms included."""
    from transformers import DynamicCache

    from opd_diag.states.lean import LeanDecoder, fuse_layers

    model = _tiny_arch(kind)
    fused = fuse_layers(model)
    assert fused is not None and len(fused) == model.config.num_hidden_layers
    assert (fused[0].qkv_b is not None) == (kind == "qwen2")
    assert (fused[0].qk_norms is not None) == (kind == "qwen3")
    ids = torch.tensor([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]])
    mask = (ids != 0).long()
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    decoders = []
    for fuse in (True, False):
        kv = DynamicCache(config=model.config)
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                  past_key_values=kv)
        decoders.append(LeanDecoder(model, kv, mask, 8, fused=fuse))
    nxt, at = torch.tensor([13, 14]), pos[:, -1:] + 1
    for _ in range(6):
        a, b = (d.step(nxt, at) for d in decoders)
        assert decoders[0]._fused is not None  # still fused after the first step's check
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        nxt, at = a.argmax(-1), at + 1


def test_fused_step_is_kept_in_bfloat16(monkeypatch):
    """bf16 (the usual dtype of a real student): the first-step check tolerates bf16 rounding,
    so the fused step stays on, and the samples are still the generic forward's."""
    import opd_diag.states.lean as L
    from opd_diag.states.rollout import SamplingConfig, sample_batch

    kept = []
    step = L.LeanDecoder.step

    def watched(self, *a):
        out = step(self, *a)
        kept.append(self._fused is not None)
        return out

    monkeypatch.setattr(L.LeanDecoder, "step", watched)
    model = _tiny_arch("qwen3").to(torch.bfloat16)
    cfg = SamplingConfig(n_samples=1, temperature=1.0, max_new_tokens=30)
    kw = dict(eos_ids=[2], pad_id=0)
    prompts = [[3, 4, 5], [6, 7, 8, 9, 10]]
    assert sample_batch(model, prompts, [0, 1], cfg, lean=True, **kw) == \
        sample_batch(model, prompts, [0, 1], cfg, lean=False, **kw)
    assert len(kept) > 5 and all(kept)


def test_fused_step_declines_a_replaced_module_and_large_models(monkeypatch):
    """A module whose forward is not the standard one (here an MLP that doubles its output)
    fails the first-step check, and the decode goes on through the model's own modules: the
    samples are still the generic forward's. Copies above FUSE_MAX_BYTES are not made."""
    import opd_diag.states.lean as L
    from opd_diag.states.rollout import SamplingConfig, sample_batch

    model = _tiny_arch("llama")
    mlp = model.model.layers[1].mlp
    plain = type(mlp).forward
    monkeypatch.setattr(mlp, "forward", lambda x: 2 * plain(mlp, x))
    seen = []
    step = L.LeanDecoder.step

    def watched(self, *a):
        out = step(self, *a)
        seen.append(self._fused)
        return out

    monkeypatch.setattr(L.LeanDecoder, "step", watched)
    prompts = [[3, 4, 5], [6, 7, 8, 9]]
    cfg = SamplingConfig(n_samples=1, temperature=1.0, max_new_tokens=20)
    kw = dict(eos_ids=[2], pad_id=0)
    assert sample_batch(model, prompts, [0, 1], cfg, lean=True, **kw) == \
        sample_batch(model, prompts, [0, 1], cfg, lean=False, **kw)
    assert seen and all(f is None for f in seen)
    monkeypatch.setattr(L, "FUSE_MAX_BYTES", 16)
    assert L.fuse_layers(_tiny_arch("qwen2")) is None


def test_uniforms_drawn_at_once_equal_one_draw_per_token():
    """The sampler draws a row's uniforms for every position at once; that must be the numbers
    one draw per token would give (what makes samples independent of batching and length)."""
    for n in (1, 7, 48, 1000):
        g = torch.Generator().manual_seed(123)
        at_once = torch.rand(n, generator=g)
        g = torch.Generator().manual_seed(123)
        assert torch.equal(at_once, torch.stack([torch.rand((), generator=g) for _ in range(n)]))


@pytest.mark.parametrize("rope", [{"rope_type": "linear", "factor": 2.0},
                                  {"rope_type": "dynamic", "factor": 2.0}])
def test_lean_decode_with_scaled_rope(rope):
    """A linear-scaled rope goes through the precomputed cos/sin table, a dynamic one through the
    per-token rotary call; both give the generic forward's samples."""
    from opd_diag.states.lean import LeanDecoder
    from opd_diag.states.rollout import SamplingConfig, sample_batch

    model = _tiny_arch("llama")
    model.config.rope_parameters = {**model.config.rope_parameters, **rope}
    model.model.rotary_emb = type(model.model.rotary_emb)(config=model.config)
    assert model.model.rotary_emb.rope_type == rope["rope_type"]
    gen = torch.Generator().manual_seed(2)
    prompts = [torch.randint(3, 64, (int(n),), generator=gen).tolist() for n in (3, 8, 5)]
    cfg = SamplingConfig(n_samples=1, temperature=1.0, max_new_tokens=40)
    kw = dict(eos_ids=[2], pad_id=0)
    assert sample_batch(model, prompts, [0, 1, 2], cfg, lean=True, **kw) == \
        sample_batch(model, prompts, [0, 1, 2], cfg, lean=False, **kw)
    from transformers import DynamicCache

    kv = DynamicCache(config=model.config)
    ids = torch.tensor([prompts[1]])
    model(input_ids=ids, use_cache=True, past_key_values=kv)
    dec = LeanDecoder(model, kv, torch.ones_like(ids), 4)
    assert (dec._rope_table is None) == (rope["rope_type"] == "dynamic")


@pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
                    reason="torch.compile on CPU needs a C++ compiler (none on PATH)")
def test_compiled_decode_gives_the_lean_samples():
    """--backend hf-compile: torch.compile-d blocks of decode iterations give the lean decode's
    samples (qwen3: q/k norms and grouped kv heads; left-padded rows), a batch of another shape
    reuses the compile, a budget that is not a whole number of blocks and a batch that stops
    inside a block keep exactly the lean tokens, and weights changed in place (an optimizer
    step) are the ones sampled from."""
    import opd_diag.states.rollout as R

    model = _tiny_arch("qwen3")
    gen = torch.Generator().manual_seed(3)
    kw = dict(eos_ids=[2], pad_id=0)
    cfg = SamplingConfig(n_samples=1, temperature=1.0, max_new_tokens=40)

    def both(lengths, seeds, cfg=cfg, kw=kw, longest=10):
        prompts = [torch.randint(3, 64, (n,), generator=gen).tolist() for n in lengths]
        lean = R.sample_batch(model, prompts, seeds, cfg, **kw)
        compiled = R.sample_batch(model, prompts, seeds, cfg, compile=True, **kw)
        assert compiled == lean
        assert max(len(c) for c, _ in lean) > longest
        return lean

    from torch._dynamo.utils import counters

    assert cfg.max_new_tokens % R.DECODE_BLOCK == 0
    both((3, 7, 5, 9), [0, 1, 2, 3])
    compiled = counters["stats"]["unique_graphs"]
    before = both((4, 11, 6), [4, 5, 6])
    odd = SamplingConfig(n_samples=1, temperature=1.0, max_new_tokens=4 * R.DECODE_BLOCK + 1)
    out = both((5, 8), [7, 8], cfg=odd, longest=0)  # not a whole number of blocks
    assert max(len(c) for c, _ in out) <= odd.max_new_tokens
    # most tokens end a row: the whole batch stops inside a block
    early = both((5, 8, 3), [9, 10, 11], kw=dict(eos_ids=list(range(2, 60)), pad_id=0), longest=0)
    assert max(len(c) for c, _ in early) < R.DECODE_BLOCK
    # one compile served every batch size, budget and EOS list (no recompiles)
    assert counters["stats"]["unique_graphs"] == compiled
    with torch.no_grad():  # an in-place update, like AdamW's
        model.lm_head.weight.mul_(3.0)
    gen.manual_seed(3)
    both((3, 7, 5, 9), [0, 1, 2, 3])
    assert both((4, 11, 6), [4, 5, 6]) != before


def test_a_failed_compile_is_a_clear_error(monkeypatch):
    import opd_diag.states.rollout as R

    model = _tiny_arch("qwen3")
    kw = dict(eos_ids=[2], pad_id=0)
    cfg = SamplingConfig(n_samples=1, temperature=1.0, max_new_tokens=5)

    def broken(device_type):
        def fail(*a, **k):
            raise RuntimeError("no C++ compiler")
        return fail

    monkeypatch.setattr(R, "_compiled_advance", broken)
    with pytest.raises(OpdDiagError, match="torch.compile of the decode step failed.*hf"):
        R.sample_batch(model, [[5, 6, 7]], [0], cfg, compile=True, **kw)


@pytest.mark.parametrize("compile", [False, pytest.param(True, marks=pytest.mark.skipif(
    not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
    reason="torch.compile on CPU needs a C++ compiler (none on PATH)"))])
def test_nan_logits_while_sampling_are_a_clear_error(compile):
    """A student whose logits turn NaN stops the decode with the dtype hint, eager or compiled
    (there the flag comes back from inside a block of iterations)."""
    import opd_diag.states.rollout as R

    model = _tiny_arch("qwen3")
    with torch.no_grad():
        model.lm_head.weight[7].fill_(float("nan"))
    cfg = SamplingConfig(n_samples=1, temperature=1.0, max_new_tokens=6)
    with pytest.raises(OpdDiagError, match="NaN/inf logits while sampling.*float32"):
        R.sample_batch(model, [[5, 6, 7], [9, 4]], [0, 1], cfg, compile=compile, eos_ids=[2],
                       pad_id=0)


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 1.0), (1.0, 0.9), (0.0, 1.0)])
def test_sample_next_flags_nan_and_inf_rows_but_not_masked_tokens(temperature, top_p):
    """A −inf logit is a token of probability 0 (never drawn, the row is fine); a NaN or +inf
    logit makes that row's flag false, whatever the sampling settings."""
    import opd_diag.states.rollout as R

    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    logits[:, :10] = float("-inf")
    logits[2, 20], logits[3, 30] = float("nan"), float("inf")
    u = torch.rand(4, generator=torch.Generator().manual_seed(1))
    tokens, ok = R._sample_next(logits, u, temperature, top_p)
    assert ok.tolist() == [True, True, False, False]
    assert (tokens[:2] >= 10).all()
    for _ in range(50):  # masked tokens are never drawn
        u = torch.rand(4)
        assert (R._sample_next(logits[:2], u[:2], temperature, top_p)[0] >= 10).all()
