"""The Python API prints no progress bars of its own libraries (transformers' "Loading weights",
"Writing model shards") unless the caller asks for progress."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import sys
import opd_diag as od
from opd_diag.train import resolve_config, train
student, teacher = sys.argv[1], sys.argv[2]
pair = od.load_pair(student, teacher)
cfg = resolve_config("tiny", overrides={"steps": 1, "ckpt_every": 1})
train(pair, od.load_prompts(sys.argv[3]), sys.argv[4], cfg, progress=False)
"""


def test_api_prints_no_stray_bars(tiny_pair, prompts_file, tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_pair[0]), str(tiny_pair[1]),
                           str(prompts_file), str(tmp_path / "run")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert "Loading weights" not in out and "Writing model shards" not in out, out[-2000:]
    assert "it/s]" not in out, out[-2000:]
