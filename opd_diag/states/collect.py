"""Offline capture: prompts → student rollouts → both models at the visited states → tables.

Work is done in batches of rollouts; each batch writes one ``rollouts`` shard and one ``states``
shard with the same key, so a killed run resumed with ``resume=True`` skips finished batches
and recomputes only the missing one (rows are seeded per (prompt, sample), so the recomputed
rows equal what the killed run would have written).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
from tqdm.auto import tqdm

from ..core.errors import OpdDiagError
from ..core.models import Pair
from ..core.runs import RunWriter, read_table
from . import distributed
from .capture import CaptureConfig, score_states, states_table
from .rollout import SamplingConfig, eos_token_ids, render_prompt, row_seed, sample_batch

Verifier = Callable[[str, str], bool]
"""``verifier(completion_text, answer) -> bool``: is this completion correct?"""


def rollout_id(step: int, prompt_id: int, sample_idx: int) -> str:
    """Stable id of one rollout: offline runs use step −1."""
    return f"s{step}/p{prompt_id}/n{sample_idx}"


def render_prompts(pair: Pair, prompts: pd.DataFrame, sampling: SamplingConfig) -> pd.DataFrame:
    """Add ``rendered``, ``input_ids``, ``render`` to a prompt frame and check context lengths."""
    tok = pair.tokenizer
    rendered, ids, how = zip(*(render_prompt(tok, p, sampling.raw_prompt) for p in prompts.prompt),
                             strict=True)
    out = prompts.copy()
    out["rendered"], out["input_ids"], out["render"] = list(rendered), [list(i) for i in ids], list(how)
    limits = [m.context_length for m in (pair.student, pair.teacher) if m.context_length]
    limit = min(limits) if limits else None
    for pid, ids_i in zip(out.prompt_id, out.input_ids, strict=True):
        if not ids_i:
            raise OpdDiagError(f"prompt {pid} renders to zero tokens")
        if limit is not None and len(ids_i) + sampling.max_new_tokens > limit:
            raise OpdDiagError(
                f"prompt {pid} is {len(ids_i)} tokens; with max_new_tokens="
                f"{sampling.max_new_tokens} it exceeds the context window ({limit} tokens). "
                "Shorten the prompt or lower --max-new-tokens"
            )
    return out


def generate_rollouts(pair: Pair, prompts: pd.DataFrame, rows: list[tuple[int, int]],
                      sampling: SamplingConfig, step: int = -1,
                      verifier: Verifier | None = None) -> pd.DataFrame:
    """Sample the given (prompt_row, sample_idx) rows; returns a rollouts frame.

    ``correct`` is filled by ``verifier(completion_text, answer)`` where the prompt has an
    answer, and left null otherwise.
    """
    tok = pair.tokenizer
    pids = prompts.prompt_id.to_numpy()
    prompt_ids = [prompts.input_ids.iat[r] for r, _ in rows]
    seeds = [row_seed(sampling.seed + max(step, 0), int(pids[r]), s) for r, s in rows]
    sampled = sample_batch(
        pair.student.model, prompt_ids, seeds, sampling,
        eos_ids=eos_token_ids(pair.student.model, tok), pad_id=tok.pad_token_id,
        vocab_limit=pair.compare_vocab,
    )
    texts = [tok.decode(c, skip_special_tokens=True) for c, _ in sampled]
    answers = prompts.answer.tolist() if "answer" in prompts else [None] * len(prompts)
    correct = [None if verifier is None or answers[r] is None else bool(verifier(text, answers[r]))
               for (r, _), text in zip(rows, texts, strict=True)]
    return pd.DataFrame({
        "rollout_id": [rollout_id(step, int(pids[r]), s) for r, s in rows],
        "prompt_id": [int(pids[r]) for r, _ in rows],
        "step": step,
        "sample_idx": [s for _, s in rows],
        "completion": texts,
        "completion_ids": [c for c, _ in sampled],
        "n_tokens": [len(c) for c, _ in sampled],
        "stop_reason": [r for _, r in sampled],
        "correct": pd.array(correct, dtype="boolean"),
    })


def capture_rollouts(pair: Pair, prompts: pd.DataFrame, rollouts: pd.DataFrame,
                     capture: CaptureConfig, temperature: float):
    """States table (arrow) for a rollouts frame; empty completions are skipped."""
    by_id = dict(zip(prompts.prompt_id, prompts.input_ids, strict=True))
    keep = rollouts[rollouts.n_tokens > 0]
    if len(keep) == 0:
        return None
    scored = score_states(
        pair.student.model, pair.teacher.model,
        [by_id[p] for p in keep.prompt_id], list(keep.completion_ids),
        top_k=capture.top_k, temperature=temperature, vocab=pair.compare_vocab,
        pad_id=pair.tokenizer.pad_token_id, chunk_tokens=capture.chunk_tokens,
    )
    return states_table(scored, list(keep.rollout_id), list(keep.step), list(keep.n_tokens))


def run_capture(
    pair: Pair,
    prompts: pd.DataFrame,
    out: str | Path,
    *,
    sampling: SamplingConfig | None = None,
    capture: CaptureConfig | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    extra_meta: dict | None = None,
    verifier: Verifier | None = None,
) -> Path:
    """Sample student rollouts on ``prompts`` and capture both models at every visited state.

    Writes ``prompts``, ``rollouts`` and ``states`` tables into the run directory ``out``.
    """
    sampling = sampling or SamplingConfig()
    capture = capture or CaptureConfig()
    if capture.top_k > pair.compare_vocab:
        raise OpdDiagError(
            f"--top-k {capture.top_k} exceeds the vocabulary ({pair.compare_vocab} tokens)"
        )
    prompts = render_prompts(pair, prompts, sampling)
    config = {"sampling": sampling.to_dict(), "capture": capture.to_dict(),
              "n_prompts": len(prompts), **(extra_meta or {}).get("config", {})}
    meta = {"models": pair.describe(), "seeds": {"sampling": sampling.seed}}
    meta.update({k: v for k, v in (extra_meta or {}).items() if k != "config"})
    rows = [(r, s) for r in range(len(prompts)) for s in range(sampling.n_samples)]
    batches = [rows[i: i + sampling.batch_size] for i in range(0, len(rows), sampling.batch_size)]
    # Under torchrun each rank takes every world_size-th *global* batch (see distributed.py), so
    # the merged shards equal a single-process run; one process is the world_size == 1 case.
    ctx = distributed.context()
    if ctx.active:
        distributed.check_same_config(ctx, _rank_fingerprint(config, meta, prompts), "capture config")
    with distributed.open_run_ranks(ctx, out, "capture", config, resume=resume,
                                    overwrite=overwrite, extra=meta) as run:
        if ctx.is_main:
            run.write_shard("prompts", "00000", prompts)
        mine = distributed.shard(ctx, len(batches))
        bar = tqdm(mine, desc="capture", unit="batch", disable=not progress or not ctx.is_main)
        for b in bar:
            _capture_batch(run, f"{b:06d}", pair, prompts, batches[b], sampling, capture, verifier)
        run.update_meta(n_rollouts=len(rows))
    return Path(out)


def _rank_fingerprint(config: dict, meta: dict, prompts: pd.DataFrame) -> dict:
    """What must be equal on every rank: config, model files and the rendered prompts."""
    models = {role: {k: v for k, v in m.items() if k != "device"}
              for role, m in meta["models"].items() if isinstance(m, dict)}
    return {"config": config, "models": models,
            "prompts": [(int(p), list(map(int, ids)))
                        for p, ids in zip(prompts.prompt_id, prompts.input_ids, strict=True)]}


def _capture_batch(run: RunWriter, key: str, pair: Pair, prompts: pd.DataFrame,
                   batch: list[tuple[int, int]], sampling: SamplingConfig,
                   capture: CaptureConfig, verifier: Verifier | None = None) -> None:
    if run.has_shard("states", key):
        return
    done = run.existing_shard("rollouts", key)
    if done is not None:
        rollouts = read_table(done)
    else:
        rollouts = generate_rollouts(pair, prompts, batch, sampling, verifier=verifier)
        run.write_shard("rollouts", key, rollouts)
    table = None
    for lo in range(0, len(rollouts), capture.batch_size):
        part = capture_rollouts(pair, prompts, rollouts.iloc[lo: lo + capture.batch_size],
                                capture, sampling.temperature)
        if part is not None:
            table = part if table is None else _concat(table, part)
    if table is not None:
        run.write_shard("states", key, table)


def _concat(a: pa.Table, b: pa.Table) -> pa.Table:
    return pa.concat_tables([a, b])
