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


def _finite(obj):
    """``obj`` with every non-finite float (NaN, ±inf, numpy included) replaced by None."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def write_json(path: Path, obj: dict) -> None:
    """Write strict JSON atomically: NaN / ±inf become ``null`` (never a bare ``NaN`` literal)."""
    text = json.dumps(_finite(obj), indent=2, sort_keys=False, default=str, allow_nan=False)
    _atomic_write_bytes(Path(path), lambda tmp: tmp.write_text(text + "\n"))


def write_parquet(path: Path, df: pd.DataFrame | pa.Table) -> None:
    """Write one parquet file atomically.

    Only string columns are dictionary-encoded: the float and id columns of a states shard
    (per-position log-probs, entropies, top-k lists) have few repeats, and their dictionaries
    made the shard about 25 % larger and its write about 1.5x slower.
    """
    table = df if isinstance(df, pa.Table) else pa.Table.from_pandas(df, preserve_index=False)
    strings = [f.name for f in table.schema
               if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    try:
        _atomic_write_bytes(Path(path), lambda tmp: pq.write_table(table, tmp,
                                                                   use_dictionary=strings))
    except OSError as exc:
        raise OpdDiagError(f"cannot write {path}: {exc} (disk full or read-only?)") from exc


def write_csv(path: Path, df: pd.DataFrame) -> None:
    """Write one CSV table atomically (a killed writer leaves the old file or none)."""
    try:
        _atomic_write_bytes(Path(path), lambda tmp: df.to_csv(tmp, index=False))
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
# Output directories: the one rule, and the writer's lock
# ---------------------------------------------------------------------------------------------

LOCK_NAME = ".opd-diag.lock"
# files opd-diag itself leaves in a directory it is creating (a lock, atomic-write temp files)
_OWN_FILES = re.compile(r"\.opd-diag\.lock|\..+\.\d+\.tmp")


def _foreign_entries(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if not _OWN_FILES.fullmatch(p.name))


def check_out_dir(path: str | Path, *, overwrite: bool = False, resume: bool = False,
                  marker: str = "run.json", flag: str = "--out", what: str = "run") -> str:
    """Apply the output-directory rule of every opd-diag writer (docs/run-directory.md).

    A directory is written into only if it is missing, empty, or an opd-diag output (holds
    ``marker``, ``run.json`` for a run); an existing output is continued only with ``resume``
    and replaced only with ``overwrite``; a directory that is not an opd-diag output is never
    written into nor deleted, whatever the flags; a file is refused. Nothing is changed here.

    Returns ``"missing"``, ``"empty"`` or ``"output"`` (an existing output the flags allow to
    continue or replace); raises :class:`OpdDiagError` otherwise.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OpdDiagError(f"{flag} {path} is a file, not a directory; give a directory path "
                           "(it is created when missing)")
    if not path.exists():
        if resume:
            raise OpdDiagError(f"--resume given but {path} does not exist; drop --resume to "
                               "start a new run")
        return "missing"
    foreign = _foreign_entries(path)
    if not foreign:
        if resume:
            raise OpdDiagError(f"--resume given but {path} is empty (no {marker}); drop "
                               "--resume to start a new run")
        return "empty"
    if not (path / marker).is_file():
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise OpdDiagError(
            f"{flag} {path} is not empty and is not an opd-diag {what} (no {marker}; it holds "
            f"{shown}); opd-diag never writes into or deletes such a directory, even with "
            f"--overwrite: choose a new or empty {flag}"
        )
    if not (resume or overwrite):
        status = ""
        if marker == "run.json":
            try:
                status = f" (status {json.loads((path / marker).read_text()).get('status')!r})"
            except (OSError, ValueError):
                status = ""
        hint = ("pass --resume to continue it or --overwrite to replace it" if marker ==
                "run.json" else "pass --overwrite to replace it")
        raise OpdDiagError(f"{flag} {path} already exists: an opd-diag {what}{status}; {hint}, "
                           f"or choose another {flag}")
    return "output"


def check_collection_dir(path: str | Path, files: tuple[str, ...] = (), *,
                         flag: str = "--out", what: str = "output directory") -> None:
    """The output-directory rule for a directory of runs (``rank-teachers --out``, the demo):
    it may be missing, empty, or hold only opd-diag runs (sub-directories with ``run.json``)
    and the files the command itself writes (``files``, glob patterns); anything else means it
    is not ours, and nothing is written into it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OpdDiagError(f"{flag} {path} is a file, not a directory; give a directory path")
    if not path.exists():
        return
    foreign = [name for name in _foreign_entries(path)
               if not ((path / name).is_dir() and ((path / name / "run.json").is_file()
                                                   or not _foreign_entries(path / name)))
               and not any(Path(name).match(pat) for pat in files)]
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise OpdDiagError(
            f"{flag} {path} holds files that are not opd-diag runs ({shown}); it is not an "
            f"opd-diag {what}, and opd-diag never writes into such a directory: choose a new "
            f"or empty {flag}"
        )


def clear_out_dir(path: str | Path) -> None:
    """Empty an opd-diag output directory (checked by :func:`check_out_dir`), keeping the
    directory and its lock: what ``--overwrite`` does."""
    path = Path(path)
    for entry in path.iterdir():
        if entry.name == LOCK_NAME:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


_HELD: dict[str, list] = {}  # resolved lock path -> [fd, depth]: re-entrant within a process


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _lock_owner(lock: Path) -> str:
    try:
        info = json.loads(lock.read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    return f"PID {info.get('pid', '?')} on {info.get('host', '?')} (since {info.get('since', '?')})"


@contextmanager
def run_lock(path: str | Path):
    """Hold the exclusive writer lock ``<path>/.opd-diag.lock`` (the directory is created).

    A second writer on the same directory fails at once with an :class:`OpdDiagError` naming the
    holder's PID. The lock is an OS file lock (``flock``), so the kernel releases it when its
    process exits or is killed; a lock file left by a dead process is simply taken over.
    Re-entrant within one process (a pre-flight holds it while its capture opens the run).
    Under ``torchrun`` only rank 0 takes it (:func:`opd_diag.states.distributed.open_run_ranks`).
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OpdDiagError(f"{path} is a file, not a directory; give a directory path") from None
    except OSError as exc:
        raise OpdDiagError(f"cannot create {path}: {exc}") from None
    lock = path / LOCK_NAME
    key = str(lock.resolve())
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield lock
        finally:
            _HELD[key][1] -= 1
        return
    fd = _acquire(lock)
    _HELD[key] = [fd, 1]
    try:
        yield lock
    finally:
        del _HELD[key]
        _release(lock, fd)


def _acquire(lock: Path) -> int:
    info = json.dumps({"pid": os.getpid(), "host": platform.node(),
                       "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    try:
        import fcntl
    except ImportError:  # no flock (Windows): O_EXCL file + PID liveness
        fcntl = None
    for _ in range(20):
        if fcntl is None:
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
            except FileExistsError:
                try:
                    pid = int(json.loads(lock.read_text()).get("pid", -1))
                except (OSError, ValueError):
                    pid = -1
                if pid > 0 and _pid_alive(pid):
                    break
                lock.unlink(missing_ok=True)  # stale: its writer is dead
                continue
        else:
            fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                break
            try:  # the holder may have unlinked the file between our open and flock
                same = os.stat(lock).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
        os.ftruncate(fd, 0)
        os.write(fd, info.encode())
        return fd
    raise OpdDiagError(
        f"{lock.parent} is being written by {_lock_owner(lock)} (lock file {lock}); wait for it "
        "to finish or stop it, or choose another --out"
    )


def _release(lock: Path, fd: int) -> None:
    try:
        lock.unlink(missing_ok=True)  # before closing: nobody can lock the old inode after this
    except OSError:
        pass
    os.close(fd)


# ---------------------------------------------------------------------------------------------
# Resource limits, checked before any work
# ---------------------------------------------------------------------------------------------

STATE_ROW_OVERHEAD = 96  # bytes of a states row besides its top-k lists (ids, scalars)


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (``MemAvailable``), None when unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_capture_size(n_rollouts: int, max_new_tokens: int, top_k: int, out: str | Path,
                       *, memory: int | None = None) -> int:
    """Refuse a capture whose states table cannot fit: ``n_rollouts × max_new_tokens`` rows of
    two top-k lists each must fit in available memory (``probe`` and ``report`` read the table
    whole) and on the disk under ``out``. Returns the estimated bytes."""
    per_row = 2 * top_k * 8 + STATE_ROW_OVERHEAD
    need = int(n_rollouts) * int(max_new_tokens) * per_row
    memory = available_memory() if memory is None else memory
    what = (f"{n_rollouts:,} rollouts x {max_new_tokens:,} tokens x {per_row} bytes per state "
            f"(top-k {top_k}) = {need / 1e9:.2f} GB of states")
    fix = "lower --n-samples, --max-new-tokens or the number of prompts"
    if memory is not None and need > memory:
        raise OpdDiagError(f"this capture would write {what}, more than the "
                           f"{memory / 1e9:.2f} GB of memory available (the limit: probes and "
                           f"reports read the states table whole); {fix}")
    probe = Path(out)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        free = None
    if free is not None and need > free:
        raise OpdDiagError(f"this capture would write {what}, more than the {free / 1e9:.2f} GB "
                           f"free on the disk of {out}; {fix}")
    return need


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

    The directory follows :func:`check_out_dir` (missing, empty, or a run; a run is replaced only
    with ``overwrite``; a non-run directory is never touched) and is held under
    :func:`run_lock` until the body ends.

    Args:
        path: the run directory.
        kind: "capture", "train", ... (recorded in run.json).
        config: the resolved configuration; a resumed run must have the same one.
        resume: continue an unfinished run with the same config instead of failing.
        overwrite: replace an existing run (never a directory that is not a run).
        extra: more run.json fields (models, seeds, ...).
    """
    path = Path(path)
    with claim_out_dir(path, overwrite=overwrite, resume=resume) as state:
        if state == "output" and not resume:
            clear_out_dir(path)
            state = "empty"
        with _open_locked(path, kind, config, state, extra) as writer:
            yield writer


def holds_lock(path: str | Path) -> bool:
    """Whether this process holds the writer lock of directory ``path``."""
    return str((Path(path) / LOCK_NAME).resolve()) in _HELD


@contextmanager
def claim_out_dir(path: str | Path, *, overwrite: bool = False, resume: bool = False,
                  marker: str = "run.json", flag: str = "--out", what: str = "run"):
    """Check ``path`` with :func:`check_out_dir`, then hold its :func:`run_lock` (checking again
    under the lock) and yield the state. When the body raises an :class:`OpdDiagError` and the
    directory was created here, it is removed again once empty."""
    path = Path(path)
    check_out_dir(path, overwrite=overwrite, resume=resume, marker=marker, flag=flag, what=what)
    existed = path.exists()
    try:
        with run_lock(path):
            yield check_out_dir(path, overwrite=overwrite, resume=resume, marker=marker,
                                flag=flag, what=what)
    except OpdDiagError:
        if not existed and path.is_dir() and not any(path.iterdir()):
            path.rmdir()  # only the directory made here, once empty (never another writer's)
        raise


@contextmanager
def _open_locked(path: Path, kind: str, config: dict, state: str, extra: dict | None):
    created = state != "output"
    if not created:
        meta = read_meta(path)
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
        if created:  # bad input never leaves a half-written run (the directory itself stays
            clear_out_dir(path)  # for open_run to remove when it made it)
        else:
            writer.update_meta(status="failed")
        raise
    writer.update_meta(status="complete")


def read_meta(path: str | Path) -> dict:
    """``run.json`` of a run directory; a corrupt one is an :class:`OpdDiagError` naming it."""
    meta_path = Path(path) / "run.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise OpdDiagError(
            f"{meta_path} is unreadable or not valid JSON ({exc}); the run is damaged: re-run "
            "it with --overwrite"
        ) from None
    if not isinstance(meta, dict):
        raise OpdDiagError(f"{meta_path} is not a JSON object; re-run the run with --overwrite")
    return meta


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


def _read_parquet(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        run = next((p for p in path.parents if (p / "run.json").is_file()), path.parent)
        raise OpdDiagError(
            f"{path} is truncated or corrupt ({exc}); the run {run} is damaged: delete that "
            "file and re-run the command that wrote the run with --resume (only missing shards "
            "are redone), or re-create the run with --overwrite"
        ) from None


def read_table(path: Path) -> pd.DataFrame:
    """Read a table written as a file or as a directory of ``part-*.parquet`` shards; a
    truncated or corrupt file is an :class:`OpdDiagError` naming it and the fix."""
    path = Path(path)
    if path.is_file():
        return _read_parquet(path).to_pandas()
    parts = sorted(path.glob("part-*.parquet"), key=_shard_key) if path.is_dir() else []
    if not parts:
        return pd.DataFrame()
    return pa.concat_tables(
        [_read_parquet(p) for p in parts], promote_options="default"
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
    return (Path(path) / "run.json").is_file() and read_meta(path).get("status") == "complete"


def load_run(path: str | Path) -> Run:
    """Open a run directory written by capture or by the OPD loop."""
    path = Path(path)
    if not (path / "run.json").is_file():
        raise OpdDiagError(f"{path} is not an opd-diag run directory (no run.json)")
    meta = read_meta(path)
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
