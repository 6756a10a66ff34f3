"""Issue 14 (2), end to end: padding both zoo models' vocabularies to Qwen2.5's 151,936 tokens
with never-used tokens of negligible mass leaves the pre-flight verdict unchanged.

A bias-free tied Llama head cannot give 151k new rows negligible mass at every state by itself
(the final hidden states of the zoo models have no direction that is positive at every state:
min cosine with their mean is -0.23). So the padded copy gets extra hidden coordinates (as many
as there are heads, so the hidden size stays a multiple of the head count); the first carries a
constant ``C`` from the embedding to the final norm and is read by nothing else (zero columns
into attention and MLP, zero rows out of them; the RMSNorm weights and eps are rescaled so the
other coordinates normalise exactly as before). The new head rows read only that coordinate,
with a large negative weight, so every new token's logit is hundreds below zero at every state
(-660 to -2,900 on the test prompts): its probability is 0 in fp32, yet the tokens are real
entries of the tokenizer and of
both heads (``compare_vocab`` = 151,936), so every probe runs over the full width.
"""

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file

from opd_diag.cli import main

WIDTH = 151_936
C = 1e-6  # the extra coordinate's constant: C^2 is ~1e-10 of any residual's mean square


def pad_model(src, dst, width: int = WIDTH, neg: float = 1e4):
    """Copy the local model directory ``src`` to ``dst`` with a ``width``-token vocabulary."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = json.loads((src / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["head_dim"] * cfg["num_attention_heads"] \
        == cfg["hidden_size"]
    d, v = cfg["hidden_size"], cfg["vocab_size"]
    e = cfg["num_attention_heads"]  # extra coordinates (the hidden size must stay a multiple of
    # the head count); only the first carries C, the rest are 0
    sd = {k: t.float() for k, t in load_file(src / "model.safetensors").items()}  # zoo: fp16
    if "lm_head.weight" not in sd:
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    scale = math.sqrt(d / (d + e))  # the norms average over d+e coordinates instead of d
    extra = torch.zeros(e)
    extra[0] = C
    new = {}
    for k, w in sd.items():
        if k == "model.embed_tokens.weight":
            w = torch.cat([w, torch.zeros(width - v, d)])
            w = torch.cat([w, extra.expand(width, e)], 1)
        elif k == "lm_head.weight":
            rows = torch.zeros(width - v, d + e)
            rows[:, d] = -neg  # reads only the extra coordinate
            w = torch.cat([torch.cat([w, torch.zeros(v, e)], 1), rows])
        elif k.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight", "gate_proj.weight",
                         "up_proj.weight")):
            w = torch.cat([w, torch.zeros(w.shape[0], e)], 1)  # nothing reads the coordinate
        elif k.endswith(("o_proj.weight", "down_proj.weight")):
            w = torch.cat([w, torch.zeros(e, w.shape[1])], 0)  # nothing writes it
        elif k == "model.norm.weight":
            w = torch.cat([w * scale, 1.0 / C * (extra > 0)])  # final h[d] = 1 / rms(x)
        elif k.endswith("layernorm.weight"):
            w = torch.cat([w * scale, torch.zeros(e)])
        new[k] = w.contiguous()
    cfg.update(hidden_size=d + e, vocab_size=width, tie_word_embeddings=False,
               rms_norm_eps=cfg["rms_norm_eps"] * d / (d + e))
    model = AutoModelForCausalLM.from_config(LlamaConfig(**{k: x for k, x in cfg.items()
                                                            if k not in ("architectures",)}))
    missing, unexpected = model.load_state_dict(new, strict=False)
    assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)
    model.save_pretrained(dst, safe_serialization=True)
    for f in src.iterdir():
        if f.name.startswith(("tokenizer", "generation_config", "special_tokens")):
            shutil.copy(f, dst / f.name)
    tj = json.loads((dst / "tokenizer.json").read_text())
    vocab = tj["model"]["vocab"]
    assert tj["model"]["type"] == "WordLevel" and len(vocab) == v
    vocab.update({f"<unused_{i}>": i for i in range(v, width)})
    (dst / "tokenizer.json").write_text(json.dumps(tj))
    return dst


@pytest.fixture(scope="module")
def padded(tmp_path_factory):
    from opd_diag.zoo import model_dir

    root = tmp_path_factory.mktemp("padded")
    return {name: pad_model(model_dir(name), root / name) for name in ("student-0", "teacher-a")}


def test_padded_copy_is_the_same_model_over_a_full_width_vocabulary(padded):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from opd_diag.zoo import model_dir

    for name, dst in padded.items():
        small = AutoModelForCausalLM.from_pretrained(model_dir(name))
        big = AutoModelForCausalLM.from_pretrained(dst)
        tok = AutoTokenizer.from_pretrained(dst)
        assert len(tok) == big.config.vocab_size == WIDTH
        ids = AutoTokenizer.from_pretrained(model_dir(name))(
            ["1 2 3 + 4 5 6 =", "9 9 + 1 ="], return_tensors="pt", padding=True)
        with torch.no_grad():
            a = torch.log_softmax(small(**ids).logits, -1)
            b = torch.log_softmax(big(**ids).logits, -1)
        v = a.shape[-1]
        assert torch.allclose(a, b[..., :v], atol=1e-4), (a - b[..., :v]).abs().max()
        # the 151k new tokens: real entries, exactly no probability mass in fp32
        assert b[..., v:].exp().sum().item() == 0.0 and b[..., v:].max() < -100


@pytest.mark.slow
def test_preflight_verdict_is_unchanged_by_vocabulary_padding(padded, tmp_path, monkeypatch):
    import opd_diag.zoo as zoo

    def verdict(out):
        assert main(["--quiet", "preflight", "--pair", "out-of-reach", "--budget", "small",
                     "--out", str(out)]) in (0, 3, 4)
        data = json.loads((out / "verdict.json").read_text())
        run = json.loads((out / "run.json").read_text())
        return data, run["models"]["compare_vocab"]

    small, v_small = verdict(tmp_path / "small")
    real = zoo.model_dir
    monkeypatch.setattr(zoo, "model_dir", lambda name: padded.get(name) or real(name))
    big, v_big = verdict(tmp_path / "big")
    assert (v_small, v_big) == (355, WIDTH)
    assert big["verdict"] == small["verdict"]
    a = {c["condition"]: c for c in small["conditions"]}
    b = {c["condition"]: c for c in big["conditions"]}
    assert a.keys() == b.keys()
    for cond in a:
        assert b[cond]["status"] == a[cond]["status"], cond
        va, vb = a[cond]["value"], b[cond]["value"]
        if isinstance(va, float) and math.isfinite(va):
            assert vb == pytest.approx(va, abs=2e-3), (cond, va, vb)
