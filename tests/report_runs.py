"""Small runs of every kind for the report, notebook and browser tests (built once per session).

A pre-flight run (tiny related pair, prompts with answers, continuations, teacher rollouts), two
OPD loop runs (topk and sampled-token objectives, with held-out evaluation) and a trajectory that
carries HTML/JS payloads in its prompt and completion text, so tests can check they are escaped.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path

import pandas as pd
import torch

XSS = "<script>alert(1)</script>"
XSS_IMG = "<img src=x onerror=\"document.title='PWNED'\">"


def _verifier(text: str, answer: str) -> bool:
    return answer in text.split()


@functools.lru_cache(maxsize=1)
def report_runs() -> dict[str, Path]:
    """``{"root", "preflight", "train_a", "train_b"}``: run directories under a temp root."""
    from opd_diag.core.models import load_pair
    from opd_diag.core.prompts import load_prompts, validate_prompts
    from opd_diag.core.runs import RunWriter, load_run
    from opd_diag.preflight import PreflightConfig, run_preflight
    from opd_diag.testing import make_pair_dirs
    from opd_diag.train import resolve_config, train
    from opd_diag.train.evaluate import load_eval_prompts

    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="opd-report-"))
    student, teacher = make_pair_dirs(root / "pair", vocab_size=64, noise=0.05)
    pair = load_pair(student, teacher)
    texts = [f"w{i} w{i + 1} w{i + 2}" for i in range(6)]
    texts[0] = f"{XSS} w1 w2"
    prompts = validate_prompts(pd.DataFrame({"prompt": texts,
                                             "answer": [f"w{i + 3}" for i in range(6)]}))
    cfg = PreflightConfig(n_prompts=6, n_samples=2, max_new_tokens=12, depths=(0.0, 0.5),
                          max_continuation_rollouts=6)
    pf = run_preflight(pair, prompts, root / "preflight", config=cfg, verifier=_verifier)
    run = load_run(pf.run)
    roll = run.rollouts.copy()
    roll.loc[0, "completion"] = f"{XSS} {XSS_IMG} " + roll.loc[0, "completion"]
    shards = sorted((run.path / "rollouts.parquet").glob("part-*.parquet"))
    for s in shards[1:]:
        s.unlink()
    RunWriter(run.path, run.meta).write_shard("rollouts", shards[0].stem.removeprefix("part-"), roll)

    rows = [{"prompt": f"w{i} w{i + 1}", "answer": f"w{i % 3}", "subset": "ab"[i % 2]}
            for i in range(6)]
    path = root / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    evals = load_eval_prompts(path)
    out = {"root": root, "preflight": pf.run}
    for name, objective in (("train_a", "topk"), ("train_b", "sampled_token")):
        tcfg = resolve_config("tiny", overrides={
            "steps": 4, "eval_every": 2, "checker": r"regex:(w\d+)", "objective": objective,
            "max_new_tokens": 10, "ckpt_every": 0, "keep_checkpoints": 1})
        train(load_pair(student, teacher), load_prompts(path), root / name, tcfg,
              eval_prompts=evals, progress=False)
        out[name] = root / name
    return out


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import time

    t0 = time.time()
    print(report_runs(), time.time() - t0)
