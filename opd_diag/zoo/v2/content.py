"""Content alignment on zoo v2 (the paper's phenomenon #17, held-out column), both halves.

The held-out twin of :mod:`opd_diag.zoo.content`, with its rules unchanged (fixed on zoo v1
before these runs existed): ``v2-long-horizon`` (v2-teacher-a → v2-student-partial, the v2
family's success side) at the protocol budget (:data:`~.validate.BUDGET`), 3 OPD seeds per pool,

* **aligned**: the pair's own OPD prompts, lists of 10-12 distinct two-digit numbers, content
  v2-teacher-a was trained on;
* **unaligned**: lists of the same lengths in which one number appears twice
  (``SortTask(repeats=True)``, :func:`opd_diag.zoo.data.v2_content_prompts`), content no zoo-v2
  model was trained on (v1's unaligned pool was three-operand sums for a two-operand teacher),

both scored on the pair's ``hard`` eval items (distinct numbers, the protocol's eval set). The
accuracy half is the paired bootstrap of the final greedy accuracy difference
(:func:`opd_diag.zoo.content.accuracy_half`), the dynamics halves compare 10-step window means
of the overlap ratio, the student overlap mass and the student entropy
(:func:`opd_diag.zoo.content.dynamics_half`), and the sweep's collapse rule confounds the
accuracy half. Runs are named ``v2-long-horizon-content-{pool}-seed{s}``; their tables are
committed as ``reports/zoo-v2-content.csv`` (windows) and ``reports/zoo-v2-content-items.csv``
(per-item results), from which :func:`content_claims_v2` re-derives the row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..content import DYNAMICS, content_result, window_means
from ..data import V2_CONTENT_POOLS as POOLS

CONTENT_PAIR = "v2-long-horizon"
SUBSET = "hard"


def tag(pool: str) -> str:
    return f"content-{pool}"


def run_content(root: str | Path = "runs/zoo-v2", seeds: tuple[int, ...] = (0, 1, 2),
                n_eval: int = 100, workers: int = 2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both pools' runs (complete ones are reused) and their ``(windows, items)`` tables."""
    from .validate import run_jobs

    run_jobs(root, n_eval, workers, [(CONTENT_PAIR, s, {"tag": tag(pool), "content": pool})
                                     for s in seeds for pool in POOLS])
    return content_tables(root)


def content_tables(root: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(windows, items)`` of the complete content runs under ``root``: 10-step window means of
    the dynamics metrics per run, and the final greedy per-item correctness on :data:`SUBSET`."""
    from ...core.runs import load_run
    from .validate import seed_of, subset_correct

    wins, items = [], []
    for pool in POOLS:
        for result in sorted(Path(root).glob(f"{CONTENT_PAIR}-{tag(pool)}-seed*/v2_eval.parquet")):
            path, seed = result.parent, seed_of(result.parent)
            wins += window_means(load_run(path).metrics, path.name, pool, seed)
            correct = subset_correct(result, SUBSET)
            items.append(pd.DataFrame({"run": path.name, "pool": pool, "seed": seed,
                                       "item": np.arange(len(correct)), "correct": correct}))
    windows = pd.DataFrame(wins, columns=["run", "pool", "seed", "window", "clipped_ratio",
                                          *(c for c, _, _ in DYNAMICS)])
    return windows, (pd.concat(items, ignore_index=True) if items else pd.DataFrame(
        columns=["run", "pool", "seed", "item", "correct"]))


def content_claims_v2(windows: pd.DataFrame, items: pd.DataFrame) -> tuple[str, str]:
    """Row 17's held-out ``(text, result)`` from the committed v2 content tables."""
    if not len(items) and not len(windows):
        return "not run", "not run"
    parts, status, seeds = content_result(windows, items, "hard accuracy")
    return (f"{CONTENT_PAIR}, protocol budget, {seeds} OPD seeds; v2-teacher-a's own content "
            "(distinct numbers) vs unseen content (one number repeated): " + "; ".join(parts),
            status)


def write_tables(windows: pd.DataFrame, items: pd.DataFrame,
                 out: str | Path = "reports/zoo-v2-content.csv",
                 items_out: str | Path = "reports/zoo-v2-content-items.csv") -> None:
    """Write both tables, each atomically (:func:`opd_diag.core.runs.write_csv`)."""
    from ...core.runs import write_csv

    for path, table in ((Path(out), windows), (Path(items_out), items)):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_csv(path, table)
