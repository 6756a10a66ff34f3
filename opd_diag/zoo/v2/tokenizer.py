"""The zoo-v2 BPE tokenizer, trained (deterministically) with ``tokenizers`` on the sort task's text.

Unlike v1's hand-written word-level vocabulary, v2 learns its vocabulary: a byte-pair-encoding
model over a Metaspace pre-tokenizer (``"▁"`` marks a word start, as in SentencePiece/Llama), trained
on a fixed corpus (:func:`corpus`: ``CORPUS_PROBLEMS`` problems, every style and template, seed
``CORPUS_SEED``) with target size ``VOCAB_SIZE``. The trainer stops when no pair of symbols repeats
``MIN_FREQUENCY`` times, so the real size is what the corpus supports (recorded in the README).

Canonical text (tokens separated by one space) round-trips exactly:
``decode(encode(s), skip_special_tokens=True) == s``. Words never cross a space, so encoding a
prompt and a completion separately gives the ids of the joined text (no boundary effects).
Every v2 model ships a copy of the same ``tokenizer.json``.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator

from ...core.errors import OpdDiagError

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD, BOS, EOS, UNK = SPECIALS
VOCAB_SIZE = 4096
MIN_FREQUENCY = 2
CORPUS_PROBLEMS = 4000
CORPUS_SEED = 20260
MODEL_MAX_LENGTH = 512


def corpus(task: str = "sort", n: int = CORPUS_PROBLEMS, seed: int = CORPUS_SEED) -> Iterator[str]:
    """The tokenizer's training text: prompt and completion lines of ``n`` problems."""
    from ...tasks import get_task

    t = get_task(task)
    rng = random.Random(seed)
    for _ in range(n):
        p = t.sample(rng, rng.choice(t.difficulties))
        for template in t.templates:
            yield t.render_prompt(p, template)
        for style in t.styles:
            yield t.render_reasoning(p, style, rng)


def train_core(task: str = "sort"):
    """Train the raw ``tokenizers.Tokenizer`` (deterministic: single-threaded, fixed corpus)."""
    import os

    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    core = Tokenizer(models.BPE(unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    core.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, min_frequency=MIN_FREQUENCY, special_tokens=list(SPECIALS),
        show_progress=False,
    )
    core.train_from_iterator(list(corpus(task)), trainer=trainer)
    bos = core.token_to_id(BOS)
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos)]
    )
    return core


@functools.lru_cache(maxsize=1)
def _core_json() -> str:
    return train_core().to_str()


def build_tokenizer():
    """The v2 tokenizer as a ``PreTrainedTokenizerFast`` (left padding, like v1)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_core_json()),
        bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        padding_side="left", clean_up_tokenization_spaces=False,
        model_max_length=MODEL_MAX_LENGTH,
    )


def save_tokenizer(out_dir) -> None:
    build_tokenizer().save_pretrained(str(out_dir))


@functools.lru_cache(maxsize=1)
def _fast():
    from tokenizers import Tokenizer

    core = Tokenizer.from_str(_core_json())
    core.post_processor = None  # no <bos>: encode_fast returns the bare ids
    return core


def vocab_size() -> int:
    return _fast().get_vocab_size()


def token_id(tok: str) -> int:
    i = _fast().token_to_id(tok)
    if i is None:
        raise OpdDiagError(f"token {tok!r} is not in the zoo-v2 vocabulary")
    return i


def encode_fast(text: str) -> list[int]:
    """Ids of canonical ``text`` without ``<bos>``; raises ``OpdDiagError`` if any maps to <unk>."""
    ids = _fast().encode(text, add_special_tokens=False).ids
    if token_id(UNK) in ids:
        raise OpdDiagError(f"text has characters the zoo-v2 tokenizer cannot encode: {text[:80]!r}")
    return ids


def encode_batch(texts: list[str]) -> list[list[int]]:
    return [e.ids for e in _fast().encode_batch(texts, add_special_tokens=False)]


def decode_fast(ids: list[int]) -> str:
    return _fast().decode(ids, skip_special_tokens=True)


def number_mask():
    """Bool tensor over the vocabulary: tokens that are (pieces of) numbers."""
    import torch

    vocab = _fast().get_vocab()
    mask = torch.zeros(len(vocab), dtype=torch.bool)
    for tok, i in vocab.items():
        s = tok.lstrip("▁")
        mask[i] = bool(s) and s.isdigit()
    return mask
