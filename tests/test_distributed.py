"""Capture under ``torchrun --nproc_per_node=2`` (gloo, CPU) equals a single-process run."""

import json
import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import torch

from opd_diag import distributed
from opd_diag.cli import main as cli_main
from opd_diag.core.runs import load_run
from opd_diag.testing import write_prompts

torch.set_num_threads(1)


def _torchrun(args: list[str], tmp_path, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--master_port=0", "--rdzv_backend=c10d", "--rdzv_endpoint=localhost:0", *args]
    return subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)


def _capture_args(pair, prompts, out) -> list[str]:
    # 5 prompts x 2 samples in batches of 3: four batches (3, 3, 3, 1), uneven across 2 ranks.
    return ["--quiet", "capture", "--student", str(pair[0]), "--teacher", str(pair[1]),
            "--prompts", str(prompts), "--out", str(out), "--n-samples", "2",
            "--batch-size", "3", "--max-new-tokens", "6", "--top-k", "8", "--seed", "7"]


def test_two_ranks_equal_one_process(tiny_pair, tmp_path):
    prompts = write_prompts(tmp_path / "prompts.jsonl", n=5, vocab_size=64)
    single, multi = tmp_path / "single", tmp_path / "multi"
    assert cli_main(_capture_args(tiny_pair, prompts, single)) == 0
    proc = _torchrun(["-m", "opd_diag", *_capture_args(tiny_pair, prompts, multi)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    a, b = load_run(single), load_run(multi)
    for table in ("prompts", "rollouts", "states"):
        pd.testing.assert_frame_equal(getattr(a, table), getattr(b, table), check_exact=True)
    assert len(b.rollouts) == 10 and b.rollouts.rollout_id.is_unique
    assert b.meta["status"] == "complete" and b.meta["n_rollouts"] == 10
    names = sorted(p.name for p in (multi / "states.parquet").glob("part-*"))
    assert names == ["part-000000-r0.parquet", "part-000001-r1.parquet",
                     "part-000002-r0.parquet", "part-000003-r1.parquet"]
    assert a.config == b.config


def test_ranks_with_different_configs_fail_on_all_ranks(tiny_pair, tmp_path):
    prompts = write_prompts(tmp_path / "prompts.jsonl", n=2, vocab_size=64)
    out = tmp_path / "bad"
    script = tmp_path / "per_rank_seed.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys
        from opd_diag.cli import main
        args = {_capture_args(tiny_pair, prompts, out)!r}
        args[args.index("--seed") + 1] = os.environ["RANK"]   # rank-dependent: a broken launch
        sys.exit(main(args))
    """))
    proc = _torchrun([str(script)], tmp_path)
    assert proc.returncode != 0
    assert proc.stderr.count("ranks were started with different capture configs") == 2
    assert "ranks [0]" in proc.stderr and "ranks [1]" in proc.stderr
    assert not out.exists()


def test_single_process_context_and_sharding(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = distributed.context()
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.active) == (0, 1, True, False)
    assert distributed.all_gather_object(ctx, 3) == [3]
    distributed.check_same_config(ctx, {"a": 1})  # nothing to compare with
    two = [distributed.DistContext(r, 2) for r in (0, 1)]
    assert [distributed.shard(c, 5) for c in two] == [[0, 2, 4], [1, 3]]
    assert distributed.config_hash({"a": 1, "b": 2}) == distributed.config_hash({"b": 2, "a": 1})
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(Exception, match="WORLD_SIZE"):
        distributed.context()


def test_loader_merges_rank_shards_by_key(tmp_path):
    from opd_diag.core.runs import RunWriter, open_run

    with open_run(tmp_path / "r", "capture", {}) as run:
        RunWriter(run.path, {}, rank=1).write_shard("rollouts", "000001", pd.DataFrame({"x": [1]}))
        RunWriter(run.path, {}, rank=0).write_shard("rollouts", "000002", pd.DataFrame({"x": [2]}))
        RunWriter(run.path, {}, rank=3).write_shard("rollouts", "000000", pd.DataFrame({"x": [0]}))
        assert RunWriter(run.path, {}, rank=0).has_shard("rollouts", "000001")  # any rank's shard
        assert not run.has_shard("rollouts", "000003")
    assert load_run(tmp_path / "r").rollouts.x.tolist() == [0, 1, 2]
    meta = json.loads((tmp_path / "r" / "run.json").read_text())
    assert meta["status"] == "complete"


def test_preflight_under_torchrun_equals_single_process(tiny_pair, tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text("".join(json.dumps({"prompt": f"w{i} w{i + 1}", "answer": f"w{i + 2}"}) + "\n"
                         for i in range(4)))

    def args(out):
        return ["--quiet", "preflight", "--student", str(tiny_pair[0]), "--teacher",
                str(tiny_pair[1]), "--prompts", str(p), "--budget", "small", "--max-new-tokens",
                "6", "--checker", r"regex:(w\d+)$", "--out", str(out)]

    single_code = cli_main(args(tmp_path / "single"))
    proc = _torchrun(["-m", "opd_diag", *args(tmp_path / "multi")], tmp_path)
    # torchrun turns any non-zero child exit into its own 1 and names the child's code
    if single_code == 0:
        assert proc.returncode == 0, proc.stderr[-3000:]
    else:
        assert f"exitcode  : {single_code}" in proc.stderr, proc.stderr[-3000:]
    a = json.loads((tmp_path / "single" / "verdict.json").read_text())
    b = json.loads((tmp_path / "multi" / "verdict.json").read_text())
    assert a["verdict"] == b["verdict"]
    assert [c["value"] for c in a["conditions"]] == [c["value"] for c in b["conditions"]]
