"""The OPD loop under ``torchrun --nproc_per_node=2`` (gloo, CPU, DDP) equals one process."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import torch

from opd_diag.cli import main as cli_main
from opd_diag.core.runs import load_run

torch.set_num_threads(1)


def _torchrun(args: list[str], tmp_path, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--master_port=0", "--rdzv_backend=c10d", "--rdzv_endpoint=localhost:0", *args]
    return subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)


def _write_prompts(tmp_path, n: int):
    """Prompts with answers (a regex checker scores them), so training accuracy and the
    held-out evaluation (rank 0 only under torchrun) are part of the comparison."""
    path = tmp_path / "prompts.jsonl"
    rows = [{"prompt": f"w{i} w{i + 1} w{i + 2}", "answer": f"w{i % 4}"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _train_args(pair, prompts, out, *extra) -> list[str]:
    # 3 rows per step split 1 | 2 over the ranks, sampled one row per batch (as in one process);
    # one rollout per capture micro-batch, so rank 1 runs two DDP backwards (the first under
    # no_sync) and rank 0 one real and one idle pass; LM-head chunks of 5 positions
    # (checkpointed chunks).
    return ["--quiet", "train", "--student", str(pair[0]), "--teacher", str(pair[1]),
            "--prompts", str(prompts), "--eval-prompts", str(prompts), "--eval-every", "2",
            "--checker", r"regex:(w\d+)", "--out", str(out), "--preset", "tiny", "--steps", "3",
            "--batch-prompts", "3", "--n-samples", "1", "--rollout-batch-size", "1",
            "--capture-batch-size", "1", "--chunk-tokens", "5", "--ckpt-every", "2",
            "--objective", "reverse_kl", "--seed", "5", *extra]


def _assert_same(a, b) -> None:
    pd.testing.assert_frame_equal(a.prompts, b.prompts, check_exact=True)
    pd.testing.assert_frame_equal(a.rollouts, b.rollouts, check_exact=True)
    pd.testing.assert_frame_equal(a.states, b.states, check_exact=False, rtol=0, atol=1e-5)
    ma, mb = (r.metrics.drop(columns=[c for c in r.metrics if c.startswith("time_")])
              for r in (a, b))
    pd.testing.assert_frame_equal(ma, mb, check_exact=False, rtol=1e-5, atol=1e-6)


def test_two_ranks_train_like_one_process_and_resume(tiny_pair, tmp_path):
    prompts = _write_prompts(tmp_path, n=5)
    single, multi = tmp_path / "single", tmp_path / "multi"
    assert cli_main(_train_args(tiny_pair, prompts, single)) == 0
    proc = _torchrun(["-m", "opd_diag", *_train_args(tiny_pair, prompts, multi)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    a, b = load_run(single), load_run(multi)
    _assert_same(a, b)
    assert b.metrics.step.tolist() == [0, 1, 2] and b.meta["status"] == "complete"
    assert b.meta["world_size"] == 2 and a.config == b.config
    assert b.meta["eval_teacher"] == a.meta["eval_teacher"] and "eval/greedy_acc" in b.metrics
    assert b.metrics["train_acc"].notna().all()
    names = sorted(p.name for p in (multi / "states.parquet").glob("part-*"))
    assert names == [f"part-{s:06d}-r{r}.parquet" for s in range(3) for r in range(2)]
    assert b.metrics.loss.iat[0] == pytest.approx(b.metrics.rkl.iat[0], rel=1e-5)

    # Resume: drop the last checkpoint, so step 2 is recomputed by both ranks from step 1's.
    shutil.rmtree(multi / "checkpoints" / "step-000002")
    meta = json.loads((multi / "run.json").read_text())
    (multi / "run.json").write_text(json.dumps({**meta, "status": "running"}))
    proc = _torchrun(["-m", "opd_diag", *_train_args(tiny_pair, prompts, multi, "--resume")],
                     tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_same(a, load_run(multi))


def test_ranks_with_different_train_configs_fail_on_all_ranks(tiny_pair, tmp_path):
    prompts = _write_prompts(tmp_path, n=2)
    out = tmp_path / "bad"
    script = tmp_path / "per_rank_lr.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys
        from opd_diag.cli import main
        args = {_train_args(tiny_pair, prompts, out)!r}
        args[args.index("--seed") + 1] = os.environ["RANK"]   # rank-dependent: a broken launch
        sys.exit(main(args))
    """))
    proc = _torchrun([str(script)], tmp_path)
    assert proc.returncode != 0
    assert proc.stderr.count("ranks were started with different train configs") == 2
    assert "ranks [0]" in proc.stderr and "ranks [1]" in proc.stderr
    assert not out.exists()
