"""Supervised training of a zoo-v2 model (the v1 recipe of :mod:`opd_diag.zoo.train`, v2 tokenizer).

Same optimiser, schedule (:func:`opd_diag.zoo.train.lr_at`), completion-only loss with number
tokens up-weighted, length-sorted batch pools and one thread; what changes is the tokenizer (the
learned BPE of :mod:`.tokenizer`), the task (``sort``) and the context (512 positions).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from ...tasks import get_task
from ..train import ModelSpec, _shrunk, lr_at
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
    """Train ``spec``; returns ``(model, stats)`` like :func:`opd_diag.zoo.train.train_model`."""
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    torch.set_num_threads(1)
    torch.manual_seed(spec.seed)
    rng = random.Random(spec.seed)
    if spec.init_from:
        model = AutoModelForCausalLM.from_pretrained(str(init_dir), dtype=torch.float32)
    else:
        model = LlamaForCausalLM(make_config(spec))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=(0.9, 0.98), weight_decay=0.01)
    n_steps = steps if steps is not None else spec.steps
    sched = spec if steps is None else _shrunk(spec, n_steps)
    numbers = number_mask()
    losses: list[float] = []
    t0 = time.perf_counter()
    bar = tqdm(total=n_steps, desc=spec.name, disable=not progress, mininterval=5.0)
    data = batches(spec, rng)
    for step in range(n_steps):
        ids_B_T, labels_B_T = next(data)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, sched)
        loss = weighted_loss(model(input_ids=ids_B_T).logits, labels_B_T, spec.number_weight,
                             numbers)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        bar.update(1)
        if log_every and step % log_every == 0:
            print(f"[{spec.name}] step {step} loss {sum(losses[-log_every:]) / len(losses[-log_every:]):.4f} "
                  f"t={time.perf_counter() - t0:.0f}s", flush=True)
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
            break
    bar.close()
    model.eval()
    tail = losses[-50:]
    stats = {
        "steps_done": len(losses), "steps_planned": n_steps,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "final_loss": round(sum(tail) / len(tail), 5),
        "loss_curve": [round(sum(losses[i : i + 50]) / len(losses[i : i + 50]), 4)
                       for i in range(0, len(losses), 50)],
        "threads": torch.get_num_threads(),
    }
    return model, stats
