"""Tiny, fully local model pairs for tests, benchmarks and the bare demo.

Nothing here touches the network: the tokenizer is built with ``tokenizers`` and the models are
randomly initialised standard ``LlamaForCausalLM`` checkpoints written with ``save_pretrained``
(safetensors), so they load through exactly the code path of a user's model directory.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]


def make_tokenizer(vocab_size: int = 64, eos_token: str = "<eos>"):
    """A word-level ``PreTrainedTokenizerFast`` with tokens ``w0 … w{n}`` plus specials
    (``eos_token`` may name another token: same token→id map, different special tokens)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(vocab_size - len(SPECIALS))]
    vocab = {tok: i for i, tok in enumerate(SPECIALS + words)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<bos>", eos_token=eos_token, pad_token="<pad>",
        unk_token="<unk>",
    )


def make_model_dir(
    path: str | Path,
    *,
    vocab_size: int = 64,
    logit_rows: int | None = None,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 4,
    seed: int = 0,
    base: str | Path | None = None,
    noise: float = 0.0,
    max_positions: int = 512,
    tokenizer=None,
    max_new_tokens: int | None = 256,
) -> Path:
    """Write a random (or perturbed) tiny Llama model directory.

    Args:
        vocab_size: tokenizer size.
        logit_rows: LM-head width (≥ vocab_size) to mimic padded heads such as Qwen's.
        base: copy this model directory's weights instead of a fresh init …
        noise: … and add Gaussian noise of this std to every weight (a "related" model).
        max_new_tokens: written to generation_config.json (the CLI's default budget; None
            writes none, so the CLI requires --max-new-tokens).
    """
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tokenizer = tokenizer or make_tokenizer(vocab_size)
    torch.manual_seed(seed)
    if base is not None:
        model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    else:
        config = LlamaConfig(
            vocab_size=logit_rows or len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 4,
            num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
            max_position_embeddings=max_positions, tie_word_embeddings=False,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        model = LlamaForCausalLM(config)
        with torch.no_grad():  # larger logits than the default init: peaked, LLM-like distributions
            model.lm_head.weight.normal_(0.0, 0.5)
    if noise:
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * noise)
    _save(model, tokenizer, path, max_new_tokens)
    return path


def _save(model, tokenizer, path: Path, max_new_tokens: int | None) -> None:
    model.generation_config.max_new_tokens = max_new_tokens
    model.save_pretrained(str(path), safe_serialization=True)
    tokenizer.save_pretrained(str(path))


def make_pair_dirs(root: str | Path, *, vocab_size: int = 64, noise: float = 0.02,
                   **kw) -> tuple[Path, Path]:
    """A teacher and a student that is the teacher plus weight noise (related, not identical)."""
    root = Path(root)
    teacher = make_model_dir(root / "teacher", vocab_size=vocab_size, seed=0, **kw)
    student = make_model_dir(root / "student", vocab_size=vocab_size, seed=1, base=teacher,
                             noise=noise)
    return student, teacher


def write_prompts(path: str | Path, n: int = 8, words: int = 5, seed: int = 0,
                  vocab_size: int = 64) -> Path:
    """A JSONL prompt file of random word sequences for the tiny tokenizer."""
    import json
    import random

    rng = random.Random(seed)
    path = Path(path)
    with open(path, "w") as fh:
        for _ in range(n):
            text = " ".join(f"w{rng.randrange(vocab_size - len(SPECIALS))}" for _ in range(words))
            fh.write(json.dumps({"prompt": text}) + "\n")
    return path


# --- realistic shapes (issue 12): Qwen2-class vocabulary and heads, random-init, tiny depth ---

QWEN_REGULAR = 151_643  # Qwen2 / Qwen2.5 BPE tokens; ids 151,643 … 151,664 are the specials
QWEN_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>",
]
QWEN_HEADS = {"student": 151_936, "teacher": 152_064}  # Qwen2.5-1.5B vs -7B logit rows
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@functools.lru_cache(maxsize=2)
def _qwen_core(n_regular: int):
    """A byte-level BPE with ``n_regular`` tokens: the 256 byte symbols, then every two-symbol
    merge, then three-symbol ones (a valid merge table, built in about a second)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = sorted(ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    merges = []
    for a in alphabet:
        for b in alphabet:
            if len(vocab) == n_regular:
                break
            vocab[a + b] = len(vocab)
            merges.append((a, b))
    for ab in list(vocab)[len(alphabet):]:
        for c in alphabet:
            if len(vocab) == n_regular:
                break
            vocab[ab + c] = len(vocab)
            merges.append((ab, c))
        if len(vocab) == n_regular:
            break
    core = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    return core.to_str()


def make_qwen_tokenizer(kind: str = "instruct", n_regular: int = QWEN_REGULAR):
    """A Qwen2.5-shaped tokenizer: ``n_regular`` BPE tokens + the 22 Qwen specials (151,665).

    ``kind="instruct"``: EOS ``<|im_end|>`` and a ChatML chat template; ``"base"``: EOS
    ``<|endoftext|>`` and no chat template. The token→id map is the same for both.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    if kind not in ("base", "instruct"):
        raise ValueError(f"kind must be 'base' or 'instruct', got {kind!r}")
    core = Tokenizer.from_str(_qwen_core(n_regular))
    tok = PreTrainedTokenizerFast(tokenizer_object=core)
    tok.add_special_tokens({"additional_special_tokens": QWEN_SPECIALS})  # ids 151,643 …
    tok.eos_token = "<|im_end|>" if kind == "instruct" else "<|endoftext|>"
    tok.pad_token = "<|endoftext|>"
    if kind == "instruct":
        tok.chat_template = CHATML
    return tok


def make_qwen2_dir(path: str | Path, tokenizer, *, logit_rows: int = QWEN_HEADS["student"],
                   hidden: int = 32, layers: int = 1, heads: int = 2, kv_heads: int = 1,
                   intermediate: int | None = None, head_std: float = 0.5,
                   dtype: torch.dtype = torch.float32, seed: int = 0,
                   max_new_tokens: int | None = 16) -> Path:
    """A random-init ``Qwen2ForCausalLM`` with a real-width head (``logit_rows``), tiny depth
    by default (``benchmarks/gpu_check.py`` builds 0.5B / 1.5B shapes with it)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    path = Path(path)
    torch.manual_seed(seed)
    eos = sorted({tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", tokenizer.eos_token)})
    config = Qwen2Config(vocab_size=logit_rows, hidden_size=hidden,
                         intermediate_size=intermediate or hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, max_position_embeddings=4096,
                         tie_word_embeddings=False, eos_token_id=eos if len(eos) > 1 else eos[0],
                         bos_token_id=None, pad_token_id=tokenizer.pad_token_id)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():  # peaked distributions, like a trained head
        model.lm_head.weight.normal_(0.0, head_std)
    _save(model.to(dtype), tokenizer, path, max_new_tokens)
    return path


def make_qwen_pair_dirs(root: str | Path, **kw) -> tuple[Path, Path]:
    """A base student (151,936-row head, EOS ``<|endoftext|>``, no chat template) and an
    instruct teacher (152,064-row head, EOS ``<|im_end|>``, ChatML): the paper's setting."""
    root = Path(root)
    student = make_qwen2_dir(root / "qwen-base", make_qwen_tokenizer("base"),
                             logit_rows=QWEN_HEADS["student"], seed=1, **kw)
    teacher = make_qwen2_dir(root / "qwen-instruct", make_qwen_tokenizer("instruct"),
                             logit_rows=QWEN_HEADS["teacher"], seed=0, **kw)
    return student, teacher


def make_granite_dir(path: str | Path, *, vocab_size: int = 64, logits_scaling: float = 8.0,
                     hidden: int = 32, layers: int = 1, heads: int = 4, seed: int = 0,
                     tokenizer=None) -> Path:
    """A random-init ``GraniteForCausalLM``: its forward divides the logits by
    ``logits_scaling`` (and scales embeddings, residuals and attention), which a re-implemented
    head must reproduce."""
    from transformers import GraniteConfig, GraniteForCausalLM

    path = Path(path)
    tokenizer = tokenizer or make_tokenizer(vocab_size)
    torch.manual_seed(seed)
    config = GraniteConfig(vocab_size=len(tokenizer), hidden_size=hidden,
                           intermediate_size=hidden * 2, num_hidden_layers=layers,
                           num_attention_heads=heads, num_key_value_heads=heads,
                           max_position_embeddings=512, tie_word_embeddings=False,
                           logits_scaling=logits_scaling, embedding_multiplier=4.0,
                           residual_multiplier=0.5, attention_multiplier=1.0 / (hidden // heads),
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=tokenizer.pad_token_id)
    model = GraniteForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, 2.0)
    _save(model, tokenizer, path, 32)
    return path
