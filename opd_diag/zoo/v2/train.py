"""Supervised training of a zoo-v2 model (the v1 recipe of :mod:`opd_diag.zoo.train`, v2 tokenizer).

Same optimiser, schedule (:func:`opd_diag.zoo.train.lr_at`), completion-only loss with number
tokens up-weighted, length-sorted batch pools and one thread; what changes is the tokenizer (the
learned BPE of :mod:`.tokenizer`), the task (``sort``) and the context (512 positions).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import torch

from ...tasks import get_task
from ..train import ModelSpec, fit
from .tokenizer import (
    BOS,
    EOS,
    MODEL_MAX_LENGTH,
    PAD,
    encode_batch,
    number_mask,
    token_id,
    vocab_size,
)


def make_config(spec: ModelSpec):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size(), hidden_size=spec.d_model, num_hidden_layers=spec.n_layers,
        num_attention_heads=spec.n_heads, num_key_value_heads=spec.n_heads,
        intermediate_size=spec.d_ff, max_position_embeddings=MODEL_MAX_LENGTH,
        tie_word_embeddings=True, bos_token_id=token_id(BOS), eos_token_id=token_id(EOS),
        pad_token_id=token_id(PAD),
    )


def examples(spec: ModelSpec, rng: random.Random, n: int) -> list[tuple[list[int], int]]:
    """``n`` sequences ``<bos> prompt completion <eos>`` with their prompt lengths (incl. bos)."""
    task = get_task(spec.task)
    diffs, weights = zip(*spec.mix)
    prompts, completions = [], []
    for _ in range(n):
        problem = task.sample(rng, rng.choices(diffs, weights)[0])
        p, c = task.example(problem, rng.choice(spec.templates), spec.style, rng)
        prompts.append(p)
        completions.append(c)
    bos, eos = token_id(BOS), token_id(EOS)
    out = []
    for p_ids, c_ids in zip(encode_batch(prompts), encode_batch(completions)):
        out.append(([bos] + p_ids + c_ids + [eos], len(p_ids) + 1))
    return out


def batches(spec: ModelSpec, rng: random.Random, pool: int = 8
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    pad = token_id(PAD)
    while True:
        seqs = sorted(examples(spec, rng, pool * spec.batch_size), key=lambda s: len(s[0]))
        chunks = [seqs[i : i + spec.batch_size] for i in range(0, len(seqs), spec.batch_size)]
        rng.shuffle(chunks)
        for chunk in chunks:
            width = max(len(ids) for ids, _ in chunk)
            ids_B_T = torch.full((len(chunk), width), pad, dtype=torch.long)
            labels_B_T = torch.full((len(chunk), width), -100, dtype=torch.long)
            for b, (ids, n_prompt) in enumerate(chunk):
                ids_B_T[b, : len(ids)] = torch.tensor(ids)
                labels_B_T[b, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
            yield ids_B_T, labels_B_T


def weighted_loss(logits_B_T_V, labels_B_T, number_weight: float, numbers: torch.Tensor):
    logits = logits_B_T_V[:, :-1].float()
    target = labels_B_T[:, 1:]
    mask = target != -100
    ce = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), target.clamp(min=0).reshape(-1), reduction="none"
    ).view_as(target)
    weight = torch.where(numbers[target.clamp(min=0)], number_weight, 1.0) * mask
    return (ce * weight).sum() / weight.sum()


def train_model(spec: ModelSpec, *, init_dir: Path | None = None, steps: int | None = None,
                max_seconds: float | None = None, progress: bool = True, log_every: int = 0):
    """Train ``spec``; returns ``(model, stats)`` like :func:`opd_diag.zoo.train.train_model`
    (the same loop, :func:`opd_diag.zoo.train.fit`, with this tokenizer's batches and loss)."""
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    torch.set_num_threads(1)
    torch.manual_seed(spec.seed)
    rng = random.Random(spec.seed)
    if spec.init_from:
        model = AutoModelForCausalLM.from_pretrained(str(init_dir), dtype=torch.float32)
    else:
        model = LlamaForCausalLM(make_config(spec))
    numbers = number_mask()
    stats = fit(model, spec, batches(spec, rng),
                lambda logits, labels: weighted_loss(logits, labels, spec.number_weight, numbers),
                steps=steps, max_seconds=max_seconds, progress=progress, log_every=log_every,
                mininterval=5.0)
    return model, stats
