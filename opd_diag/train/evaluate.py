"""Held-out evaluation: greedy accuracy and avg@n per subset, and gap recovery.

``gap recovery = (acc_now − acc_before) / (acc_teacher − acc_before)`` (paper §3.2), with the
teacher's and the initial student's accuracies measured once, on the same set with the same
decoding, and stored in ``run.json`` (``eval_teacher``, ``eval_initial``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import OpdDiagError
from ..core.prompts import load_prompts
from ..states.rollout import SamplingConfig, eos_token_ids, row_seed, sample_batch
from ..tasks.verify import Verifier

EVAL_SEED_OFFSET = 1_000_003  # eval sampling never reuses a training row's seed


def load_eval_prompts(path: str | Path) -> pd.DataFrame:
    """A prompt file with answers; keeps a ``subset`` column when the file has one."""
    df = load_prompts(path)
    raw = _raw_columns(Path(path))
    df["subset"] = raw["subset"].astype(str).tolist() if "subset" in raw else "all"
    require_answers(df, str(path))
    return df


def _raw_columns(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return pd.read_json(path, lines=True, dtype=False)
    if suffix == ".json":
        return pd.DataFrame(json.loads(path.read_text()))
    if suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def require_answers(prompts: pd.DataFrame, where: str) -> None:
    """Evaluation and answer filtering need a reference answer on every prompt."""
    if "answer" not in prompts or prompts["answer"].isna().any():
        missing = int(prompts["answer"].isna().sum()) if "answer" in prompts else len(prompts)
        raise OpdDiagError(
            f"{where}: {missing} of {len(prompts)} prompts have no 'answer'; evaluation needs a "
            "reference answer on every prompt (add an 'answer' column)"
        )


def _generate(model, tokenizer, prompt_ids: list[list[int]], seeds: list[int],
              sampling: SamplingConfig, vocab_limit: int | None) -> list[tuple[list[int], str]]:
    out = []
    eos, bs = eos_token_ids(model, tokenizer), sampling.batch_size
    for lo in range(0, len(prompt_ids), bs):
        out += sample_batch(model, prompt_ids[lo: lo + bs], seeds[lo: lo + bs], sampling,
                            eos_ids=eos, pad_id=tokenizer.pad_token_id, vocab_limit=vocab_limit)
    return out


def evaluate_model(model, tokenizer, prompts: pd.DataFrame, verifier: Verifier, *,
                   greedy: bool, n_samples: int, temperature: float, top_p: float,
                   max_new_tokens: int, batch_size: int, seed: int,
                   vocab_limit: int | None = None) -> tuple[pd.DataFrame, dict]:
    """Score ``model`` on rendered ``prompts`` (``input_ids``, ``answer``, ``subset``).

    Returns per-sample rows (``mode`` ``greedy`` or ``avg@n``) and a flat summary:
    ``{mode}_acc`` and ``{mode}_acc/{subset}``.
    """
    modes = ([("greedy", 1, 0.0, 1.0)] if greedy else []) + (
        [(f"avg@{n_samples}", n_samples, temperature, top_p)] if n_samples else [])
    frames = []
    for mode, n, temp, tp in modes:
        rows = [(r, s) for r in range(len(prompts)) for s in range(n)]
        cfg = SamplingConfig(n_samples=n, temperature=temp, top_p=tp, batch_size=batch_size,
                             max_new_tokens=max_new_tokens, seed=seed)
        seeds = [row_seed(seed + EVAL_SEED_OFFSET, int(prompts.prompt_id.iat[r]), s) for r, s in rows]
        outs = _generate(model, tokenizer, [prompts.input_ids.iat[r] for r, _ in rows], seeds,
                         cfg, vocab_limit)
        texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids, _ in outs]
        frames.append(pd.DataFrame({
            "mode": mode, "prompt_id": [int(prompts.prompt_id.iat[r]) for r, _ in rows],
            "subset": [prompts.subset.iat[r] for r, _ in rows], "sample_idx": [s for _, s in rows],
            "completion": texts, "n_tokens": [len(ids) for ids, _ in outs],
            "correct": [bool(verifier.check(t, prompts.answer.iat[r]))
                        for t, (r, _) in zip(texts, rows, strict=True)],
        }))
    per_sample = pd.concat(frames, ignore_index=True)
    return per_sample, summarize(per_sample)


def wilson_ci(p: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score 95% interval for a proportion ``p`` over ``n`` items (never outside [0, 1],
    sensible at p = 0 or 1, unlike the normal approximation)."""
    if n <= 0:
        return float("nan"), float("nan")
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def summarize(per_sample: pd.DataFrame) -> dict:
    """Accuracy per mode and per (mode, subset); avg@n averages prompts' mean correctness.

    Each mode's accuracy also gets ``{mode}_acc_ci_low/_high`` (Wilson 95% over the eval
    prompts; for avg@n the per-prompt means are treated as proportions over the prompts) and
    ``{mode}_n_prompts``.
    """
    out = {}
    for mode, g in per_sample.groupby("mode", sort=False):
        per_prompt = g.groupby(["subset", "prompt_id"]).correct.mean()
        out[f"{mode}_acc"] = float(per_prompt.mean())
        out[f"{mode}_n_prompts"] = int(len(per_prompt))
        out[f"{mode}_acc_ci_low"], out[f"{mode}_acc_ci_high"] = wilson_ci(
            float(per_prompt.mean()), len(per_prompt))
        for subset, acc in per_prompt.groupby(level="subset").mean().items():
            out[f"{mode}_acc/{subset}"] = float(acc)
    return out


def gap_recovery(now: dict, before: dict, teacher: dict) -> dict:
    """``(now − before) / (teacher − before)`` for every accuracy key (NaN when the gap is 0)."""
    out = {}
    for key, value in now.items():
        if not (key.endswith("_acc") or "_acc/" in key):  # CIs and counts have no recovery
            continue
        gap = teacher.get(key, np.nan) - before.get(key, np.nan)
        out[key.replace("_acc", "_gap_recovery", 1)] = (
            float((value - before[key]) / gap) if np.isfinite(gap) and abs(gap) > 1e-12 else float("nan"))
    return out
