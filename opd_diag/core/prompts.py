"""Prompt files: JSONL, JSON, parquet or CSV with a ``prompt`` column and an optional ``answer``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import OpdDiagError

SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
# Generous characters per token: no real tokenizer averages more, so a prompt longer than
# CHARS_PER_TOKEN x the context window cannot fit and is refused before it is tokenised.
CHARS_PER_TOKEN = 16
MAX_PROMPT_CHARS = 4_000_000  # when no context window is known (~1M tokens)


def check_prompt_chars(prompts: pd.DataFrame, context_tokens: int | None,
                       where: str = "") -> None:
    """Refuse prompts too long to fit ``context_tokens`` before any tokenising (a 50 MB prompt
    line would take a minute and GBs to tokenise only to be rejected afterwards)."""
    limit = MAX_PROMPT_CHARS if not context_tokens else CHARS_PER_TOKEN * int(context_tokens)
    why = ("" if not context_tokens else
           f" ({CHARS_PER_TOKEN} characters per token x the {context_tokens}-token context "
           "window)")
    lengths = prompts["prompt"].str.len().to_numpy()
    if len(lengths) and lengths.max() > limit:
        i = int(lengths.argmax())
        name = (f"{where}: row {i + 1}" if where else
                f"prompt {prompts['prompt_id'].iat[i] if 'prompt_id' in prompts else i}")
        raise OpdDiagError(f"{name} is {int(lengths[i]):,} characters, over the limit of "
                           f"{limit:,}{why}; it cannot fit the model: shorten or drop it")


def read_jsonl_objects(path: Path, hint: str = "") -> list[tuple[int, dict]]:
    """``(line number, object)`` for every non-blank line of a JSONL file; specific errors."""
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise OpdDiagError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise OpdDiagError(f"{path}:{lineno}: expected a JSON object{hint}")
        rows.append((lineno, row))
    return rows


def _read_jsonl(path: Path) -> pd.DataFrame:
    return pd.DataFrame([row for _, row in read_jsonl_objects(path, " with a 'prompt' key")])


def load_prompts(path: str | Path) -> pd.DataFrame:
    """Read and validate a prompt file.

    Returns a frame with ``prompt_id`` (row order; the file's own ``prompt_id`` column is kept
    as ``user_prompt_id`` and its ``id`` column as ``source_id``), ``prompt`` and ``answer``
    (None when absent; an answer must be a scalar, never a list or object).
    """
    path = Path(path)
    if not path.is_file():
        raise OpdDiagError(f"prompt file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            df = _read_jsonl(path)
        elif suffix == ".json":
            df = pd.DataFrame(json.loads(path.read_text(encoding="utf-8")))
        elif suffix == ".parquet":
            df = pd.read_parquet(path)
        elif suffix == ".csv":
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
        else:
            raise OpdDiagError(
                f"prompt file {str(path)!r}: unsupported format {suffix!r}; use one of {SUFFIXES}"
            )
    except (ValueError, OSError) as exc:
        if isinstance(exc, OpdDiagError):
            raise
        raise OpdDiagError(f"cannot read prompt file {str(path)!r}: {exc}") from None
    return validate_prompts(df, str(path))


def _short(value, n: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= n else text[:n] + f"... ({len(text)} characters)"


def _answer(a, i: int, where: str):
    """One answer as a string; None for a missing one; a list / dict / array is an error (its
    Python repr would never match a checked answer)."""
    if a is None or (isinstance(a, float) and a != a):
        return None
    if not isinstance(a, (str, int, float, np.integer, np.floating, np.bool_)):
        raise OpdDiagError(f"{where}: row {i + 1} has a non-scalar answer {_short(a)} "
                           f"({type(a).__name__}); give each answer as one string or number")
    return str(a)


def validate_prompts(df: pd.DataFrame, where: str = "prompts") -> pd.DataFrame:
    """Check a prompt frame and normalise it to ``prompt_id, prompt, answer[, source_id]``,
    followed by any other columns the file has (e.g. ``subset``)."""
    if len(df) == 0:
        raise OpdDiagError(f"{where}: no prompts (the file is empty)")
    if "prompt" not in df.columns:
        raise OpdDiagError(
            f"{where}: no 'prompt' column (found columns {list(df.columns)}); each row needs a "
            "'prompt' string and optionally an 'answer'"
        )
    for i, value in enumerate(df["prompt"].tolist()):
        if not isinstance(value, str) or not value.strip():
            raise OpdDiagError(f"{where}: row {i + 1} has an empty or non-string prompt: "
                               f"{_short(value)}")
    check_prompt_chars(df, None, where)
    out = pd.DataFrame({"prompt_id": range(len(df)), "prompt": df["prompt"].astype(str)})
    if "answer" in df.columns:
        out["answer"] = [_answer(a, i, where) for i, a in enumerate(df["answer"].tolist())]
    else:
        out["answer"] = None
    if "id" in df.columns:
        out["source_id"] = df["id"].astype(str).tolist()
    if "prompt_id" in df.columns:  # opd-diag numbers rows itself; the user's ids stay a column
        out["user_prompt_id"] = df["prompt_id"].tolist()
    for col in df.columns:  # keep user columns (e.g. subset, difficulty) for grouping
        if col not in out.columns and col not in ("id", "prompt_id"):
            out[col] = df[col].tolist()
    return out.reset_index(drop=True)
