"""Greedy accuracy of a model directory on a held-out eval set, per subset.

This loads through the generic HF path (``AutoModelForCausalLM`` + ``AutoTokenizer``), exactly as
a user model would be loaded, decodes greedily with left-padded batches and the KV cache (HF
``generate``), and checks each completion with the task's verifier.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from ..tasks import get_task


def load(model_dir: str | Path):
    """``(model, tokenizer)`` from a local HF directory, fp32, eval mode, left padding."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    tok.padding_side = "left"
    return model, tok


@torch.no_grad()
def generate_greedy(
    model, tok, prompts: list[str], *, batch_size: int = 128, max_new_tokens: int = 160
) -> list[str]:
    """Greedy completions (text without special tokens) for ``prompts``, in order."""
    outs: list[str] = []
    for i in range(0, len(prompts), batch_size):
        enc = tok(prompts[i : i + batch_size], return_tensors="pt", padding=True)
        gen = model.generate(
            **enc,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        outs += tok.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return outs


def evaluate(
    model_dir: str | Path | tuple,
    eval_df: pd.DataFrame,
    batch_size: int = 128,
    *,
    task: str = "addition",
    max_new_tokens: int = 160,
) -> dict[str, float]:
    """Greedy accuracy per ``subset`` of ``eval_df`` (columns ``prompt``, ``answer``, ``subset``).

    Args:
        model_dir: a model directory, or an already loaded ``(model, tokenizer)`` pair.
        eval_df: the eval set; without a ``subset`` column everything is subset ``"all"``.
        batch_size: prompts per ``generate`` call.
        task: the registered task whose verifier scores the completions.
    """
    model, tok = model_dir if isinstance(model_dir, tuple) else load(model_dir)
    checker = get_task(task)
    texts = generate_greedy(
        model, tok, list(eval_df["prompt"]), batch_size=batch_size, max_new_tokens=max_new_tokens
    )
    ok = [checker.check(t, str(a)) for t, a in zip(texts, eval_df["answer"])]
    subsets = eval_df["subset"] if "subset" in eval_df else pd.Series(["all"] * len(eval_df))
    frame = pd.DataFrame({"subset": list(subsets), "ok": ok})
    return {
        k: round(float(v), 4) for k, v in frame.groupby("subset", sort=False)["ok"].mean().items()
    }
