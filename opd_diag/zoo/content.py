"""Content alignment on the zoo (the paper's phenomenon #17), both halves of each claim.

The paper (App. C.4(b)) ran OPD on the teacher's own RL prompts (DAPO) and on matched prompts
deduplicated against them (DeepMath): the aligned pool gave better downstream accuracy, a
**lower** overlap ratio throughout, a **higher** cumulative student overlap mass and a
substantially **lower** student entropy. Ours: the ``success`` pair (teacher-a, student-partial)
for 100 steps on teacher-a's own training content (``teacher`` pool: two operands, 1-5 digits)
and on content no zoo model saw (``three-operand``), 3 OPD seeds each
(:data:`~.validate.CONTENT_SEEDS`), both scored on the same two-operand eval items.

Rules, fixed before the runs existed:

* **accuracy** (aligned better): the paired 95 % bootstrap CI of the 5-digit accuracy
  difference, resampling eval items within each seed, **holds** when its low end is > 0,
  **fails** when its high end is < 0, else **undetermined**;
* a run whose last 10 steps ran to the length cap in at least half its rollouts (the sweep's
  collapse rule) makes the accuracy half **confounded**;
* **dynamics** (overlap ratio lower, student overlap mass higher, student entropy lower,
  "throughout"): per 10-step window, the seed-mean difference aligned − unaligned; the half
  **holds** when every window is on the claimed side, **fails** when at most half of them are,
  else **undetermined**.

:func:`content_tables` reads the runs into ``reports/zoo-content.csv`` (window means) and
``reports/zoo-content-items.csv`` (final per-item correctness); :func:`content_claims` and
:func:`apply_content` turn those committed tables into row 17, so the tests re-derive it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

#: pool name in the run names -> the claimed direction of aligned − unaligned
DYNAMICS = (("overlap_ratio", "lower overlap ratio throughout", -1),
            ("overlap_mass_s", "higher student overlap mass throughout", +1),
            ("H_s", "lower student entropy throughout", -1))
WINDOW = 10
N_BOOT = 2000
SUBSET = "5d"


def _runs():
    from .validate import RUNS

    return [r for r in RUNS if r.content is not None]


def window_means(metrics: pd.DataFrame, run: str, pool: str, seed: int) -> list[dict]:
    """One windows-table row per :data:`WINDOW` steps of a run's metrics: its first step, the
    clipped share and each :data:`DYNAMICS` metric, averaged over the window."""
    rows = []
    for lo in range(0, len(metrics), WINDOW):
        w = metrics.iloc[lo: lo + WINDOW]
        rows.append({"run": run, "pool": pool, "seed": seed, "window": int(w.step.iloc[0]),
                     "clipped_ratio": float(w.clipped_ratio.mean()),
                     **{c: float(w[c].mean()) for c, _, _ in DYNAMICS}})
    return rows


def content_tables(root: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(windows, items)`` from the complete content runs under ``root``.

    windows: run, pool, seed, window (first step), and the window mean of each dynamics metric;
    items: run, pool, seed, item, correct (the final greedy eval on :data:`SUBSET`).
    """
    from ..core.runs import is_complete, load_run

    wins, items = [], []
    for spec in _runs():
        path = Path(root) / spec.name
        if not is_complete(path):
            continue
        pool = "aligned" if "-aligned-" in spec.name else "unaligned"
        run = load_run(path)
        wins += window_means(run.metrics, spec.name, pool, spec.seed)
        ev = run.table("eval")
        final = max(k for k in ev.model.unique() if str(k).isdigit())  # the last step's eval
        last = ev[(ev.model == final) & (ev["mode"] == "greedy")
                  & (ev.subset == SUBSET)].sort_values("prompt_id")
        items.append(pd.DataFrame({"run": spec.name, "pool": pool, "seed": spec.seed,
                                   "item": np.arange(len(last)),
                                   "correct": last.correct.astype(int).to_numpy()}))
    return (pd.DataFrame(wins),
            pd.concat(items, ignore_index=True) if items else pd.DataFrame(
                columns=["run", "pool", "seed", "item", "correct"]))


def accuracy_half(items: pd.DataFrame, seed: int = 0) -> dict:
    """Aligned − unaligned final accuracy: the point difference and its paired bootstrap CI."""
    wide = items.pivot_table(index=["seed", "item"], columns="pool", values="correct")
    wide = wide.dropna()
    if not len(wide) or not {"aligned", "unaligned"} <= set(wide.columns):
        return {"result": "not run"}
    diff = wide.aligned - wide.unaligned
    d = diff.to_numpy(float)
    groups = [g.to_numpy(float) for _, g in diff.groupby(level=0)]
    rng = np.random.default_rng(seed)
    boots = np.array([np.mean(np.concatenate([g[rng.integers(0, len(g), len(g))] for g in groups]))
                      for _ in range(N_BOOT)])
    lo, hi = np.quantile(boots, [0.025, 0.975])
    result = "holds" if lo > 0 else ("fails" if hi < 0 else "undetermined")
    return {"result": result, "diff": float(d.mean()), "lo": float(lo), "hi": float(hi),
            "aligned": float(wide.aligned.mean()), "unaligned": float(wide.unaligned.mean()),
            "n_seeds": len(groups)}


def dynamics_half(windows: pd.DataFrame, col: str, sign: int) -> dict:
    """Seed-mean aligned − unaligned per window and whether every window is on the claimed side."""
    mean = windows.groupby(["window", "pool"])[col].mean().unstack("pool")
    if not len(mean) or not {"aligned", "unaligned"} <= set(mean.columns):
        return {"result": "not run"}
    mean = mean.dropna()
    diff = (mean.aligned - mean.unaligned).to_numpy(float)
    on_side = int((sign * diff > 0).sum())
    n = len(diff)
    result = "holds" if on_side == n else ("fails" if on_side <= n / 2 else "undetermined")
    return {"result": result, "on_side": on_side, "windows": n,
            "aligned": float(mean.aligned.mean()), "unaligned": float(mean.unaligned.mean())}


def content_result(windows: pd.DataFrame, items: pd.DataFrame, accuracy_name: str
                   ) -> tuple[list[str], str, int]:
    """Every half of the claim from content tables: ``(texts, row result, n seeds)``. The
    accuracy half, confounded by the sweep's collapse rule, then the three dynamics halves."""
    from .v2.sweep import COLLAPSE_CLIPPED, phenomenon_status

    acc = accuracy_half(items)
    # the sweep's collapse rule: a run whose last window ran to the length cap in at least half
    # its rollouts measures the collapse, not the content
    last = windows[windows.window == windows.window.max()] if len(windows) else windows
    collapsed = sorted(last.run[last.clipped_ratio >= COLLAPSE_CLIPPED]) if len(last) else []
    if collapsed and acc["result"] != "not run":
        acc["result"] = "confounded"
    halves, parts = [acc["result"]], []
    if acc["result"] != "not run":
        parts.append(f"{accuracy_name} aligned {acc['aligned']:.2f} vs unaligned "
                     f"{acc['unaligned']:.2f}, diff {acc['diff']:+.2f} [{acc['lo']:+.2f}, "
                     f"{acc['hi']:+.2f}]: {acc['result']}")
    for col, claim, sign in DYNAMICS:
        h = dynamics_half(windows, col, sign)
        halves.append(h["result"])
        if h["result"] != "not run":
            parts.append(f"{claim}: {col} {h['aligned']:.3f} vs {h['unaligned']:.3f}, "
                         f"{h['on_side']}/{h['windows']} windows on the claimed side: "
                         f"{h['result']}")
    if collapsed:
        parts.append("collapsed: " + " ".join(collapsed))
    seeds = int(items.seed.nunique()) if len(items) else 0
    return parts, phenomenon_status(halves), seeds


def content_claims(windows: pd.DataFrame, items: pd.DataFrame) -> tuple[str, str]:
    """Row 17's ``(ours, reproduced)`` from the committed content tables."""
    if not len(items) and not len(windows):
        return "no content runs yet (python -m opd_diag.zoo.validate --only success)", "not run"
    parts, status, seeds = content_result(windows, items, "5d accuracy")
    ours = (f"success pair, 100 steps, {seeds} OPD seeds; teacher-a's own content (2 operands) "
            "vs unseen content (3 operands): " + "; ".join(parts))
    return ours, status


def apply_content(df: pd.DataFrame, windows: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """The phenomena table with row 17 from the content tables."""
    out = df.copy()
    ours, status = content_claims(windows, items)
    i = out.index[out.id == 17]
    out.loc[i, "phenomenon"] = ("content alignment: better accuracy, lower overlap, higher "
                                "overlap mass, lower entropy")
    out.loc[i, "ours"] = ours
    out.loc[i, "reproduced"] = status
    return out
