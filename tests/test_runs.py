import json

import pandas as pd
import pytest

from opd_diag.core.errors import OpdDiagError
from opd_diag.core.runs import (
    SCHEMA_VERSION,
    append_jsonl,
    load_run,
    open_run,
    read_jsonl,
    read_table,
    write_parquet,
)


def test_open_run_writes_meta_and_shards(tmp_path):
    with open_run(tmp_path / "r", "capture", {"a": 1}) as run:
        run.write_shard("rollouts", "000001", pd.DataFrame({"x": [2]}))
        run.write_shard("rollouts", "000000", pd.DataFrame({"x": [1]}))
        run.write_shard("rollouts", "000001", pd.DataFrame({"x": [2]}))  # rewrite: no duplicate
        run.append_metrics({"step": 0, "loss": 1.5})
    r = load_run(tmp_path / "r")
    assert r.meta["schema_version"] == SCHEMA_VERSION and r.meta["status"] == "complete"
    assert list(r.rollouts.x) == [1, 2]
    assert r.metrics.loss.tolist() == [1.5]
    assert r.meta["git_sha"] is None or len(r.meta["git_sha"]) >= 40
    assert r.meta["versions"]["pandas"] == pd.__version__


def test_bad_input_removes_new_run_but_crash_keeps_it(tmp_path):
    with pytest.raises(OpdDiagError):
        with open_run(tmp_path / "bad", "capture", {}):
            raise OpdDiagError("bad input")
    assert not (tmp_path / "bad").exists()
    with pytest.raises(RuntimeError):
        with open_run(tmp_path / "crash", "capture", {}):
            raise RuntimeError("crash")
    meta = json.loads((tmp_path / "crash" / "run.json").read_text())
    assert meta["status"] == "running"  # resumable
    with open_run(tmp_path / "crash", "capture", {}, resume=True):
        pass
    assert load_run(tmp_path / "crash").meta["status"] == "complete"


def test_refuses_foreign_dirs_and_schema(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(OpdDiagError, match="not an opd-diag run"):
        with open_run(tmp_path / "x", "capture", {}, resume=True):
            pass
    with open_run(tmp_path / "r", "capture", {}):
        pass
    meta = json.loads((tmp_path / "r" / "run.json").read_text())
    meta["schema_version"] = 999
    (tmp_path / "r" / "run.json").write_text(json.dumps(meta))
    with pytest.raises(OpdDiagError, match="schema version"):
        load_run(tmp_path / "r")
    with pytest.raises(OpdDiagError, match="schema version"):
        with open_run(tmp_path / "r", "capture", {}, resume=True):
            pass
    with pytest.raises(OpdDiagError, match="does not exist"):
        with open_run(tmp_path / "nope", "capture", {}, resume=True):
            pass


def test_torn_jsonl_line_is_dropped(tmp_path):
    p = tmp_path / "m.jsonl"
    append_jsonl(p, {"step": 0})
    append_jsonl(p, {"step": 1})
    with open(p, "a") as fh:
        fh.write('{"step": 2, "lo')
    assert [r["step"] for r in read_jsonl(p)] == [0, 1]
    p.write_text('{"step": 0}\nnot json\n{"step": 2}\n')
    with pytest.raises(OpdDiagError, match="line 2"):
        read_jsonl(p)


def test_atomic_write_leaves_no_temp_files(tmp_path):
    write_parquet(tmp_path / "t.parquet", pd.DataFrame({"a": [1, 2]}))
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]
    assert read_table(tmp_path / "t.parquet").a.tolist() == [1, 2]
    assert read_table(tmp_path / "missing.parquet").empty


def test_full_disk_is_a_clear_error(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(OpdDiagError, match="No space left"):
        write_parquet(tmp_path / "t.parquet", pd.DataFrame({"a": [1]}))
    assert list(tmp_path.iterdir()) == []
