"""Prompt files: JSONL, JSON, parquet or CSV with a ``prompt`` column and an optional ``answer``."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .errors import OpdDiagError

SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


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

    Returns a frame with ``prompt_id`` (row order, or the file's ``id`` column kept as
    ``source_id``), ``prompt`` and ``answer`` (None when absent).
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
            raise OpdDiagError(f"{where}: row {i + 1} has an empty or non-string prompt: {value!r}")
    out = pd.DataFrame({"prompt_id": range(len(df)), "prompt": df["prompt"].astype(str)})
    if "answer" in df.columns:
        out["answer"] = [None if a is None or (isinstance(a, float) and a != a) else str(a)
                         for a in df["answer"].tolist()]
    else:
        out["answer"] = None
    if "id" in df.columns:
        out["source_id"] = df["id"].astype(str).tolist()
    for col in df.columns:  # keep user columns (e.g. subset, difficulty) for grouping
        if col not in out.columns and col not in ("id", "prompt_id"):
            out[col] = df[col].tolist()
    return out.reset_index(drop=True)
