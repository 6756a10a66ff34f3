"""Bad input as a hostile user would give it (issue 17): one table of (command, exit code, a
phrase of the message), each run in-process on a fresh directory, and after each the user's
files are byte-for-byte what they were (nothing deleted, nothing half-written left behind)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from opd_diag.cli import main
from opd_diag.testing import make_model_dir

THESIS = "\\documentclass{article} my thesis, three years of work\n"


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and directory (None) under ``root``."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse rejects a flag (type, range, finiteness): exit 2
        return int(exc.code)


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_pair):
    """Models, a prompt file and one finished capture run, shared by the cases (copied)."""
    root = tmp_path_factory.mktemp("world")
    s, t = tiny_pair
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"w{i} w{i + 1} w{i + 2}",
                                           "answer": f"w{i + 3}"}) + "\n" for i in range(4)))
    run = root / "run"
    assert main(["--quiet", "capture", "--student", str(s), "--teacher", str(t), "--prompts",
                 str(prompts), "--out", str(run), "--n-samples", "2", "--max-new-tokens",
                 "4"]) == 0
    return {"s": s, "t": t, "prompts": prompts, "run": run, "root": root}


@dataclass
class Case:
    name: str
    setup: Callable[[Path, dict], list[str]]  # (case dir, world) -> argv
    code: int
    phrase: str


def _thesis_dir(d: Path) -> Path:
    out = d / "thesis"
    out.mkdir()
    (out / "thesis.tex").write_text(THESIS)
    (out / "figures").mkdir()
    (out / "figures" / "plot.pdf").write_bytes(b"%PDF-1.4 not really")
    return out


def _a_file(d: Path) -> Path:
    f = d / "notes.txt"
    f.write_text("my notes\n")
    return f


def _capture(w, out, *extra, prompts=None, s=None, t=None) -> list[str]:
    return ["--quiet", "capture", "--student", str(s or w["s"]), "--teacher", str(t or w["t"]),
            "--prompts", str(prompts or w["prompts"]), "--out", str(out), "--n-samples", "2",
            "--max-new-tokens", "4", *extra]


def _preflight(w, out, *extra) -> list[str]:
    return ["--quiet", "preflight", "--student", str(w["s"]), "--teacher", str(w["t"]),
            "--prompts", str(w["prompts"]), "--out", str(out), "--budget", "small",
            "--max-new-tokens", "4", *extra]


def _train(w, out, *extra) -> list[str]:
    return ["--quiet", "train", "--student", str(w["s"]), "--teacher", str(w["t"]), "--prompts",
            str(w["prompts"]), "--out", str(out), "--steps", "1", "--max-new-tokens", "4",
            *extra]


def _copy_run(d: Path, w) -> Path:
    run = d / "run"
    shutil.copytree(w["run"], run)
    return run


def _truncated_states(d: Path, w) -> Path:
    run = _copy_run(d, w)
    shard = sorted((run / "states.parquet").glob("part-*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    return run


def _bad_weights(d: Path, how: str) -> Path:
    m = make_model_dir(d / "model", vocab_size=64, seed=0)
    f = m / "model.safetensors"
    data = f.read_bytes()
    if how == "truncated":
        f.write_bytes(data[: len(data) - 100])
    else:  # header length points past the end of the file
        f.write_bytes((10 ** 12).to_bytes(8, "little") + data[8:])
    return m


def _auto_map_model(d: Path) -> Path:
    m = make_model_dir(d / "model", vocab_size=64, seed=0)
    cfg = json.loads((m / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"}
    (m / "config.json").write_text(json.dumps(cfg))
    return m


def _prompts(d: Path, rows: list[dict]) -> Path:
    p = d / "user-prompts.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


CASES = [
    # 1. output-dir safety: never write into or delete a directory that is not a run
    Case("preflight-into-non-run-dir", lambda d, w: _preflight(w, _thesis_dir(d)), 2,
         "is not an opd-diag run"),
    Case("preflight-overwrite-non-run-dir",
         lambda d, w: _preflight(w, _thesis_dir(d), "--overwrite"), 2, "never writes into"),
    Case("preflight-out-is-a-file", lambda d, w: _preflight(w, _a_file(d)), 2, "is a file"),
    Case("preflight-existing-run-needs-overwrite", lambda d, w: _preflight(w, _copy_run(d, w)),
         2, "pass --resume to continue it or --overwrite"),
    Case("capture-overwrite-non-run-dir",
         lambda d, w: _capture(w, _thesis_dir(d), "--overwrite"), 2, "is not an opd-diag run"),
    Case("capture-out-is-a-file", lambda d, w: _capture(w, _a_file(d)), 2, "is a file"),
    Case("capture-resume-non-run-dir", lambda d, w: _capture(w, _thesis_dir(d), "--resume"), 2,
         "is not an opd-diag run"),
    Case("train-into-non-run-dir", lambda d, w: _train(w, _thesis_dir(d), "--overwrite"), 2,
         "is not an opd-diag run"),
    Case("train-out-is-a-file", lambda d, w: _train(w, _a_file(d)), 2, "is a file"),
    Case("ingest-into-non-run-dir", lambda d, w: [
        "--quiet", "ingest", "--student", str(w["s"]), "--teacher", str(w["t"]), "--from",
        "jsonl", str(_a_file(d)), "--out", str(_thesis_dir(d)), "--overwrite"], 2,
        "is not an opd-diag run"),
    Case("coldstart-overwrite-non-model-dir", lambda d, w: [
        "--quiet", "coldstart", "--student", str(w["s"]), "--teacher", str(w["t"]), "--prompts",
        str(w["prompts"]), "--out", str(_thesis_dir(d)), "--overwrite"], 2,
        "not an opd-diag coldstart model"),
    Case("rank-teachers-into-non-run-dir", lambda d, w: [
        "--quiet", "rank-teachers", "--student", str(w["s"]), "--teacher", str(w["t"]),
        "--prompts", str(w["prompts"]), "--max-new-tokens", "4", "--out", str(_thesis_dir(d)),
        "--overwrite"], 2, "not opd-diag runs (figures, thesis.tex)"),
    Case("rank-teachers-existing-candidate-run", lambda d, w: [
        "--quiet", "rank-teachers", "--student", str(w["s"]), "--teacher", str(w["t"]),
        "--prompts", str(w["prompts"]), "--max-new-tokens", "4", "--out",
        str(_rank_dir(d, w))], 2, "already exists: an opd-diag run"),
    Case("demo-into-non-run-dir", lambda d, w: ["--quiet", "demo", "--out", str(_thesis_dir(d))],
         2, "not an opd-diag demo directory"),
    # 3. corrupt files: exit 2 naming the file and the fix
    Case("truncated-safetensors", lambda d, w: _capture(w, d / "out",
                                                        t=_bad_weights(d, "truncated")),
         2, "model.safetensors' are truncated"),
    Case("corrupt-safetensors-header", lambda d, w: _capture(w, d / "out",
                                                             t=_bad_weights(d, "header")),
         2, "model.safetensors' are corrupt"),
    Case("probe-truncated-states-shard", lambda d, w: ["probe", "overlap",
                                                       str(_truncated_states(d, w))],
         2, "is truncated or corrupt"),
    Case("report-truncated-states-shard", lambda d, w: [
        "report", str(_truncated_states(d, w)), str(w["run"]), "--out", str(d / "r.html")], 2,
        "--resume"),
    Case("corrupt-run-json", lambda d, w: ["probe", "overlap", str(_corrupt_meta(d, w))], 2,
         "run.json is unreadable or not valid JSON"),
    # 4. every float flag is finite and in range
    Case("temperature-nan", lambda d, w: _capture(w, d / "out", "--temperature", "nan"), 2,
         "--temperature: 'nan' is not a finite number"),
    Case("top-p-inf", lambda d, w: _capture(w, d / "out", "--top-p", "inf"), 2,
         "--top-p: 'inf' is not a finite number"),
    Case("top-p-above-one", lambda d, w: _capture(w, d / "out", "--top-p", "1.5"), 2,
         "is outside (0, 1]"),
    Case("train-lr-nan", lambda d, w: _train(w, d / "out", "--lr", "nan"), 2,
         "--lr: 'nan' is not a finite number"),
    Case("coldstart-lr-negative", lambda d, w: [
        "coldstart", "--student", str(w["s"]), "--teacher", str(w["t"]), "--prompts",
        str(w["prompts"]), "--out", str(d / "out"), "--lr", "-1"], 2, "lr must be positive"),
    Case("coldstart-lr-inf", lambda d, w: [
        "coldstart", "--student", str(w["s"]), "--teacher", str(w["t"]), "--prompts",
        str(w["prompts"]), "--out", str(d / "out"), "--lr", "inf"], 2, "not a finite number"),
    Case("gpu-memory-utilization-nan", lambda d, w: _preflight(
        w, d / "out", "--gpu-memory-utilization", "nan"), 2, "not a finite number"),
    Case("ingest-temperature-zero", lambda d, w: [
        "ingest", "--student", str(w["s"]), "--teacher", str(w["t"]), "--from", "jsonl",
        str(w["prompts"]), "--out", str(d / "out"), "--temperature", "0"], 2,
        "is outside (0, inf)"),
    # 5. resource bombs: refused up front with the limit named
    Case("n-samples-bomb", lambda d, w: _capture(w, d / "out", "--n-samples", "100000000"), 2,
         "GB of memory available"),
    Case("huge-prompt-line", lambda d, w: _capture(w, d / "out", prompts=_prompts(
        d, [{"prompt": "w1 " * 3000}])), 2, "over the limit of 8,192 (16 characters per token"),
    Case("50-mb-prompt-line-refused-before-tokenising", lambda d, w: _capture(
        w, d / "out", prompts=_prompts(d, [{"prompt": "w1 " * 1_400_000}])), 2,
        "row 1 is 4,200,000 characters, over the limit of 4,000,000"),
    # 6. quiet coercion
    Case("non-scalar-answer", lambda d, w: _capture(w, d / "out", prompts=_prompts(
        d, [{"prompt": "w1 w2", "answer": [1, 2]}])), 2, "non-scalar answer [1, 2]"),
    Case("auto-map-without-trust-remote-code", lambda d, w: _capture(
        w, d / "out", t=_auto_map_model(d)), 2, "has auto_map ['AutoModelForCausalLM']"),
    # issue 16.5: one meaning per flag
    Case("train-top-k-is-not-the-loss-support", lambda d, w: _train(w, d / "out", "--top-k", "4"),
         2, "--top-k is --loss-top-k in train"),
]


def _rank_dir(d: Path, w) -> Path:
    out = d / "ranking"
    shutil.copytree(w["run"], out / Path(w["t"]).name)  # a candidate's earlier pre-flight run
    return out


def _corrupt_meta(d: Path, w) -> Path:
    run = _copy_run(d, w)
    (run / "run.json").write_text('{"schema_version": 1, "status": ')
    return run


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, world, tmp_path, capsys):
    argv = case.setup(tmp_path, world)
    capsys.readouterr()
    before = _snapshot(tmp_path)
    world_before = _snapshot(world["root"])
    code = _run(argv)
    err = capsys.readouterr().err
    assert code == case.code, err
    assert case.phrase in err, err
    assert "Traceback" not in err
    assert _snapshot(tmp_path) == before, "the user's files changed"
    assert _snapshot(world["root"]) == world_before


def test_concurrent_writer_is_refused_naming_its_pid(world, tmp_path, capsys):
    """A second writer on a directory another process is writing: exit 2 naming its PID."""
    out = tmp_path / "busy"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom opd_diag.core.runs import run_lock\n"
         f"with run_lock({str(out)!r}):\n    print('held', flush=True)\n    time.sleep(120)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = _snapshot(tmp_path)
        code = _run(_capture(world, out))
        err = capsys.readouterr().err
        assert code == 2, err
        assert f"is being written by PID {holder.pid}" in err, err
        assert _snapshot(tmp_path) == before
    finally:
        holder.kill()
        holder.wait()
    # the holder died (SIGKILL): the kernel released its lock; its lock file is taken over
    assert (out / ".opd-diag.lock").exists()
    assert _run(_capture(world, out)) == 0
    assert not (out / ".opd-diag.lock").exists()  # released on exit


def test_damaged_shard_fix_in_the_message_works(world, tmp_path, capsys):
    """The message says: delete the file and --resume; doing so restores a readable run."""
    run = _truncated_states(tmp_path, world)
    assert _run(["probe", "overlap", str(run)]) == 2
    bad = next(line for line in capsys.readouterr().err.split() if line.endswith(".parquet"))
    Path(bad).unlink()
    assert _run(_capture(world, run, "--resume")) == 0
    assert _run(["probe", "overlap", str(run)]) == 0


def test_overwrite_replaces_a_run_but_keeps_nothing_else(world, tmp_path):
    run = _copy_run(tmp_path, world)
    (run / "stale.txt").write_text("from the old run")
    t0 = time.time()
    assert _run(_capture(world, run, "--overwrite", "--seed", "3")) == 0
    assert not (run / "stale.txt").exists()
    meta = json.loads((run / "run.json").read_text())
    assert meta["config"]["sampling"]["seed"] == 3 and meta["status"] == "complete"
    assert time.time() - t0 < 60


def test_user_prompt_ids_are_kept_as_a_column(world, tmp_path):
    from opd_diag.core.runs import load_run

    p = _prompts(tmp_path, [{"prompt_id": "q-17", "prompt": "w1 w2"},
                            {"prompt_id": "q-3", "prompt": "w3 w4"}])
    assert _run(_capture(world, tmp_path / "out", prompts=p)) == 0
    prompts = load_run(tmp_path / "out").prompts
    assert list(prompts.prompt_id) == [0, 1]
    assert list(prompts.user_prompt_id) == ["q-17", "q-3"]
