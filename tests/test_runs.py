import json
import os

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
    (tmp_path / "x" / "thesis.tex").write_text("mine")
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


def test_run_json_is_strict_json(tmp_path):
    import math

    import numpy as np

    with open_run(tmp_path / "r", "capture", {"temperature": float("nan")},
                  extra={"scores": [1.0, float("inf"), np.float32("nan")]}):
        pass
    text = (tmp_path / "r" / "run.json").read_text()
    meta = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    assert meta["config"]["temperature"] is None and meta["scores"] == [1.0, None, None]
    assert not math.isnan(meta["scores"][0])


def test_out_dir_rule(tmp_path):
    from opd_diag.core.runs import check_out_dir

    assert check_out_dir(tmp_path / "new") == "missing"
    (tmp_path / "empty").mkdir()
    assert check_out_dir(tmp_path / "empty") == "empty"
    with open_run(tmp_path / "run", "capture", {}):
        pass
    with pytest.raises(OpdDiagError, match="already exists"):
        check_out_dir(tmp_path / "run")
    assert check_out_dir(tmp_path / "run", overwrite=True) == "output"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.txt").write_text("x")
    for flags in ({}, {"overwrite": True}, {"resume": True}):
        with pytest.raises(OpdDiagError, match="never writes into or deletes"):
            check_out_dir(tmp_path / "mine", **flags)
    assert (tmp_path / "mine" / "a.txt").read_text() == "x"


def test_failed_run_in_a_users_empty_dir_keeps_the_dir(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(OpdDiagError, match="boom"):
        with open_run(tmp_path / "empty", "capture", {}) as run:
            run.write_shard("rollouts", "000000", pd.DataFrame({"x": [1]}))
            raise OpdDiagError("boom")
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())
    with pytest.raises(OpdDiagError, match="boom"):
        with open_run(tmp_path / "made", "capture", {}):
            raise OpdDiagError("boom")
    assert not (tmp_path / "made").exists()


def test_lock_is_exclusive_reentrant_and_released(tmp_path):
    from opd_diag.core.runs import LOCK_NAME, holds_lock, run_lock

    with run_lock(tmp_path / "r"):
        assert holds_lock(tmp_path / "r")
        with run_lock(tmp_path / "r"):  # the same process (a pre-flight opening its capture)
            assert (tmp_path / "r" / LOCK_NAME).exists()
        assert holds_lock(tmp_path / "r")
        info = json.loads((tmp_path / "r" / LOCK_NAME).read_text())
        assert info["pid"] == os.getpid()
    assert not holds_lock(tmp_path / "r") and not (tmp_path / "r" / LOCK_NAME).exists()
    # a lock file a dead writer left behind (no flock held on it) is taken over
    (tmp_path / "r" / LOCK_NAME).write_text(json.dumps({"pid": 999999999}))
    with run_lock(tmp_path / "r"):
        assert json.loads((tmp_path / "r" / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_corrupt_shard_names_file_and_fix(tmp_path):
    write_parquet(tmp_path / "t.parquet" / "part-000000.parquet", pd.DataFrame({"x": [1, 2]}))
    shard = tmp_path / "t.parquet" / "part-000000.parquet"
    shard.write_bytes(shard.read_bytes()[:10])
    with pytest.raises(OpdDiagError, match="part-000000.parquet is truncated or corrupt.*--resume"):
        read_table(tmp_path / "t.parquet")


def test_write_csv_is_atomic_and_names_a_bad_path(tmp_path):
    from opd_diag.core.runs import write_csv

    df = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    write_csv(tmp_path / "t.csv", df)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "t.csv"), df)
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]  # no temporary file left
    (tmp_path / "file").write_text("")
    with pytest.raises(OpdDiagError, match="cannot write .*file/t.csv"):
        write_csv(tmp_path / "file" / "t.csv", df)
