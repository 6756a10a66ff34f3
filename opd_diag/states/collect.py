"""Offline capture: prompts → student rollouts → both models at the visited states → tables.

Work is done in batches of rollouts; each batch writes one ``rollouts`` shard and one ``states``
shard with the same key, so a killed run resumed with ``resume=True`` skips finished batches
and recomputes only the missing one (rows are seeded per (prompt, sample), so the recomputed
rows equal what the killed run would have written).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import pandas as pd
import pyarrow as pa
from tqdm.auto import tqdm

from ..core.errors import OpdDiagError
from ..core.models import Pair
from ..core.prompts import check_prompt_chars
from ..core.runs import RunWriter, check_capture_size, read_table
from . import distributed
from .backend import accepts_backend, current_backend
from .capture import CaptureConfig, score_states, states_table
from .rollout import SamplingConfig, render_prompt, row_seed

Verifier = Callable[[str, str], bool]
"""``verifier(completion_text, answer) -> bool``: is this completion correct?"""


def rollout_id(step: int, prompt_id: int, sample_idx: int) -> str:
    """Stable id of one rollout: offline runs use step −1."""
    return f"s{step}/p{prompt_id}/n{sample_idx}"


def render_prompts(pair: Pair, prompts: pd.DataFrame, sampling: SamplingConfig) -> pd.DataFrame:
    """Add ``rendered``, ``input_ids``, ``render`` to a prompt frame and check context lengths."""
    tok = pair.tokenizer
    limits = [m.context_length for m in (pair.student, pair.teacher) if m.context_length]
    check_prompt_chars(prompts, min(limits) if limits else None)  # before tokenising anything
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
    sampled = current_backend().sample(  # --backend hf|vllm (states/backend.py)
        pair.student.model, prompt_ids, seeds, sampling,
        eos_ids=pair.stop_token_ids, pad_id=tok.pad_token_id,  # both models' EOS ids
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
    args = dict(top_k=capture.top_k, temperature=temperature, vocab=pair.compare_vocab,
                pad_id=pair.tokenizer.pad_token_id, chunk_tokens=capture.chunk_tokens)
    p_ids, c_ids = [by_id[p] for p in keep.prompt_id], list(keep.completion_ids)
    if capture.teacher_topk_only:  # sparse teacher: a local teacher censored to its top-K
        from .sparse import local_topk, score_states_topk_only

        view = local_topk(pair.teacher.model, p_ids, c_ids, k=capture.teacher_topk_only,
                          **{k: v for k, v in args.items() if k != "top_k"})
        scored = score_states_topk_only(pair.student.model, view, p_ids, c_ids, **args)
    else:
        scored = score_states(pair.student.model, pair.teacher.model, p_ids, c_ids, **args)
    return states_table(scored, list(keep.rollout_id), list(keep.step), list(keep.n_tokens))


_REUSE: ContextVar[Path | None] = ContextVar("opd_diag_reuse_student_rollouts", default=None)


@contextmanager
def reuse_student_rollouts(source: str | Path | None):
    """Inside this block, a capture whose student, prompts, sampling config and EOS set equal
    those of the run ``source`` copies its rollouts shards instead of sampling them again (the
    scoring still runs: the teacher may differ). Any other capture — e.g. the teacher's own
    rollouts, where the sampler is the teacher — samples as usual. Used by ``rank-teachers``:
    the student is sampled once for every candidate teacher."""
    token = _REUSE.set(None if source is None else Path(source))
    try:
        yield
    finally:
        _REUSE.reset(token)


def _reusable_source(config: dict, meta: dict, prompts: pd.DataFrame):
    """The run whose rollouts this capture may copy, or None (see :func:`reuse_student_rollouts`)."""
    source = _REUSE.get()
    if source is None or not (source / "run.json").is_file():
        return None
    from ..core.runs import load_run

    src = load_run(source)
    same_student = {k: v for k, v in src.meta.get("models", {}).get("student", {}).items()
                    if k != "device"} == {k: v for k, v in meta["models"]["student"].items()
                                          if k != "device"}
    same_eos = {k: v for k, v in src.meta.items() if "eos" in k} == \
        {k: v for k, v in meta.items() if "eos" in k} and \
        src.meta.get("models", {}).get("stop_token_ids", {}).get("used") == \
        meta["models"].get("stop_token_ids", {}).get("used")  # the stop set includes the teacher's
    same_prompts = [list(map(int, x)) for x in src.prompts.input_ids] == \
        [list(map(int, x)) for x in prompts.input_ids]
    same = (src.config.get("sampling") == config["sampling"] and same_student and same_eos
            and same_prompts and src.meta.get("backend") == meta.get("backend"))
    return src.path if same else None


@accepts_backend  # backend= "hf" | "vllm" | an object: how rollouts are sampled
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
    ``backend`` (``"hf"`` default, ``"vllm"``, or a backend object) samples the rollouts;
    scoring is always the HF capture engine. Inside ``use_backend(...)`` the default is the
    active backend.
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
    meta = {"models": pair.describe(), "seeds": {"sampling": sampling.seed},
            "backend": current_backend().describe()}
    if capture.teacher_topk_only:
        from ..core.sparse import COLUMN_STATUS

        meta["teacher_topk_only"] = {"k": capture.teacher_topk_only, "status": COLUMN_STATUS}
    meta.update({k: v for k, v in (extra_meta or {}).items() if k != "config"})
    # before any list of rollouts is built: 10^8 samples must be refused, not swapped to death
    check_capture_size(len(prompts) * sampling.n_samples, sampling.max_new_tokens, capture.top_k,
                       out)
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
        source = _reusable_source(config, meta, prompts)
        if source is not None and ctx.is_main:
            run.update_meta(student_rollouts_from=str(source))
        mine = distributed.shard(ctx, len(batches))
        bar = tqdm(mine, desc="capture", unit="batch", disable=not progress or not ctx.is_main)
        for b in bar:
            _capture_batch(run, f"{b:06d}", pair, prompts, batches[b], sampling, capture, verifier,
                           source)
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
                   capture: CaptureConfig, verifier: Verifier | None = None,
                   source: Path | None = None) -> None:
    if run.has_shard("states", key):
        return
    done = run.existing_shard("rollouts", key)
    copied = None if source is None else RunWriter(source, {}).existing_shard("rollouts", key)
    if done is not None:
        rollouts = read_table(done)
    elif copied is not None:  # the same student rollouts, sampled once (reuse_student_rollouts)
        rollouts = read_table(copied)
        run.write_shard("rollouts", key, rollouts)
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
