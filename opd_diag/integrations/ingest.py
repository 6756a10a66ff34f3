"""Ingest trajectories logged by other trainers into a run directory our probes read.

Context: most OPD runs happen in TRL or verl. Both can dump the student's samples as text; this
module re-tokenises them, scores every completion position with both models (the same
``capture_rollouts`` as an offline capture) and writes ``prompts``/``rollouts``/``states`` tables
with the schema of :func:`opd_diag.states.collect.run_capture`, ``step`` taken from the log.

Formats (``fmt``):

* ``trl``: ``<output_dir>/completions/completions_{step:05d}.parquet`` written by
  ``DistillationTrainer``/``GRPOTrainer`` with ``log_completions=True``; columns ``step``,
  ``prompt``, ``completion``. PATH is the output dir, its ``completions/`` dir or one file.
* ``verl``: ``trainer.rollout_data_dir`` dumps, ``<step>.jsonl`` with ``input``, ``output``,
  ``score``, ``step`` (optional ``gts`` → answer, ``acc`` → correct). PATH is the dir or a file.
* ``jsonl``: our generic schema, one JSON object per line (a file or a dir of ``*.jsonl``)::

      {"step": 10,                      # optional, default -1 (offline)
       "prompt": "text" | "prompt_ids": [int, ...],          # one of the two
       "completion": "text" | "completion_ids": [int, ...],  # one of the two
       "reward": 0.5, "correct": true, "answer": "42"}       # optional

  Token ids are used as they are (exact); text is re-tokenised and checked as below.

Exactness: TRL and verl log ``decode(ids, skip_special_tokens=True)``, so ids must be rebuilt from
text. A completion is accepted only if ``decode(encode(text)) == text``. A prompt is matched, in
this order (``prompt_format="auto"``), as (1) a literal chat-template rendering, (2) a rendering
with its special tokens stripped, from which the user message is recovered and re-rendered —
accepted only if the re-rendering decodes back to exactly the logged text, or (3) raw text. For
chat-rendered prompts the whole sequence must also split consistently:
``encode(decode(prompt_ids + completion_ids)) == prompt_ids + completion_ids`` (no token merges
across the boundary). Any failure is an :class:`OpdDiagError` naming the file and row, raised
before a run directory exists. Text can still hide a non-canonical tokenisation the sampler
produced (e.g. "ab" sampled as "a"+"b"); only ``*_ids`` fields rule that out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..core.errors import OpdDiagError
from ..core.models import Pair
from ..core.prompts import read_jsonl_objects
from ..core.runs import open_run
from ..states.capture import CaptureConfig
from ..states.collect import capture_rollouts, rollout_id
from ..states.rollout import render_prompt

FORMATS = ("trl", "verl", "jsonl")
PROMPT_FORMATS = ("auto", "chat", "rendered", "raw")
_SENTINEL = "OPDDIAGSENTINEL"


# ---------------------------------------------------------------------------------------------
# Readers: each returns a frame with step, prompt, prompt_ids, completion, completion_ids,
# reward, correct, answer, source ("file:row"); None marks a field the log does not have.
# ---------------------------------------------------------------------------------------------


def _files(path: Path, pattern: str, what: str) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise OpdDiagError(f"{what} log {str(path)!r} does not exist")
    files = sorted(path.glob(pattern))
    if not files and (path / "completions").is_dir():
        files = sorted((path / "completions").glob(pattern))
    if not files:
        raise OpdDiagError(f"no {pattern} files under {str(path)!r}: not a {what} log directory")
    return files


def _require(df: pd.DataFrame, cols: tuple[str, ...], where: str, fmt: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise OpdDiagError(
            f"{where}: not a {fmt} log: missing column(s) {missing} (found {list(df.columns)})"
        )


def _read_jsonl_file(path: Path) -> list[dict]:
    return [{**row, "source": f"{path.name}:{i}"} for i, row in read_jsonl_objects(path)]


def read_trl(path: Path) -> pd.DataFrame:
    frames = []
    for f in _files(path, "completions_*.parquet", "TRL"):
        if f.suffix != ".parquet":
            raise OpdDiagError(f"{f}: not a TRL completions log (expected completions_*.parquet)")
        try:
            df = pd.read_parquet(f)
        except (OSError, ValueError) as exc:
            raise OpdDiagError(f"{f}: cannot read parquet: {exc}") from None
        _require(df, ("step", "prompt", "completion"), str(f), "TRL completions")
        frames.append(df.assign(source=[f"{f.name}:{i}" for i in range(len(df))]))
    return _normalise(pd.concat(frames, ignore_index=True), {})


def read_verl(path: Path) -> pd.DataFrame:
    rows = [r for f in _files(path, "*.jsonl", "verl") for r in _read_jsonl_file(f)]
    df = pd.DataFrame(rows)
    _require(df, ("input", "output"), str(path), "verl rollout_data_dir")
    if "step" not in df:
        df["step"] = [int(s.split(".")[0]) if s.split(".")[0].isdigit() else -1
                      for s in df.source]
    return _normalise(df, {"input": "prompt", "output": "completion", "score": "reward",
                           "acc": "correct", "gts": "answer"})


def read_generic(path: Path) -> pd.DataFrame:
    df = pd.DataFrame([r for f in _files(path, "*.jsonl", "JSONL") for r in _read_jsonl_file(f)])
    for a, b in (("prompt", "prompt_ids"), ("completion", "completion_ids")):
        if a not in df and b not in df:
            raise OpdDiagError(f"{path}: generic JSONL rows need {a!r} or {b!r} "
                               f"(found {[c for c in df.columns if c != 'source']})")
    return _normalise(df, {})


def _normalise(df: pd.DataFrame, rename: dict) -> pd.DataFrame:
    df = df.rename(columns=rename)
    out = pd.DataFrame({"source": df["source"]})
    for col in ("prompt", "prompt_ids", "completion", "completion_ids", "answer", "correct",
                "reward"):
        out[col] = [None if _missing(v) else v for v in df[col]] if col in df else None
    out["step"] = df["step"].tolist() if "step" in df else -1
    for row in out.itertuples():
        try:
            ok = not isinstance(row.step, bool) and int(row.step) == row.step
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise OpdDiagError(f"{row.source}: 'step' must be an integer, got {row.step!r}")
        for name in ("prompt", "completion"):
            text, ids = getattr(row, name), getattr(row, f"{name}_ids")
            if ids is None and not isinstance(text, str):
                raise OpdDiagError(f"{row.source}: {name!r} must be a string, got {text!r}")
    out["step"] = out["step"].astype(int)
    return out


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


READERS = {"trl": read_trl, "verl": read_verl, "jsonl": read_generic}


def read_log(fmt: str, path: str | Path) -> pd.DataFrame:
    """Read a trajectory log into the normalised frame (see the module docstring)."""
    if fmt not in READERS:
        raise OpdDiagError(f"unknown log format {fmt!r}; use one of {list(FORMATS)}")
    df = READERS[fmt](Path(path))
    if len(df) == 0:
        raise OpdDiagError(f"{path}: the {fmt} log has no rows")
    return df


# ---------------------------------------------------------------------------------------------
# Exact re-tokenisation
# ---------------------------------------------------------------------------------------------


@dataclass
class _Template:
    """A chat template split around the user message, with and without special tokens."""

    pre: str
    post: str
    pre_stripped: str
    post_stripped: str

    @classmethod
    def of(cls, tok) -> _Template | None:
        if not getattr(tok, "chat_template", None):
            return None
        text, _, _ = render_prompt(tok, _SENTINEL)
        if text.count(_SENTINEL) != 1:
            return None
        pre, post = text.split(_SENTINEL)
        strip = [_decode(tok, _encode(tok, s), skip=True) for s in (pre, post)]
        return cls(pre, post, *strip)


def _encode(tok, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


def _decode(tok, ids: list[int], skip: bool = False) -> str:
    return tok.decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=False)


def _prompt_from_text(tok, tpl: _Template | None, text: str, mode: str, where: str):
    """``(message, rendered, ids, how)`` for one logged prompt text, or an error naming it."""
    if mode in ("auto", "rendered") and tpl and text.startswith(tpl.pre) and text.endswith(tpl.post):
        ids = _encode(tok, text)
        if _decode(tok, ids) == text:
            return text[len(tpl.pre): len(text) - len(tpl.post)], text, ids, "rendered"
    if mode == "rendered":
        raise OpdDiagError(f"{where}: prompt is not a literal chat-template rendering that "
                           f"re-tokenises exactly: {text[:120]!r}")
    if mode == "chat" and tpl:  # the text is the user message itself
        rendered, ids, how = render_prompt(tok, text)
        if _decode(tok, ids) == rendered:
            return text, rendered, ids, how
    if mode in ("auto", "chat") and tpl:
        for message in _message_candidates(tpl, text):
            rendered, ids, how = render_prompt(tok, message)
            if _decode(tok, ids, skip=True) == text and _decode(tok, ids) == rendered:
                return message, rendered, ids, how
    if mode == "chat":
        raise OpdDiagError(f"{where}: cannot render prompt through the chat template and get "
                           f"back the logged text {text[:120]!r}")
    if _decode(tok, _encode(tok, text)) != text:
        got = _decode(tok, _encode(tok, text))
        raise OpdDiagError(f"{where}: prompt does not re-tokenise exactly: decode(encode(text)) "
                           f"= {got[:120]!r} != {text[:120]!r}; log token ids instead")
    rendered, ids, how = render_prompt(tok, text, raw=True)
    return text, rendered, ids, how


def _message_candidates(tpl: _Template, text: str) -> list[str]:
    """User messages whose stripped rendering may be ``text`` (the caller checks each exactly)."""
    pre, post = tpl.pre_stripped, tpl.post_stripped
    if len(text) < len(pre) + len(post) or not (text.startswith(pre) and text.endswith(post)):
        return []
    middle = text[len(pre): len(text) - len(post)]
    return list(dict.fromkeys([middle, middle.strip(), middle.lstrip(), middle.rstrip()]))


def _completion_ids(tok, text: str, where: str) -> list[int]:
    ids = _encode(tok, text)
    back = _decode(tok, ids)
    if back != text:
        raise OpdDiagError(f"{where}: completion does not re-tokenise exactly: decode(encode(text))"
                           f" = {back[:120]!r} != {text[:120]!r}; log token ids ('completion_ids')"
                           " or pass the tokenizer the run used")
    return ids


def tokenize_log(pair: Pair, log: pd.DataFrame, prompt_format: str = "auto"):
    """Prompts and rollouts frames (run_capture schema) for a normalised log, exactly or not at all."""
    if prompt_format not in PROMPT_FORMATS:
        raise OpdDiagError(f"unknown prompt format {prompt_format!r}; use {list(PROMPT_FORMATS)}")
    tok = pair.tokenizer
    tpl = _Template.of(tok)
    limits = [m.context_length for m in (pair.student, pair.teacher) if m.context_length]
    eos = set(pair.stop_token_ids)
    prompts: dict[tuple, dict] = {}
    cache: dict[str, tuple] = {}
    rows, counts = [], {}
    for r in log.itertuples():
        if r.prompt_ids is not None:
            ids = [int(i) for i in r.prompt_ids]
            text = r.prompt if isinstance(r.prompt, str) else _decode(tok, ids)
            prompt = (text, _decode(tok, ids), ids, "ids")
        else:
            if r.prompt not in cache:
                cache[r.prompt] = _prompt_from_text(tok, tpl, r.prompt, prompt_format, r.source)
            prompt = cache[r.prompt]
        if r.completion_ids is not None:
            comp = [int(i) for i in r.completion_ids]
        else:
            comp = _completion_ids(tok, r.completion, r.source)
        _check_ids(pair, prompt[2] + comp, r.source, limits)
        if prompt[3] in ("chat_template", "rendered") and comp:
            if _encode(tok, _decode(tok, prompt[2] + comp)) != prompt[2] + comp:
                raise OpdDiagError(f"{r.source}: prompt and completion tokens merge across their "
                                   "boundary when re-tokenised (no prefix-consistent split); "
                                   "log token ids instead")
        key = tuple(prompt[2])
        entry = prompts.setdefault(key, {"prompt_id": len(prompts), "prompt": prompt[0],
                                         "answer": r.answer, "rendered": prompt[1],
                                         "input_ids": prompt[2], "render": prompt[3]})
        pid, step = entry["prompt_id"], int(r.step)
        n = counts[(step, pid)] = counts.get((step, pid), -1) + 1
        rows.append({
            "rollout_id": rollout_id(step, pid, n), "prompt_id": pid, "step": step,
            "sample_idx": n, "completion": r.completion if isinstance(r.completion, str)
            else _decode(tok, comp, skip=True), "completion_ids": comp, "n_tokens": len(comp),
            "stop_reason": "eos" if comp and comp[-1] in eos else "unknown",
            "correct": None if r.correct is None else bool(r.correct),
            "reward": float("nan") if r.reward is None else float(r.reward),
            "source": r.source,
        })
    p = pd.DataFrame(list(prompts.values()))
    p["answer"] = [None if a is None else str(a) for a in p["answer"]]
    ro = pd.DataFrame(rows)
    ro["correct"] = pd.array(ro["correct"].tolist(), dtype="boolean")
    return p, ro


def _check_ids(pair: Pair, ids: list[int], where: str, limits: list[int]) -> None:
    bad = [i for i in ids if not 0 <= i < pair.compare_vocab]
    if bad:
        raise OpdDiagError(f"{where}: token id {bad[0]} is outside the shared vocabulary "
                           f"[0, {pair.compare_vocab}); wrong tokenizer?")
    if limits and len(ids) > min(limits):
        raise OpdDiagError(f"{where}: prompt + completion is {len(ids)} tokens, longer than the "
                           f"context window ({min(limits)})")


# ---------------------------------------------------------------------------------------------
# Ingest
# ---------------------------------------------------------------------------------------------


def ingest(pair: Pair, fmt: str, path: str | Path, out: str | Path, *,
           capture: CaptureConfig | None = None, temperature: float = 1.0,
           prompt_format: str = "auto", overwrite: bool = False, progress: bool = True) -> Path:
    """Turn a TRL / verl / generic JSONL trajectory log into a run directory.

    Args:
        pair: the student and teacher (the student must be the model the log came from, at the
            checkpoint you want to diagnose; the teacher is the one being assessed).
        fmt: ``"trl"``, ``"verl"`` or ``"jsonl"``.
        path: the log file or directory.
        out: run directory to create.
        capture: top-k size, forward batch size, LM-head chunking.
        temperature: scoring temperature (the sampling temperature of the logged run).
        prompt_format: ``auto`` | ``chat`` (text is the user message) | ``rendered`` (text is the
            full chat rendering, special tokens included) | ``raw``.
        overwrite: replace ``out`` if it exists.
        progress: show a progress bar.
    """
    from tqdm.auto import tqdm

    capture = capture or CaptureConfig()
    if capture.top_k > pair.compare_vocab:
        raise OpdDiagError(f"--top-k {capture.top_k} exceeds the vocabulary "
                           f"({pair.compare_vocab} tokens)")
    log = read_log(fmt, path)
    prompts, rollouts = tokenize_log(pair, log, prompt_format)
    config = {"source": {"format": fmt, "path": str(path), "prompt_format": prompt_format},
              "sampling": {"temperature": temperature}, "capture": capture.to_dict(),
              "n_prompts": len(prompts)}
    meta = {"models": pair.describe(), "n_rollouts": len(rollouts),
            "steps": sorted(int(s) for s in rollouts.step.unique())}
    batch = max(capture.batch_size, 1) * 8
    with open_run(out, "ingest", config, overwrite=overwrite, extra=meta) as run:
        run.write_shard("prompts", "00000", prompts)
        for b in tqdm(range(0, len(rollouts), batch), desc="ingest", disable=not progress):
            part, key, table = rollouts.iloc[b: b + batch], f"{b // batch:06d}", None
            run.write_shard("rollouts", key, part)
            for lo in range(0, len(part), capture.batch_size):
                scored = capture_rollouts(pair, prompts, part.iloc[lo: lo + capture.batch_size],
                                          capture, temperature)
                if scored is not None:
                    table = scored if table is None else _concat(table, scored)
            if table is not None:
                run.write_shard("states", key, table)
    return Path(out)


def _concat(a, b):
    import pyarrow as pa

    return pa.concat_tables([a, b])
