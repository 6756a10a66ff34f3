"""Measured OPD outcomes of the zoo-v2 pairs: one fixed budget, several seeds, bootstrap CIs.

Protocol (issue 14's, applied to the held-out pairs): every pair gets the same OPD run
(:data:`BUDGET`: objective, steps, batch, lr) with ``seeds`` OPD seeds, through the same
:func:`opd_diag.train.loop.train` a user calls. The student before OPD, every final student and
the teacher are scored greedily on one fixed eval set (``n_eval`` items per subset); the outcome
metric is the gap recovery on the pair's main subset,

    recovery = (mean over seeds of acc_after - acc_before) / (acc_teacher - acc_before),

with a 95 % percentile-bootstrap CI that resamples eval items (the same items for before, after
and teacher), classified by the protocol's one rule (:mod:`opd_diag.zoo.outcomes`: ``worked``
when the CI's lower end is >= 0.5, ``failed`` when its upper end is < 0.2 or the teacher is not
ahead by > 0.05, else ``undetermined``; fewer than 3 seeds is ``undetermined``). For
``v2-reverse`` the teacher is the weaker base, so the outcome is ``failed`` by that rule (nothing
to gain) and "recovery" is the share of the post-training gain lost toward it. Per-item results
are kept in each run directory (``v2_eval.parquet``) and committed as
``reports/zoo-v2-eval-items.csv``, from which the outcome table is re-derived (and tested).

Nothing here runs a pre-flight: the held-out pre-flight is run once, with frozen thresholds.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..outcomes import bootstrap_recovery, classify
from .registry import SUBSET_MAIN, get_pair, list_pairs, model_dir

#: the one OPD budget every v2 pair gets: the zoo's OPD learning rate (``OPDHyper.lr``), 100 steps
#: of 8 prompts x 4 samples (what a 2-core box allows for 7 pairs x 3 seeds in one session;
#: docs/zoo.md). History, all on the positive control ``v2-success`` only: lr 1e-3 / 20 steps
#: collapsed it (mid 0.80 -> 0.39); 40 steps at 3e-4 did not move ``hard`` (recovery 0.03); a
#: 150-step seed-0 pilot at 3e-4 gave hard-subset recovery -0.03 / 0.10 at steps 30 / 60. The
#: budget is the instrument, not a threshold: no verdict line was touched.
BUDGET = {"objective": "reverse_kl", "steps": 100, "batch_prompts": 8, "n_samples": 4,
          "lr": 3e-4, "schedule": "constant", "warmup_steps": 0, "temperature": 1.0}


def _main_subset(pair) -> str:
    if pair.main_subset:
        return pair.main_subset
    return SUBSET_MAIN if SUBSET_MAIN in pair.subsets else pair.subsets[-1]


def seed_of(run_dir: Path) -> int:
    """The OPD seed in a run directory's name (``...-seed{s}``)."""
    return int(Path(run_dir).name.rsplit("seed", 1)[1])


def subset_correct(result: Path, subset: str) -> np.ndarray:
    """0/1 per item of ``subset`` in a run's ``v2_eval.parquet``, in eval order."""
    ev = pd.read_parquet(result)
    return ev[ev.subset == subset].correct.astype(int).to_numpy()


def run_jobs(root: str | Path, n_eval: int, workers: int, jobs: list[tuple[str, int, dict]]
             ) -> list[Path]:
    """:func:`run_one` for each ``(pair, seed, keyword arguments)`` in ``workers`` processes
    (one thread each; complete runs are reused); the run directories, in ``jobs`` order."""
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futs = [pool.submit(run_one, root, pair, seed, n_eval, **kw) for pair, seed, kw in jobs]
        done = []
        for f in futs:
            done.append(f.result())
            print(f"[zoo-v2 validate] done: {done[-1]}", flush=True)
    return done


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


def _baseline(root: Path, pair_name: str, role: str, n_eval: int,
              teacher: str | None = None) -> pd.DataFrame:
    pair = get_pair(pair_name)
    name = pair.student if role == "student" else (teacher or pair.teacher)
    return _score_cached(root, name, model_dir(name), pair, n_eval)


def run_one(root: str | Path, pair_name: str, seed: int, n_eval: int,
            overrides: dict | None = None, tag: str = "", teacher: str | None = None,
            coldstart: bool = False, content: str | None = None) -> Path:
    """One OPD run of ``pair_name`` at ``seed`` (reused when complete) and its per-item eval.

    ``overrides`` change the budget for a sweep (:mod:`.sweep`); ``teacher`` distils the pair's
    student from another zoo-v2 model, ``coldstart`` distils the student cold-started on the
    teacher's rollouts (:data:`EXTRA_RUNS`), ``content`` draws the OPD prompts from a content
    pool (:func:`opd_diag.zoo.data.v2_content_prompts`). Such a run is named
    ``{pair}-{tag}-seed{seed}`` so it never counts as a protocol run of the pair."""
    import torch

    from ...core.models import load_pair
    from ...core.prompts import validate_prompts
    from ...train.checkpoint import list_checkpoints
    from ...train.config import resolve_config
    from ...train.loop import train

    torch.set_num_threads(1)
    root = Path(root)
    if (overrides or teacher or coldstart or content) and not tag:
        raise ValueError("a run with budget overrides, another teacher, a cold start or a "
                         "content pool needs a tag")
    out = root / (f"{pair_name}-{tag}-seed{seed}" if tag else f"{pair_name}-seed{seed}")
    result = out / "v2_eval.parquet"
    if result.is_file():
        return out
    pair = get_pair(pair_name)
    if teacher is not None:
        pair = replace(pair, teacher=teacher)
    student = coldstart_student(root, pair_name) if coldstart else model_dir(pair.student)
    loaded = load_pair(student, model_dir(pair.teacher))
    cfg = resolve_config(preset="cpu-zoo", overrides={
        **BUDGET, "seed": seed, "eval_every": 0, "ckpt_every": 0, "keep_checkpoints": 1,
        "states_every": 10, "checker": f"task:{pair.task}",
        "max_new_tokens": pair.hyper.max_new_tokens, **(overrides or {})})
    if content is None:
        prompts = pair.prompts(1024)
    else:
        from ..data import v2_content_prompts

        prompts = v2_content_prompts(pair, content, 1024)
    train(loaded, validate_prompts(prompts), out, cfg, overwrite=True, progress=False,
          extra_meta={"zoo_v2_validation": {"pair": pair_name, "seed": seed, "tag": tag,
                                            "teacher": pair.teacher, "coldstart": coldstart,
                                            "content": content, "overrides": overrides or {}}})
    final = list_checkpoints(out)[-1]
    df = score(final, pair, n_eval)
    df.to_parquet(out / "v2_eval.tmp")
    (out / "v2_eval.tmp").replace(result)
    return out


@dataclass(frozen=True)
class ExtraRun:
    """A pair's protocol run with one twist a claim's design needs: another teacher, or the
    student cold-started on the teacher's rollouts first. Named ``{pair}-{tag}-seed{s}``, so it
    never counts as the pair's protocol run."""

    pair: str
    tag: str
    teacher: str | None = None
    coldstart: bool = False

    @property
    def label(self) -> str:
        """How tables name its runs (``{pair}+{tag}``)."""
        return f"{self.pair}+{self.tag}"

    @property
    def glob(self) -> str:
        """Its run directories under a runs root (:func:`run_one` with ``tag``)."""
        return f"{self.pair}-{self.tag}-seed*"


#: each pair's ``alt_teachers`` (phenomenon #10's second teacher: the post-RL student toward a
#: same-pipeline base trained longer, besides ``v2-reverse``'s pre-RL base) and #15's cold
#: start (``v2-incompatible``'s student SFT-ed on v2-teacher-b's rollouts, then the same OPD):
#: both run with the protocol budget and seeds after the 21 protocol runs; per-item results in
#: ``reports/zoo-v2-extra-items.csv``
EXTRA_RUNS = (*(ExtraRun(p.name, f"teacher-{t}", teacher=t) for p in list_pairs()
                for t in p.alt_teachers),
              ExtraRun("v2-incompatible", "coldstart", coldstart=True))


def coldstart_dir(root: str | Path, pair_name: str) -> Path:
    return Path(root) / "students" / f"{pair_name}-coldstart"


def coldstart_student(root: str | Path, pair_name: str) -> Path:
    """The pair's student after ``opd-diag coldstart`` on its teacher's rollouts (reused when
    built): zoo v1's recipe (4,096 prompts, 3 epochs, lr 1e-3, batch 32; 1,024 x 2 epochs left
    the v1 student between two styles), on the pair's own OPD prompts."""
    import torch

    from ...core.models import load_pair
    from ...core.prompts import validate_prompts
    from ...train.recovery import ColdStartConfig, coldstart

    torch.set_num_threads(1)
    out = coldstart_dir(root, pair_name)
    if (out / "coldstart.json").is_file():
        return out
    pair = get_pair(pair_name)
    loaded = load_pair(model_dir(pair.student), model_dir(pair.teacher))
    cfg = ColdStartConfig(n_samples=1, max_new_tokens=pair.hyper.max_new_tokens,
                          checker=f"task:{pair.task}", epochs=3, lr=1e-3, batch_size=32)
    coldstart(loaded, validate_prompts(pair.prompts(4096, seed=7)), out, cfg, overwrite=True)
    return out


def _score_cached(root: Path, key: str, model_path: Path, pair, n_eval: int) -> pd.DataFrame:
    """:func:`score`, cached under ``root/baselines`` by ``key`` (written atomically)."""
    path = root / "baselines" / f"{key}-{pair.template}-{'-'.join(pair.subsets)}-{n_eval}.parquet"
    if path.is_file():
        return pd.read_parquet(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df = score(model_path, pair, n_eval)
    df.to_parquet(path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)
    return df


EXTRA_COLUMNS = ["pair", "run", "teacher", "role", "seed", "subset", "item", "correct"]


def extra_items(root: str | Path, n_eval: int = 100) -> pd.DataFrame:
    """Per-item greedy correctness of every complete :data:`EXTRA_RUNS` run under ``root``: one
    row per (pair, run tag, teacher, role, seed, subset, item), role ``after`` (per OPD seed),
    ``teacher`` (seed -1) and, for a cold start, ``before`` (the cold-started student, seed -1;
    the pair's own student is :func:`eval_items`' ``before``)."""
    root = Path(root)
    frames = []
    for x in EXTRA_RUNS:
        runs = sorted(root.glob(f"{x.glob}/v2_eval.parquet"))
        if not runs:
            continue
        pair = get_pair(x.pair)
        teacher = x.teacher or pair.teacher
        parts = [("teacher", -1, _baseline(root, x.pair, "teacher", n_eval, teacher=teacher))]
        if x.coldstart:
            parts.append(("before", -1, _score_cached(root, f"{x.pair}-coldstart",
                                                      coldstart_dir(root, x.pair), pair, n_eval)))
        parts += [("after", seed_of(p.parent), pd.read_parquet(p))
                  for p in runs]
        for role, seed, df in parts:
            frames.append(pd.DataFrame({
                "pair": x.pair, "run": x.tag, "teacher": teacher, "role": role, "seed": seed,
                "subset": df.subset.to_numpy(), "item": np.arange(len(df)),
                "correct": df.correct.astype(int).to_numpy()}))
    return (pd.concat(frames, ignore_index=True) if frames
            else pd.DataFrame(columns=EXTRA_COLUMNS))


def extra_outcomes(extra: pd.DataFrame) -> pd.DataFrame:
    """Outcome rows (:func:`summarize_items`' columns, ``pair`` = ``{pair}+{tag}``) of the extra
    runs with a student of their own: a cold start is scored against the cold-started student
    (its ``before``), its pair's teacher and its OPD seeds, by the protocol's one rule. Pure: the
    held-out pre-flight validation derives the cold start's outcome from the committed tables."""
    rows = []
    for (pair, tag), g in extra.groupby(["pair", "run"], sort=False):
        if not (g.role == "before").any():
            continue  # same student as the pair: its outcome is not a recovery of its own
        parts = g[g.role.isin(["before", "teacher", "after"])][
            ["role", "seed", "subset", "item", "correct"]].assign(pair=pair)
        out = summarize_items(parts).assign(pair=f"{pair}+{tag}", student=f"{pair}-{tag}")
        rows.append(out)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def run_extra(root: str | Path = "runs/zoo-v2", seeds: tuple[int, ...] = (0, 1, 2),
              n_eval: int = 100, workers: int = 2) -> pd.DataFrame:
    """Every :data:`EXTRA_RUNS` run (protocol budget, ``seeds``; cold starts built first, so
    no two runs race to build one) and their item table."""
    for x in EXTRA_RUNS:
        if x.coldstart:
            coldstart_student(root, x.pair)
    run_jobs(root, n_eval, workers, [
        (x.pair, s, {"tag": x.tag, "teacher": x.teacher, "coldstart": x.coldstart})
        for s in seeds for x in EXTRA_RUNS])
    return extra_items(root, n_eval)


def eval_items(root: str | Path, n_eval: int) -> pd.DataFrame:
    """Per-item greedy correctness of every complete run under ``root``: one row per (pair, role,
    seed, item) with role ``before`` (the student), ``teacher`` or ``after`` (seed = the OPD
    seed; -1 for the baselines). This is what the outcome table is derived from, and what
    ``reports/zoo-v2-eval-items.csv`` commits."""
    root = Path(root)
    frames = []
    for pair in list_pairs():
        runs = sorted(root.glob(f"{pair.name}-seed*/v2_eval.parquet"))
        if not runs:
            continue
        parts = [("before", -1, _baseline(root, pair.name, "student", n_eval)),
                 ("teacher", -1, _baseline(root, pair.name, "teacher", n_eval))]
        parts += [("after", seed_of(p.parent), pd.read_parquet(p))
                  for p in runs]
        for role, seed, df in parts:
            frames.append(pd.DataFrame({"pair": pair.name, "role": role, "seed": seed,
                                        "subset": df.subset.to_numpy(),
                                        "item": np.arange(len(df)),
                                        "correct": df.correct.astype(int).to_numpy()}))
    cols = ["pair", "role", "seed", "subset", "item", "correct"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


def summarize_items(items: pd.DataFrame) -> pd.DataFrame:
    """One outcome row per pair from :func:`eval_items`' table (the protocol's rule,
    :mod:`opd_diag.zoo.outcomes`); pure, so a test can re-derive the committed table."""
    rows = []
    for name, g in items.groupby("pair", sort=False):
        pair = get_pair(name)
        main = _main_subset(pair)

        def acc(role, sub, seed=None, g=g):
            sel = g[(g.role == role) & (g.subset == sub)]
            return sel if seed is None else sel[sel.seed == seed]

        seeds = sorted(int(s) for s in g[g.role == "after"].seed.unique())
        before = acc("before", main).sort_values("item").correct.to_numpy()
        teacher = acc("teacher", main).sort_values("item").correct.to_numpy()
        after_S_N = np.stack([acc("after", main, s).sort_values("item").correct.to_numpy()
                              for s in seeds])
        point, lo, hi = bootstrap_recovery(before, after_S_N, teacher)
        row = {"pair": name, "student": pair.student, "teacher": pair.teacher,
               "template": pair.template, "main_subset": main, "n_eval_main": len(before),
               "seeds": " ".join(map(str, seeds)), "n_seeds": len(seeds),
               **{f"budget_{k}": v for k, v in BUDGET.items()}}
        for sub in pair.subsets:
            row[f"acc_before/{sub}"] = float(acc("before", sub).correct.mean())
            row[f"acc_teacher/{sub}"] = float(acc("teacher", sub).correct.mean())
            row[f"acc_after/{sub}"] = float(acc("after", sub).correct.mean())
        gap = row[f"acc_teacher/{main}"] - row[f"acc_before/{main}"]
        per_seed = [(r.mean() - before.mean()) / gap if abs(gap) > 1e-12 else np.nan
                    for r in after_S_N]
        row.update({"gap": gap, "recovery": point, "recovery_ci_low": lo, "recovery_ci_high": hi,
                    "recovery_per_seed": " ".join(f"{r:.3f}" for r in per_seed),
                    **classify(lo, hi, gap, len(seeds))})
        rows.append(row)
    return pd.DataFrame(rows)


def summarize(root: str | Path, n_eval: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(outcomes, items)`` for every complete seed under ``root``."""
    items = eval_items(root, n_eval)
    return summarize_items(items), items


def validate(root: str | Path = "runs/zoo-v2", seeds: tuple[int, ...] = (0, 1, 2),
             pairs: list[str] | None = None, n_eval: int = 100,
             workers: int = 2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run every (pair, seed) OPD run (``workers`` processes, one thread each) and summarise."""
    root = Path(root)
    names = pairs or [p.name for p in list_pairs()]
    for n in names:
        get_pair(n)  # unknown names fail before any work
    # seed-major: every pair gets seed 0 first
    run_jobs(root, n_eval, workers, [(n, s, {}) for s in seeds for n in names])
    return summarize(root, n_eval)


#: the held-out teacher-ranking check (``opd-diag rank-teachers --pair v2-success``): each
#: candidate teacher of v2-student-partial -> the protocol pair that distilled it into that student
RANK_PAIRS = {"v2-teacher-a": "v2-success", "v2-student-partial-long": "v2-no-novelty",
              "v2-teacher-b": "v2-incompatible"}


def rank_outcomes(items: pd.DataFrame, subset: str = "hard") -> pd.DataFrame:
    """The ``opd-diag rank-check`` outcomes table of the v2 ranking: per candidate teacher, the
    distilled student's per-item correctness on ``subset`` (every OPD seed), from the protocol's
    per-item table (``reports/zoo-v2-eval-items.csv``)."""
    after = items[(items.role == "after") & (items.subset == subset)
                  & items.pair.isin(list(RANK_PAIRS.values()))]
    teacher = {v: k for k, v in RANK_PAIRS.items()}
    return pd.DataFrame({"teacher": after.pair.map(teacher), "seed": after.seed,
                         "item": after["item"], "correct": after.correct}).reset_index(drop=True)


#: the ranking check where OPD works (docs/validation.md's "next held-out experiment"):
#: ``opd-diag rank-teachers --pair v2-long-horizon`` over the same three teachers, each distilled
#: into v2-student-partial on v2-long-horizon's prompts at the protocol budget and seeds.
#: v2-teacher-a is the pair's own teacher (its outcome is the protocol runs'); the others run as
#: ``v2-long-horizon-teacher-{name}-seed{s}``
RANK_LONG_PAIR = "v2-long-horizon"
RANK_LONG_TEACHERS = ("v2-teacher-a", "v2-student-partial-long", "v2-teacher-b")


def _rank_long_tag(teacher: str) -> str:
    return f"teacher-{teacher}"


def run_rank_long(root: str | Path = "runs/zoo-v2", seeds: tuple[int, ...] = (0, 1, 2),
                  n_eval: int = 100, workers: int = 2) -> list[Path]:
    """The OPD runs of the other candidate teachers on :data:`RANK_LONG_PAIR` (complete runs
    are reused); the pair's own teacher is its protocol run (:func:`validate`)."""
    pair = get_pair(RANK_LONG_PAIR)
    return run_jobs(root, n_eval, workers, [
        (RANK_LONG_PAIR, s, {"tag": _rank_long_tag(t), "teacher": t})
        for s in seeds for t in RANK_LONG_TEACHERS if t != pair.teacher])


def rank_long_outcomes(items: pd.DataFrame, root: str | Path, subset: str = "hard"
                       ) -> pd.DataFrame:
    """The ``opd-diag rank-check`` outcomes table of the v2-long-horizon ranking: the pair's own
    teacher from the protocol's per-item table (``items``: ``reports/zoo-v2-eval-items.csv``),
    the other candidates from their runs under ``root`` (every OPD seed, ``subset`` items)."""
    pair = get_pair(RANK_LONG_PAIR)
    own = items[(items.pair == RANK_LONG_PAIR) & (items.role == "after")
                & (items.subset == subset)]
    frames = [pd.DataFrame({"teacher": pair.teacher, "seed": own.seed, "item": own["item"],
                            "correct": own.correct})]
    for t in RANK_LONG_TEACHERS:
        if t == pair.teacher:
            continue
        for path in sorted(Path(root).glob(f"{RANK_LONG_PAIR}-{_rank_long_tag(t)}-seed*/"
                                           "v2_eval.parquet")):
            correct = subset_correct(path, subset)
            frames.append(pd.DataFrame({"teacher": t, "seed": seed_of(path.parent),
                                        "item": np.arange(len(correct)), "correct": correct}))
    return pd.concat(frames, ignore_index=True).reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", default="runs/zoo-v2")
    ap.add_argument("--pairs", nargs="*")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--n-eval", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="reports/zoo-v2-validation.csv")
    ap.add_argument("--items", default="reports/zoo-v2-eval-items.csv",
                    help="per-item correctness the outcomes are derived from (committed)")
    ap.add_argument("--extra-runs", action="store_true",
                    help="also the EXTRA_RUNS (phenomenon #10's second teacher, #15's cold "
                    "start) with the same budget and seeds")
    ap.add_argument("--extra-items", default="reports/zoo-v2-extra-items.csv",
                    help="per-item correctness of the extra runs (committed)")
    ap.add_argument("--summarize-only", action="store_true")
    args = ap.parse_args(argv)
    if args.summarize_only:
        df, items = summarize(args.runs, args.n_eval)
    else:
        df, items = validate(args.runs, tuple(args.seeds), args.pairs, args.n_eval, args.workers)
    tables = [(args.out, df), (args.items, items)]
    if args.extra_runs:
        if not args.summarize_only:
            run_extra(args.runs, tuple(args.seeds), args.n_eval, args.workers)
        tables.append((args.extra_items, extra_items(args.runs, args.n_eval)))
    for path, table in tables:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(f"{path}.tmp", index=False)
        Path(f"{path}.tmp").replace(path)
    print(df.T.to_string())
    print(json.dumps({"written": args.out, "rows": len(df)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
