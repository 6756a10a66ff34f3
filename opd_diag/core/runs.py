"""The run directory: the one contract between capture, the loop, probes, reports and notebooks.

```
runs/<run_id>/
  run.json                 schema version, status, resolved config, versions, git SHA, seeds, models
  prompts.parquet/         part-*.parquet shards (a directory of shards; pandas reads it as a table)
  rollouts.parquet/
  states.parquet/
  probes/<probe>.parquet
  metrics.jsonl
```

Under ``torchrun`` each rank writes its own shards, ``part-<key>-r<rank>.parquet``, with keys
that index units of work globally; :func:`read_table` sorts shards by key, so the merged table has
the row order of a single-process run. Only rank 0 writes ``run.json``.

Every write is atomic (temp file + ``os.replace``) and every shard has a deterministic name, so a
killed writer leaves either the old file or the new one, and re-running the same unit of work
replaces its shard instead of duplicating rows. :func:`load_run` is the only reader.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import OpdDiagError

SCHEMA_VERSION = 1
TABLES = ("prompts", "rollouts", "states")
_SHARD_RE = re.compile(r"part-(?P<key>.+?)(?:-r(?P<rank>\d+))?\.parquet")
_PACKAGES = ("opd-diag", "torch", "transformers", "tokenizers", "pandas", "pyarrow", "numpy", "trl")


# ---------------------------------------------------------------------------------------------
# Atomic file primitives
# ---------------------------------------------------------------------------------------------


def _atomic_write_bytes(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: dict) -> None:
    """Write JSON atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=str)
    _atomic_write_bytes(Path(path), lambda tmp: tmp.write_text(text + "\n"))


def write_parquet(path: Path, df: pd.DataFrame | pa.Table) -> None:
    """Write one parquet file atomically."""
    table = df if isinstance(df, pa.Table) else pa.Table.from_pandas(df, preserve_index=False)
    try:
        _atomic_write_bytes(Path(path), lambda tmp: pq.write_table(table, tmp))
    except OSError as exc:
        raise OpdDiagError(f"cannot write {path}: {exc} (disk full or read-only?)") from exc


def append_jsonl(path: Path, row: dict) -> None:
    """Append one JSON line and fsync it; readers drop a torn last line."""
    line = json.dumps(row, default=_json_default) + "\n"
    try:
        with open(path, "a") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise OpdDiagError(f"cannot append to {path}: {exc} (disk full or read-only?)") from exc


def read_jsonl(path: Path) -> list[dict]:
    """Read JSON lines, ignoring a final line a crash left half-written."""
    if not Path(path).exists():
        return []
    rows, lines = [], Path(path).read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise OpdDiagError(f"{path}: line {i + 1} is not valid JSON") from None
    return rows


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj)}")


# ---------------------------------------------------------------------------------------------
# Provenance
# ---------------------------------------------------------------------------------------------


def package_versions() -> dict:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_sha() -> str | None:
    """The SHA of the opd-diag checkout in use (None when installed from a wheel)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        sha = out.stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()
        return (sha + ("-dirty" if dirty else "")) if out.returncode == 0 and sha else None
    except (OSError, subprocess.SubprocessError):
        return None


# ---------------------------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------------------------


@dataclass
class RunWriter:
    """Creates or resumes a run directory and writes its tables shard by shard.

    Use :func:`open_run` (a context manager): when the body raises an :class:`OpdDiagError`
    on a run it created, the directory is removed, so bad input never leaves a half-written run;
    any other failure (a crash, SIGKILL) leaves ``status: running`` for ``--resume``.
    """

    path: Path
    meta: dict = field(default_factory=dict)
    rank: int | None = None  # set under torch.distributed: shards get a -r<rank> suffix

    def shard_path(self, table: str, key: str) -> Path:
        suffix = "" if self.rank is None else f"-r{self.rank}"
        return self.path / f"{table}.parquet" / f"part-{key}{suffix}.parquet"

    def existing_shard(self, table: str, key: str) -> Path | None:
        """The shard of ``key`` written by any rank (a resumed run may have another world size)."""
        folder = self.path / f"{table}.parquet"
        found = [folder / f"part-{key}.parquet", *sorted(folder.glob(f"part-{key}-r*.parquet"))]
        return next((p for p in found if p.exists() and _shard_key(p)[0] == key), None)

    def has_shard(self, table: str, key: str) -> bool:
        return self.existing_shard(table, key) is not None

    def write_shard(self, table: str, key: str, df: pd.DataFrame | pa.Table) -> None:
        write_parquet(self.shard_path(table, key), df)

    def write_probe(self, name: str, df: pd.DataFrame) -> Path:
        path = self.path / "probes" / f"{name}.parquet"
        write_parquet(path, df)
        return path

    def append_metrics(self, row: dict) -> None:
        append_jsonl(self.path / "metrics.jsonl", row)

    def update_meta(self, **fields) -> None:
        """Update run.json; under torch.distributed only rank 0 writes it (others keep a copy)."""
        self.meta.update(fields)
        self.meta["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        if not self.rank:
            write_json(self.path / "run.json", self.meta)


def _comparable(config: dict) -> str:
    return json.dumps(config, sort_keys=True, default=str)


@contextmanager
def open_run(path: str | Path, kind: str, config: dict, *, resume: bool = False,
             overwrite: bool = False, extra: dict | None = None):
    """Create (or resume) a run directory and yield its :class:`RunWriter`.

    Args:
        path: the run directory.
        kind: "capture", "train", ... (recorded in run.json).
        config: the resolved configuration; a resumed run must have the same one.
        resume: continue an unfinished run with the same config instead of failing.
        overwrite: delete an existing directory first.
        extra: more run.json fields (models, seeds, ...).
    """
    path = Path(path)
    created = False
    if path.exists() and overwrite:
        shutil.rmtree(path)
    if path.exists():
        meta_path = path / "run.json"
        if not meta_path.exists():
            raise OpdDiagError(
                f"{path} exists and is not an opd-diag run (no run.json); choose another --out"
            )
        meta = json.loads(meta_path.read_text())
        if not resume:
            raise OpdDiagError(
                f"run directory {path} already exists (status {meta.get('status')!r}); "
                "pass --resume to continue it or --overwrite to replace it"
            )
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise OpdDiagError(
                f"cannot resume {path}: schema version {meta.get('schema_version')} != "
                f"{SCHEMA_VERSION} of this opd-diag"
            )
        if _comparable(meta.get("config")) != _comparable(config):
            old, new = meta.get("config", {}), config
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise OpdDiagError(
                f"cannot resume {path}: it was started with a different config "
                f"(differs in {diff}); use the same flags or --overwrite"
            )
        writer = RunWriter(path, meta)
        writer.update_meta(status="running", resumed_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    else:
        if resume:
            raise OpdDiagError(f"--resume given but {path} does not exist")
        path.mkdir(parents=True)
        created = True
        meta = {
            "schema_version": SCHEMA_VERSION,
            "run_id": path.name,
            "kind": kind,
            "status": "running",
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": config,
            "versions": package_versions(),
            "git_sha": git_sha(),
            "host": platform.node(),
        }
        meta.update(extra or {})
        writer = RunWriter(path, meta)
        writer.update_meta()
    try:
        yield writer
    except OpdDiagError:
        if created:
            shutil.rmtree(path, ignore_errors=True)
        else:
            writer.update_meta(status="failed")
        raise
    writer.update_meta(status="complete")


# ---------------------------------------------------------------------------------------------
# Reader
# ---------------------------------------------------------------------------------------------


def _shard_key(path: Path) -> tuple[str, int]:
    """Sort key of a shard file: ``part-<key>[-r<rank>].parquet`` -> ``(key, rank)``.

    Keys are fixed-width unit-of-work indices that are global across ranks, so sorting by key
    merges per-rank shards into exactly the row order of a single-process run.
    """
    m = _SHARD_RE.fullmatch(path.name)
    if m is None:
        return (path.name, -1)
    return (m["key"], int(m["rank"]) if m["rank"] is not None else -1)


def read_table(path: Path) -> pd.DataFrame:
    """Read a table written as a file or as a directory of ``part-*.parquet`` shards."""
    path = Path(path)
    if path.is_file():
        return pq.read_table(path).to_pandas()
    parts = sorted(path.glob("part-*.parquet"), key=_shard_key) if path.is_dir() else []
    if not parts:
        return pd.DataFrame()
    return pa.concat_tables(
        [pq.read_table(p) for p in parts], promote_options="default"
    ).to_pandas()


@dataclass
class Run:
    """A run directory, read lazily. Notebooks and reports read runs only through this."""

    path: Path
    meta: dict

    @property
    def config(self) -> dict:
        return self.meta.get("config", {})

    @cached_property
    def prompts(self) -> pd.DataFrame:
        return read_table(self.path / "prompts.parquet")

    @cached_property
    def rollouts(self) -> pd.DataFrame:
        return read_table(self.path / "rollouts.parquet")

    @cached_property
    def states(self) -> pd.DataFrame:
        return read_table(self.path / "states.parquet")

    @cached_property
    def metrics(self) -> pd.DataFrame:
        return pd.DataFrame(read_jsonl(self.path / "metrics.jsonl"))

    def probe(self, name: str) -> pd.DataFrame:
        path = self.path / "probes" / f"{name}.parquet"
        if not path.exists():
            raise OpdDiagError(
                f"{self.path} has no {name!r} probe table; run `opd-diag probe {name} {self.path}`"
            )
        return read_table(path)

    def probes(self) -> list[str]:
        return sorted(p.stem for p in (self.path / "probes").glob("*.parquet"))

    def table(self, name: str) -> pd.DataFrame:
        """Any other table of the run (e.g. ``continuations``); empty when absent."""
        return read_table(self.path / f"{name}.parquet")

    def aux(self, name: str) -> Run:
        """An auxiliary run stored inside this one (e.g. ``aux/teacher``: the teacher's own
        rollouts on the same prompts, scored by both models)."""
        return load_run(self.path / "aux" / name)

    def has_aux(self, name: str) -> bool:
        return (self.path / "aux" / name / "run.json").is_file()


def is_complete(path: str | Path) -> bool:
    """True when ``path`` holds a run whose writer finished (``status: complete``)."""
    meta = Path(path) / "run.json"
    return meta.is_file() and json.loads(meta.read_text()).get("status") == "complete"


def load_run(path: str | Path) -> Run:
    """Open a run directory written by capture or by the OPD loop."""
    path = Path(path)
    meta_path = path / "run.json"
    if not meta_path.is_file():
        raise OpdDiagError(f"{path} is not an opd-diag run directory (no run.json)")
    meta = json.loads(meta_path.read_text())
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise OpdDiagError(
            f"{path} has schema version {meta.get('schema_version')}; this opd-diag reads "
            f"version {SCHEMA_VERSION}"
        )
    return Run(path, meta)


def stack_list_column(df: pd.DataFrame, column: str) -> np.ndarray:
    """A list column (e.g. ``topk_ids_s``) as a dense ``[rows, k]`` array."""
    if len(df) == 0:
        return np.zeros((0, 0))
    return np.stack(df[column].to_numpy())
