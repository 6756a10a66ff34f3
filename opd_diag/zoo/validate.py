"""``opd-diag zoo validate``: run the real OPD loop on every zoo pair and record what happened.

Each :class:`ValidationRun` is one OPD run (the same ``train()`` a user calls) on a zoo pair,
sometimes with a twist the pair is built around (forward KL for ``out-of-reach``, a cold-started
student for ``incompatible``, the alternative teacher for ``reverse``, the aligned template for
``template``). Runs land in one directory (default ``runs/examples``, shared with
``make reports``); complete runs are reused. :func:`summarize` turns them into one table
(accuracy before/after per subset, teacher accuracy, gap recovery, step-0 and final alignment
metrics) that ``reports/zoo-phenomena.md`` and the pre-flight validation read.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.runs import write_csv

SUBSET_MAIN = "5d"


CONTENT_SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class ValidationRun:
    name: str
    pair: str
    objective: str = "reverse_kl"
    steps: int = 150
    template: str | None = None  # prompt template (default: the pair's)
    teacher: str | None = None  # override (alt teacher)
    coldstart: bool = False  # start from the student cold-started on the teacher's rollouts
    lr: float | None = None  # override the pair's OPD learning rate
    content: str | None = None  # OPD prompt pool by content (zoo.data.CONTENT_POOLS)
    seed: int = 0  # OPD seed (sampling, data order, torch)


RUNS: tuple[ValidationRun, ...] = (
    ValidationRun("opd-success", "success", steps=200),
    ValidationRun("opd-out-of-reach", "out-of-reach"),
    ValidationRun("opd-out-of-reach-fkl", "out-of-reach", objective="forward_kl", lr=1e-3),
    ValidationRun("opd-incompatible", "incompatible", steps=100),
    ValidationRun("opd-incompatible-coldstart", "incompatible", steps=100, coldstart=True),
    ValidationRun("opd-no-novelty", "no-novelty", steps=200),
    ValidationRun("opd-reverse", "reverse", steps=100),
    ValidationRun("opd-reverse-alt", "reverse", steps=100, teacher="student-0-long"),
    ValidationRun("opd-template-misaligned", "template", steps=100),
    ValidationRun("opd-template-aligned", "template", steps=100, template="plain"),
    # content alignment (#17): the success pair on teacher-a's own training content vs content
    # no zoo model saw (three operands), same budget, 3 OPD seeds each
    *(ValidationRun(f"opd-content-{name}-seed{seed}", "success", steps=100, content=pool,
                    seed=seed)
      for name, pool in (("aligned", "teacher"), ("unaligned", "three-operand"))
      for seed in CONTENT_SEEDS),
)


def _complete(path: Path) -> bool:
    from ..core.runs import is_complete

    return is_complete(path)


def coldstart_dir(root: Path, pair: str) -> Path:
    return Path(root) / "students" / f"{pair}-coldstart"


def _coldstart(root: Path, spec: ValidationRun) -> Path:
    from ..core.models import load_pair
    from ..core.prompts import validate_prompts
    from ..train.recovery import ColdStartConfig, coldstart
    from . import get_pair, model_dir

    out = coldstart_dir(root, spec.pair)
    if (out / "coldstart.json").is_file():
        return out
    zp = get_pair(spec.pair)
    pair = load_pair(model_dir(zp.student), model_dir(zp.teacher))
    # 4096 prompts x 3 epochs (~380 SFT steps). The earlier 1024 x 2 (64 steps) left the student
    # between two styles and broken (easy 1.00 -> 0.13, 5-digit 0): a cold start has to finish
    # switching the student's style before OPD can use it.
    cfg = ColdStartConfig(n_samples=1, max_new_tokens=zp.hyper.max_new_tokens,
                          checker=f"task:{zp.task}", epochs=3, lr=1e-3, batch_size=32)
    coldstart(pair, validate_prompts(zp.prompts(4096, seed=7)), out, cfg, overwrite=True)
    return out


def run_one(root: str | Path, spec: ValidationRun, progress: bool = False) -> Path:
    """Run (or reuse) one validation run; returns its directory."""
    import torch

    from ..core.models import load_pair
    from ..core.prompts import validate_prompts
    from ..train.config import resolve_config
    from ..train.loop import train
    from . import get_pair, model_dir
    from .data import content_prompt_set

    torch.set_num_threads(1)
    root = Path(root)
    out = root / spec.name
    if _complete(out):
        return out
    zp = get_pair(spec.pair)
    student = _coldstart(root, spec) if spec.coldstart else model_dir(zp.student)
    pair = load_pair(student, model_dir(spec.teacher or zp.teacher))
    template = spec.template or zp.template
    evals = validate_prompts(zp.eval_sets(100, template=template))
    cfg = resolve_config(preset="cpu-zoo", overrides={
        "objective": spec.objective, "steps": spec.steps, "lr": spec.lr or zp.hyper.lr,
        "eval_every": 25, "ckpt_every": 50, "states_every": 5, "checker": f"task:{zp.task}",
        "max_new_tokens": zp.hyper.max_new_tokens, "seed": spec.seed})
    prompts = (content_prompt_set(spec.content, template, 1024, seed=0) if spec.content
               else zp.prompts(1024, template=template))
    return train(pair, validate_prompts(prompts), out, cfg,
                 eval_prompts=evals, overwrite=True, progress=progress,
                 extra_meta={"zoo_validation": {"pair": spec.pair, "run": spec.name,
                                                "template": template,
                                                "teacher": spec.teacher or zp.teacher,
                                                "coldstart": spec.coldstart,
                                                "content": spec.content, "seed": spec.seed}})


def validate(root: str | Path = "runs/examples", only: list[str] | None = None,
             workers: int = 2) -> pd.DataFrame:
    """Run every validation run (``workers`` in parallel, 1 thread each) and summarise them."""
    specs = [s for s in RUNS if not only or s.name in only or s.pair in only]
    root = Path(root)
    # cold starts first (a run that needs one must not race its twin building it)
    for s in specs:
        if s.coldstart:
            _coldstart(root, s)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for path in pool.map(run_one, [root] * len(specs), specs):
            print(f"[validate] done: {path}", flush=True)
    return summarize(root)


def _final(metrics: pd.DataFrame, col: str) -> float:
    if col not in metrics:
        return np.nan
    vals = metrics[col].dropna()
    return float(vals.iloc[-1]) if len(vals) else np.nan


def _first(metrics: pd.DataFrame, col: str) -> float:
    if col not in metrics:
        return np.nan
    vals = metrics[col].dropna()
    return float(vals.iloc[0]) if len(vals) else np.nan


def summarize(root: str | Path = "runs/examples") -> pd.DataFrame:
    """One row per validation run found under ``root``."""
    from ..core.runs import load_run

    rows = []
    for spec in RUNS:
        path = Path(root) / spec.name
        if not _complete(path):
            continue
        run = load_run(path)
        m = run.metrics
        before, teacher = run.meta.get("eval_initial", {}), run.meta.get("eval_teacher", {})
        row = {"run": spec.name, "pair": spec.pair, "objective": spec.objective,
               "steps": spec.steps, "template": run.meta.get("zoo_validation", {}).get("template"),
               "teacher": run.meta.get("zoo_validation", {}).get("teacher")}
        for subset in ("easy", "4d", "5d"):
            key = f"greedy_acc/{subset}"
            row[f"acc_before/{subset}"] = before.get(key, np.nan)
            row[f"acc_after/{subset}"] = _final(m, f"eval/{key}")
            row[f"acc_best/{subset}"] = float(m[f"eval/{key}"].max()) if f"eval/{key}" in m \
                else np.nan
            row[f"acc_teacher/{subset}"] = teacher.get(key, np.nan)
        gap = row[f"acc_teacher/{SUBSET_MAIN}"] - row[f"acc_before/{SUBSET_MAIN}"]
        row["gap_recovery/5d"] = (row[f"acc_after/{SUBSET_MAIN}"] - row[f"acc_before/{SUBSET_MAIN}"]
                                  ) / gap if abs(gap) > 1e-9 else np.nan
        for col in ("overlap_ratio", "overlap_mass_s", "overlap_mass_t", "eq7_advantage",
                    "entropy_gap", "rkl", "loss", "grad_norm", "H_s"):
            row[f"{col}@first"] = _first(m, col)
            row[f"{col}@last"] = _final(m, col)
        row["seconds"] = float(m["time_step"].sum()) if "time_step" in m else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", default="runs/examples")
    ap.add_argument("--only", nargs="*", help="run names or pair names")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    df = validate(args.runs, args.only, args.workers)
    pd.set_option("display.width", 200)
    print(df.T.to_string())
    write_csv(Path(args.runs) / "zoo-validation.csv", df)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
