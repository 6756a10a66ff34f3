"""The zoo's shared word-level tokenizer (a real ``PreTrainedTokenizerFast``).

Context: top-k overlap between a student and a teacher only means something when the vocabulary
has a structured tail. With a 20-character vocabulary, top-4 already pulls in near-zero noise
tokens (feasibility §6.3). The zoo therefore uses ~330 tokens: number tokens ``0``-``199`` (digits
and column sums are single tokens), ~120 words, and punctuation. Every zoo model shares it.

Canonical text form: tokens separated by exactly one space, no leading/trailing space. The
pre-tokenizer splits on whitespace and decoding joins tokens with one space, so
``decode(encode(s), skip_special_tokens=True) == s`` for every canonical string made of known
tokens (tests check this for every task string). ``encode`` prepends ``<bos>``; completions are
trained to end with ``<eos>``. Prompt and completion concatenate at a space, so
``encode(prompt + " " + completion)`` is exactly ``encode(prompt) + encode(completion)`` minus the
second ``<bos>``: there are no tokenization-boundary effects in this zoo.
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import OpdDiagError

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD, BOS, EOS, UNK = SPECIALS

_PUNCT = ". , : ; ? ! ( ) + - * / = < > # | %".split()
_WORDS = """
a add added adding after again all also and answer are as at back be before begin big both but by
call carries carry check col column columns compute count digit digits do done down each end equal
equals even every few final find first fix for from front get gives go goes greater half hence how
if in into is it keep last left leaves less let look makes many minus more most much multiply next
no not now number numbers odd of on one ones only or other over pair part place plus put question
rest result resolve right same second see set so start step sum sums take than that the then there
third this thus times to total two up us value we what which with write yes zero
""".split()

VOCAB: tuple[str, ...] = (
    SPECIALS + tuple(str(n) for n in range(200)) + tuple(_PUNCT) + tuple(_WORDS)
)


def build_tokenizer():
    """Build the zoo tokenizer in memory (a ``PreTrainedTokenizerFast``)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if len(set(VOCAB)) != len(VOCAB):
        raise AssertionError("duplicate tokens in the zoo vocabulary")
    vocab = {tok: i for i, tok in enumerate(VOCAB)}
    core = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=256,
    )


def save_tokenizer(out_dir: str | Path) -> None:
    """Write the tokenizer files (``tokenizer.json``, ``tokenizer_config.json``, ...) into a dir."""
    build_tokenizer().save_pretrained(str(out_dir))


_IDS = {tok: i for i, tok in enumerate(VOCAB)}


def token_id(tok: str) -> int:
    return _IDS[tok]


def encode_fast(text: str) -> list[int]:
    """Token ids of canonical ``text`` *without* ``<bos>``; identical to the HF tokenizer's ids.

    Pure Python, so the training loop skips tokenizer overhead. Raises ``OpdDiagError`` on a token
    outside the vocabulary (the HF tokenizer would silently map it to ``<unk>``).
    """
    try:
        return [_IDS[t] for t in text.split()]
    except KeyError as err:
        raise OpdDiagError(f"token {err.args[0]!r} is not in the zoo vocabulary") from None


def decode_fast(ids: list[int]) -> str:
    """Inverse of :func:`encode_fast`, dropping special tokens."""
    return " ".join(VOCAB[i] for i in ids if VOCAB[i] not in SPECIALS)
