"""Tiny, fully local model pairs for tests, benchmarks and the bare demo.

Nothing here touches the network: the tokenizer is built with ``tokenizers`` and the models are
randomly initialised standard ``LlamaForCausalLM`` checkpoints written with ``save_pretrained``
(safetensors), so they load through exactly the code path of a user's model directory.
"""

from __future__ import annotations

from pathlib import Path

import torch

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]


def make_tokenizer(vocab_size: int = 64):
    """A word-level ``PreTrainedTokenizerFast`` with tokens ``w0 … w{n}`` plus specials."""
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
        tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
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
) -> Path:
    """Write a random (or perturbed) tiny Llama model directory.

    Args:
        vocab_size: tokenizer size.
        logit_rows: LM-head width (≥ vocab_size) to mimic padded heads such as Qwen's.
        base: copy this model directory's weights instead of a fresh init …
        noise: … and add Gaussian noise of this std to every weight (a "related" model).
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
    model.save_pretrained(str(path), safe_serialization=True)
    tokenizer.save_pretrained(str(path))
    return path


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
