"""Measured OPD outcomes of the zoo-v2 pairs: one fixed budget, several seeds, bootstrap CIs.

Protocol (issue 14's, applied to the held-out pairs): every pair gets the same OPD run
(:data:`BUDGET`: objective, steps, batch, lr) with ``seeds`` OPD seeds, through the same
:func:`opd_diag.train.loop.train` a user calls. The student before OPD, every final student and
the teacher are scored greedily on one fixed eval set (``n_eval`` items per subset); the outcome
metric is the gap recovery on the pair's main subset,

    recovery = (mean over seeds of acc_after - acc_before) / (acc_teacher - acc_before),

with a 95 % percentile-bootstrap CI that resamples eval items (the same items for before, after
and teacher). ``worked`` when the CI lies above ``cut``, ``failed`` when it lies below, else
``undetermined``. For ``v2-reverse`` the teacher is the weaker base, so "recovery" is the share of
the post-training gain lost toward it. Per-item results are kept in each run directory
(``v2_eval.parquet``), so the table can be recomputed with another cut without re-running.

Nothing here runs a pre-flight: the held-out pre-flight is run once, with frozen thresholds.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from .registry import SUBSET_MAIN, get_pair, list_pairs, model_dir

#: the one OPD budget every v2 pair gets: the zoo's OPD learning rate (``OPDHyper.lr``), 40 steps
#: of 8 prompts x 4 samples (what a shared 2-core box allowed; docs/zoo.md). A first attempt at
#: lr 1e-3 / 20 steps collapsed even v2-success (mid-length accuracy 0.80 -> 0.39), so it was
#: dropped before any other pair was measured.
BUDGET = {"objective": "reverse_kl", "steps": 40, "batch_prompts": 8, "n_samples": 4,
          "lr": 3e-4, "schedule": "constant", "warmup_steps": 0, "temperature": 1.0}
CUT = 0.5
N_BOOT = 2000


def _main_subset(pair) -> str:
    if pair.main_subset:
        return pair.main_subset
    return SUBSET_MAIN if SUBSET_MAIN in pair.subsets else pair.subsets[-1]


def score(model_path: str | Path, pair, n_eval: int) -> pd.DataFrame:
    """Greedy per-item correctness of a model directory on the pair's eval set."""
    import torch

    from ...tasks import get_task
    from ..evaluate import generate_greedy, load

    torch.set_num_threads(1)
    evals = pair.eval_sets(n_eval)
    model, tok = load(model_path)
    texts = generate_greedy(model, tok, list(evals.prompt), max_new_tokens=pair.hyper.max_new_tokens)
    task = get_task(pair.task)
    return evals.assign(completion=texts,
                        correct=[task.check(t, a) for t, a in zip(texts, evals.answer)])


def _baseline(root: Path, pair_name: str, role: str, n_eval: int) -> pd.DataFrame:
    pair = get_pair(pair_name)
    name = pair.student if role == "student" else pair.teacher
    path = root / "baselines" / f"{name}-{pair.template}-{'-'.join(pair.subsets)}-{n_eval}.parquet"
    if path.is_file():
        return pd.read_parquet(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df = score(model_dir(name), pair, n_eval)
    df.to_parquet(path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)
    return df


def run_one(root: str | Path, pair_name: str, seed: int, n_eval: int) -> Path:
    """One OPD run of ``pair_name`` at ``seed`` (reused when complete) and its per-item eval."""
    import torch

    from ...core.models import load_pair
    from ...core.prompts import validate_prompts
    from ...train.checkpoint import list_checkpoints
    from ...train.config import resolve_config
    from ...train.loop import train

    torch.set_num_threads(1)
    root = Path(root)
    out = root / f"{pair_name}-seed{seed}"
    result = out / "v2_eval.parquet"
    if result.is_file():
        return out
    pair = get_pair(pair_name)
    loaded = load_pair(model_dir(pair.student), model_dir(pair.teacher))
    cfg = resolve_config(preset="cpu-zoo", overrides={
        **BUDGET, "seed": seed, "eval_every": 0, "ckpt_every": 0, "keep_checkpoints": 1,
        "states_every": 10, "checker": f"task:{pair.task}",
        "max_new_tokens": pair.hyper.max_new_tokens})
    train(loaded, validate_prompts(pair.prompts(1024)), out, cfg, overwrite=True, progress=False,
          extra_meta={"zoo_v2_validation": {"pair": pair_name, "seed": seed}})
    final = list_checkpoints(out)[-1]
    df = score(final, pair, n_eval)
    df.to_parquet(out / "v2_eval.tmp")
    (out / "v2_eval.tmp").replace(result)
    return out


def bootstrap_recovery(before: np.ndarray, after_S_N: np.ndarray, teacher: np.ndarray,
                       n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float, float]:
    """Point gap recovery and its 95 % percentile-bootstrap CI over eval items.

    ``before``/``teacher``: (N,) correctness; ``after_S_N``: (seeds, N). Items are resampled
    jointly for all three, so the CI is paired. Returns NaNs when the gap is 0.
    """
    def rec(idx):
        b, t = before[idx].mean(), teacher[idx].mean()
        a = after_S_N[:, idx].mean()
        return (a - b) / (t - b) if abs(t - b) > 1e-12 else np.nan

    n = len(before)
    point = rec(np.arange(n))
    rng = np.random.default_rng(seed)
    boots = np.array([rec(rng.integers(0, n, n)) for _ in range(n_boot)])
    boots = boots[np.isfinite(boots)]
    if not np.isfinite(point) or len(boots) < n_boot // 2:
        return float(point), float("nan"), float("nan")
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return float(point), float(lo), float(hi)


def outcome(lo: float, hi: float, cut: float = CUT) -> str:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "undetermined"
    return "worked" if lo > cut else "failed" if hi < cut else "undetermined"


def summarize(root: str | Path, n_eval: int, cut: float = CUT) -> pd.DataFrame:
    """One row per pair with every complete seed under ``root``."""
    root = Path(root)
    rows = []
    for pair in list_pairs():
        runs = sorted(root.glob(f"{pair.name}-seed*/v2_eval.parquet"))
        if not runs:
            continue
        main = _main_subset(pair)
        before = _baseline(root, pair.name, "student", n_eval)
        teacher = _baseline(root, pair.name, "teacher", n_eval)
        afters = [pd.read_parquet(p) for p in runs]
        m = (before.subset == main).to_numpy()
        after_S_N = np.stack([a.correct.to_numpy()[m] for a in afters]).astype(float)
        point, lo, hi = bootstrap_recovery(before.correct.to_numpy()[m].astype(float), after_S_N,
                                           teacher.correct.to_numpy()[m].astype(float))
        seeds = [int(p.parent.name.rsplit("seed", 1)[1]) for p in runs]
        row = {"pair": pair.name, "student": pair.student, "teacher": pair.teacher,
               "template": pair.template, "main_subset": main, "n_eval_main": int(m.sum()),
               "seeds": " ".join(map(str, seeds)), "n_seeds": len(seeds),
               **{f"budget_{k}": v for k, v in BUDGET.items()}}
        for sub in pair.subsets:
            s = (before.subset == sub).to_numpy()
            row[f"acc_before/{sub}"] = float(before.correct[s].mean())
            row[f"acc_teacher/{sub}"] = float(teacher.correct[s].mean())
            row[f"acc_after/{sub}"] = float(np.mean([a.correct[s].mean() for a in afters]))
        per_seed = [(a.correct.to_numpy()[m].mean() - row[f"acc_before/{main}"])
                    / (row[f"acc_teacher/{main}"] - row[f"acc_before/{main}"])
                    if abs(row[f"acc_teacher/{main}"] - row[f"acc_before/{main}"]) > 1e-12
                    else np.nan for a in afters]
        row.update({"recovery": point, "recovery_ci_low": lo, "recovery_ci_high": hi,
                    "recovery_per_seed": " ".join(f"{r:.3f}" for r in per_seed), "cut": cut,
                    "outcome": outcome(lo, hi, cut)})
        rows.append(row)
    return pd.DataFrame(rows)


def validate(root: str | Path = "runs/zoo-v2", seeds: tuple[int, ...] = (0, 1, 2),
             pairs: list[str] | None = None, n_eval: int = 100, workers: int = 2,
             cut: float = CUT) -> pd.DataFrame:
    """Run every (pair, seed) OPD run (``workers`` processes, one thread each) and summarise."""
    root = Path(root)
    names = pairs or [p.name for p in list_pairs()]
    for n in names:
        get_pair(n)  # unknown names fail before any work
    jobs = [(n, s) for s in seeds for n in names]  # seed-major: every pair gets seed 0 first
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futs = [pool.submit(run_one, root, n, s, n_eval) for n, s in jobs]
        for f in futs:
            print(f"[zoo-v2 validate] done: {f.result()}", flush=True)
    return summarize(root, n_eval, cut)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", default="runs/zoo-v2")
    ap.add_argument("--pairs", nargs="*")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--n-eval", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cut", type=float, default=CUT)
    ap.add_argument("--out", default="reports/zoo-v2-validation.csv")
    ap.add_argument("--summarize-only", action="store_true")
    args = ap.parse_args(argv)
    if args.summarize_only:
        df = summarize(args.runs, args.n_eval, args.cut)
    else:
        df = validate(args.runs, tuple(args.seeds), args.pairs, args.n_eval, args.workers, args.cut)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, index=False)
    print(df.T.to_string())
    print(json.dumps({"written": args.out, "rows": len(df)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
