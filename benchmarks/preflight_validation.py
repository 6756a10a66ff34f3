"""Pre-flight on every zoo pair vs the pair's measured OPD outcome (issue: probes + preflight).

For each pair: ``opd-diag preflight --pair NAME`` (default budget, timed), its verdict and
components, joined with the outcome measured by real OPD runs (the committed
``reports/zoo-validation.csv``, with runs re-done under ``--runs`` by ``python -m
opd_diag.zoo.validate`` replacing theirs).
Agreement rule: a pair whose OPD run closes ≥ 50% of a real 5-digit gap must get GO; a pair
whose run closes < 20% of it, regresses, or has no gap to close must get NO-GO or CAUTION.
When ``python -m opd_diag.zoo.validate`` has built the cold-started student of ``incompatible``
(under ``--runs``/students), it is pre-flighted too, as a user's own models, against its own
OPD run: the recommended recovery, checked. ``--seeds`` repeats every pre-flight with other
sampling seeds: a verdict that flips with the seed is not one to gate a training script on.
``--rejudge`` re-joins the OPD outcomes onto the existing table without running pre-flights.
Writes ``reports/preflight-validation.csv`` (one row per pair and seed) and ``.md``.

    python benchmarks/preflight_validation.py [--pair-set zoo-v1 | PAIRS.json] [--split in-sample |
        held-out] [--outcomes CSV] [--runs runs/examples] [--out reports] [--seeds 0 1 2] [--reuse]

The protocol (fixed OPD budget, >= 3 OPD seeds, bootstrap CI over eval items, worked / failed /
undetermined, strict agreement, frozen ``Thresholds.version``, leave-one-pair-out, margins) is
docs/validation.md. ``--reuse`` re-judges existing pre-flight run directories under ``--runs``
with the current thresholds (probes re-run on the stored generations; no sampling).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from opd_diag.zoo.outcomes import agrees, classify

# pair -> the OPD run whose outcome the verdict predicts (reverse-KL with the pair's own setup)
OUTCOME_RUN = {"success": "opd-success", "out-of-reach": "opd-out-of-reach",
               "incompatible": "opd-incompatible", "no-novelty": "opd-no-novelty",
               "reverse": "opd-reverse", "template": "opd-template-misaligned",
               "incompatible+coldstart": "opd-incompatible-coldstart"}
# the recommended recovery, checked too: the incompatible pair's student after `coldstart` on
# teacher-b (built by `python -m opd_diag.zoo.validate`), pre-flighted as a user's own models
COLDSTART = ("incompatible+coldstart", "incompatible")
NOVELTY = ("novelty_ci_low", "novelty_ci_high", "n_prompts", "n_frontier_prompts",
           "acc_teacher_frontier", "acc_student_frontier")


N_EVAL_DEFAULT = 100  # 5-digit eval items per OPD run when the CSV does not say (zoo: 100)
OUTCOME_COLS = ("opd_run", "outcome_subset", "acc_before", "acc_after", "acc_teacher",
                "gap_recovery", "gap_recovery_ci_low", "gap_recovery_ci_high", "opd_seeds",
                "outcome", "outcome_provisional", "outcome_note", "agreement",
                "agreement_provisional")


def _acc_draws(acc: float, n: int, rng, n_boot: int) -> np.ndarray:
    """Bootstrap draws of an accuracy over ``n`` eval items (a resample of n 0/1 items has a
    Binomial(n, acc) count: the item bootstrap of a binary vector needs only its mean)."""
    return rng.binomial(n, acc, n_boot) / n


def outcome(o: pd.DataFrame | pd.Series, seed: int = 0, n_boot: int = 4000) -> dict:
    """A zoo-v1 OPD outcome from one or more seeds of a run (docs/validation.md): 5-digit gap
    recovery with a 95% bootstrap CI over eval items (and seeds), classified by the protocol's
    rule (:func:`opd_diag.zoo.outcomes.classify`)."""
    o = o.to_frame().T if isinstance(o, pd.Series) else o
    rng = np.random.default_rng(seed)
    n = o["n_eval/5d"].astype(int) if "n_eval/5d" in o else pd.Series(N_EVAL_DEFAULT, o.index)
    before, after, teacher = (o[f"acc_{k}/5d"].astype(float) for k in ("before", "after", "teacher"))
    gap = float((teacher - before).mean())
    draws = []
    for i in range(len(o)):
        b = _acc_draws(before.iloc[i], n.iloc[i], rng, n_boot)
        a = _acc_draws(after.iloc[i], n.iloc[i], rng, n_boot)
        t = _acc_draws(teacher.iloc[i], n.iloc[i], rng, n_boot)
        with np.errstate(divide="ignore", invalid="ignore"):
            draws.append((a - b) / np.where(t - b > 0, t - b, np.nan))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no gap to recover: NaN draws
        rec = np.nanmean(np.stack(draws), axis=0)
        lo, hi = (float(x) for x in np.nanquantile(rec, [0.025, 0.975]))
    point = float(((after - before) / (teacher - before)).mean())
    n_seeds = int(o["seed"].nunique()) if "seed" in o else len(o)
    return {"outcome_subset": "5d", "acc_before": float(before.mean()),
            "acc_after": float(after.mean()), "acc_teacher": float(teacher.mean()),
            "gap_recovery": point, "gap_recovery_ci_low": lo, "gap_recovery_ci_high": hi,
            "opd_seeds": n_seeds, **classify(lo, hi, gap, n_seeds)}


def outcome_items(row: pd.Series) -> dict:
    """A zoo-v2 outcome row (``reports/zoo-v2-validation.csv``, derived from per-item
    correctness by ``opd_diag.zoo.v2.validate.summarize_items``) in the same keys."""
    main = row["main_subset"]
    lo, hi = float(row["recovery_ci_low"]), float(row["recovery_ci_high"])
    return {"outcome_subset": main, "acc_before": float(row[f"acc_before/{main}"]),
            "acc_after": float(row[f"acc_after/{main}"]),
            "acc_teacher": float(row[f"acc_teacher/{main}"]),
            "gap_recovery": float(row["recovery"]), "gap_recovery_ci_low": lo,
            "gap_recovery_ci_high": hi, "opd_seeds": int(row["n_seeds"]),
            **classify(lo, hi, float(row["gap"]), int(row["n_seeds"]))}


def judge(row: dict, outcomes: pd.DataFrame, opd_run: str | None = None) -> dict:
    """A pre-flight row with its pair's OPD outcome and whether the verdict agrees with it
    (under the protocol, and provisionally on the single-seed outcomes)."""
    row = {k: v for k, v in row.items() if k not in OUTCOME_COLS
           and not k.startswith(("acc5d_", "gap_recovery_5d"))}
    run = opd_run if isinstance(opd_run, str) else OUTCOME_RUN.get(row["pair"], row["pair"])
    if run in outcomes.index:
        row["opd_run"] = run
        row.update(outcome_items(outcomes.loc[run]) if "recovery" in outcomes
                   else outcome(outcomes.loc[[run]]))
        row["agreement"] = agrees(row["verdict"], row["outcome"])
        row["agreement_provisional"] = agrees(row["verdict"], row["outcome_provisional"])
    return row


def expected_status(condition: str, value: float, row: pd.Series, th) -> str | None:
    """The status a condition's value must have under thresholds ``th`` (None: not re-derivable
    from the table: horizon, or a condition that was not checked)."""
    if value != value or value is None:
        return None
    if condition == "answer checking":
        return "GO" if value >= th.min_extracted else "CAUTION"
    if condition == "thinking compatibility":
        return "NO-GO" if value < th.compat_nogo else "CAUTION" if value < th.compat_caution \
            else "GO"
    if condition == "template alignment":
        return "NO-GO" if value < th.template_nogo else "CAUTION" \
            if value < th.template_caution else "GO"
    if condition == "reachability":
        return "NO-GO" if value > th.unreachable_nogo else "CAUTION" \
            if value > th.unreachable_caution else "GO"
    if condition == "teacher novelty":
        lo, hi = row.get("novelty_ci_low"), row.get("novelty_ci_high")
        if lo != lo or lo is None:
            return None
        return "NO-GO" if hi <= th.novelty_margin else "GO" if lo > 0 else "CAUTION"
    if condition == "distinct teacher":
        return "CAUTION" if value < th.distinct_caution else "GO"
    if condition == "truncation":
        from opd_diag.preflight.truncation import MAX_TRUNCATED

        return "CAUTION" if value > MAX_TRUNCATED else "GO"
    return None


def check_table(df: pd.DataFrame, outcomes: pd.DataFrame | None = None) -> list[str]:
    """Every way a validation table can disagree with its own protocol: a status that does not
    follow from its value and the frozen thresholds, a verdict that does not follow from its
    statuses, an outcome or agreement that does not follow from ``outcomes`` (the OPD outcome
    table) and the verdict. Returns the problems (empty: the table is what the rules give)."""
    from opd_diag.preflight import VERDICTS, Thresholds

    th, problems = Thresholds(), []
    for _, r in df.iterrows():
        where = f"{r.pair} (seed {r.seed})"
        if r.thresholds_version != th.version:
            problems.append(f"{where}: judged under {r.thresholds_version}, not {th.version}")
        statuses = {}
        for c in CONDITIONS:
            if not isinstance(r.get(c), str):
                continue
            got = str(r[c]).split(" (")[0]
            statuses[c] = got
            want = expected_status(c, r.get(f"{c}: value", np.nan), r, th)
            if want is not None and got != want:
                problems.append(f"{where}: {c} is {got} but its value gives {want}")
            if f"{c}: value" in r and r[f"{c}: value"] == r[f"{c}: value"] and "=" in str(r[c]):
                shown = float(str(r[c]).rsplit("=", 1)[1].rstrip(")"))
                if abs(shown - float(r[f"{c}: value"])) > 6e-4:
                    problems.append(f"{where}: {c} shows {shown} but its value is "
                                    f"{r[f'{c}: value']}")
        counted = [s for s in statuses.values() if s in VERDICTS]
        verdict = max(counted, key=VERDICTS.index) if counted else "CAUTION"
        if statuses.get("truncation") == "CAUTION":
            verdict = "CAUTION"
        if r.verdict != verdict:
            problems.append(f"{where}: verdict {r.verdict} but its rows give {verdict}")
        if outcomes is not None and isinstance(r.get("opd_run"), str):
            again = judge(r.dropna().to_dict(), outcomes, r.opd_run)
            for col in ("outcome", "outcome_provisional", "agreement", "agreement_provisional",
                        "opd_seeds"):
                if str(again.get(col)) != str(r.get(col)) and not (
                        col == "opd_seeds" and float(again[col]) == float(r[col])):
                    problems.append(f"{where}: {col} is {r.get(col)} but the outcome table "
                                    f"gives {again.get(col)}")
            for col in ("gap_recovery", "gap_recovery_ci_low", "gap_recovery_ci_high"):
                if not np.isclose(float(again[col]), float(r[col]), atol=1e-6, equal_nan=True):
                    problems.append(f"{where}: {col} is {r[col]} but the outcome table gives "
                                    f"{again[col]}")
    return problems


def check_report(md: str, df: pd.DataFrame, split: str) -> list[str]:
    """The markdown report's headline counts are the table's (a hand-edited report fails)."""
    first = df[df.seed == df.seed.min()]
    judged = first.dropna(subset=["outcome"]) if "outcome" in first else first.iloc[:0]
    problems = []
    for label, col in ((f"**{split} agreement under the protocol:**", "agreement"),
                       ("**Provisional agreement**", "agreement_provisional")):
        lines = [ln for ln in md.splitlines() if ln.startswith(label)]
        if not lines or _count(judged, col) not in lines[0]:
            problems.append(f"report line {label!r} does not say {_count(judged, col)!r}")
    return problems


def redecide(pf: Path) -> dict:
    """Re-judge a stored pre-flight run with the current thresholds (probes re-run, no sampling)."""
    from opd_diag.core.runs import load_run
    from opd_diag.preflight import PreflightConfig, decide, overall
    from opd_diag.preflight.truncation import (
        GUARD_VERSION,
        truncation_row,
        verdict_with_truncation,
    )
    from opd_diag.probes import run_probe

    old = json.loads((pf / "verdict.json").read_text())
    run = load_run(pf)
    cfg = PreflightConfig(**{k: v for k, v in run.meta["preflight"].items() if k != "thresholds"})
    tables = {n: run_probe(n, run) for n in ("thinking", "reachability", "horizon", "novelty")}
    table = decide(tables["thinking"], tables["reachability"], tables["novelty"],
                   tables["horizon"], cfg.thresholds, cfg.max_new_tokens,
                   extraction=old.get("answer_extraction"))
    teacher = load_run(pf / "aux" / "teacher").rollouts if run.has_aux("teacher") else None
    trunc = truncation_row({"student": run.rollouts, "teacher": teacher}, cfg.max_new_tokens)
    table = pd.concat([table, pd.DataFrame([trunc])], ignore_index=True)
    return {"verdict": verdict_with_truncation(table, overall(table)),
            "conditions": table.to_dict(orient="records"), "seconds": old["seconds"],
            "thresholds": {"version": cfg.thresholds.version},
            "truncation": {"guard_version": GUARD_VERSION}}


def margins(df: pd.DataFrame) -> pd.DataFrame:
    """Per pair: each decided statistic, its nearest line and the signed distance (positive =
    on the side of the status it got, i.e. how far a value would have to move to flip)."""
    from opd_diag.preflight import Thresholds

    th = Thresholds()
    lines = {"thinking compatibility": ("compatibility_score", [th.compat_nogo, th.compat_caution],
                                        +1),
             "template alignment": ("template_top1_agreement", [th.template_nogo,
                                                                th.template_caution], +1),
             "reachability": ("grad_share_unreachable", [th.unreachable_caution,
                                                         th.unreachable_nogo], -1)}
    rows = []
    for _, r in df[df.seed == df.seed.min()].iterrows():
        for cond, (metric, ls, _) in lines.items():
            v = r.get(f"{cond}: value")
            if v is None or v != v:
                continue
            near = min(ls, key=lambda x: abs(x - v))
            rows.append({"pair": r.pair, "condition": cond, "metric": metric, "value": round(v, 3),
                         "nearest_line": near, "distance": round(v - near, 3)})
        lo, hi = r.get("novelty_ci_low"), r.get("novelty_ci_high")
        if lo == lo and lo is not None:
            rows.append({"pair": r.pair, "condition": "teacher novelty", "metric": "CI low / high",
                         "value": f"{lo:.3f} / {hi:.3f}", "nearest_line": f"0 / {th.novelty_margin}",
                         "distance": round(min(abs(lo), abs(hi - th.novelty_margin)), 3)})
    return pd.DataFrame(rows)


def refit_reachability(df: pd.DataFrame) -> tuple[float, float] | None:
    """The declared calibration rule (docs/validation.md) for the reachability lines."""
    ok = df[df.outcome_provisional == "worked"]["reachability: value"].dropna()
    bad = df[(df.outcome_provisional == "failed")
             & df["teacher novelty"].astype(str).str.startswith("GO")]["reachability: value"].dropna()
    if not len(ok) or not len(bad):
        return None
    nogo = (ok.max() + bad.min()) / 2
    return nogo, (ok.max() + nogo) / 2


def leave_one_out(df: pd.DataFrame) -> pd.DataFrame:
    """Refit the reachability lines without each pair and re-judge that pair's reachability row
    (the other conditions keep their status: their lines were not refitted in v2.0)."""
    from opd_diag.preflight import VERDICTS

    first = df[df.seed == df.seed.min()].reset_index(drop=True)
    rows = []
    for i, r in first.iterrows():
        fit = refit_reachability(first.drop(index=i))
        status = {c: str(r[c]).split(" ")[0] for c in first.columns
                  if c in CONDITIONS and isinstance(r[c], str)}
        if fit and r.get("reachability: value") == r.get("reachability: value"):
            nogo, caution = fit
            u = r["reachability: value"]
            status["reachability"] = "NO-GO" if u > nogo else "CAUTION" if u > caution else "GO"
        counted = [s for s in status.values() if s in VERDICTS]
        verdict = max(counted, key=VERDICTS.index) if counted else "CAUTION"
        if status.get("truncation") == "CAUTION":
            verdict = "CAUTION"
        rows.append({"pair": r.pair, "refit_nogo": round(fit[0], 3) if fit else None,
                     "refit_caution": round(fit[1], 3) if fit else None, "loo_verdict": verdict,
                     "outcome_provisional": r.get("outcome_provisional"),
                     "agreement_provisional": agrees(verdict, r.get("outcome_provisional", ""))})
    return pd.DataFrame(rows)


CONDITIONS = ("answer checking", "thinking compatibility", "template alignment", "reachability",
              "teacher novelty", "distinct teacher", "horizon", "truncation")


def load_pair_set(spec: str) -> list[dict]:
    """``zoo-v1`` (the built-in zoo pairs) or a JSON file of ``{"pair", "argv"?, "opd_run"?}``
    (or ``{"pair", "coldstart_of", "student", "opd_run"}``: a cold-started student of a pair,
    pre-flighted against that pair's teacher on its prompts)."""
    from opd_diag.zoo import list_pairs, model_dir

    if spec == "zoo-v1":
        out = []
        for zp in list_pairs():
            extra = []
            for alt in zp.alt_teachers:  # e.g. reverse: is the same-pipeline teacher different?
                extra += ["--reference", str(model_dir(alt))]
            out.append({"pair": zp.name, "argv": ["--pair", zp.name, *extra]})
        return out
    path = Path(spec)
    if not path.is_file():
        raise SystemExit(f"--pair-set {spec!r}: not 'zoo-v1' and not a JSON file")
    items = json.loads(path.read_text())
    return [{"argv": ["--pair", it["pair"]], **it} for it in items]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair-set", default="zoo-v1",
                    help="zoo-v1 (the calibration pairs) or a JSON file of pairs (e.g. zoo v2)")
    ap.add_argument("--split", choices=["in-sample", "held-out"], default=None,
                    help="default: in-sample for zoo-v1, held-out otherwise")
    ap.add_argument("--outcomes", default=None,
                    help="OPD outcomes CSV (default reports/zoo-validation.csv)")
    ap.add_argument("--runs", default="runs/examples")
    ap.add_argument("--out", default="reports")
    ap.add_argument("--pairs", nargs="*")
    ap.add_argument("--seeds", nargs="*", type=int, default=[0])
    ap.add_argument("--reuse", action="store_true",
                    help="re-judge existing pre-flight dirs under --runs (no sampling)")
    ap.add_argument("--merge", action="store_true",
                    help="the rows of the pairs run now replace theirs in --out's existing table; "
                    "the other rows are kept as they are (a pair added to a recorded table)")
    ap.add_argument("--rejudge", action="store_true",
                    help="re-join the OPD outcomes onto --out's existing table (no pre-flight runs)")
    args = ap.parse_args()
    split = args.split or ("in-sample" if args.pair_set == "zoo-v1" else "held-out")
    torch.set_num_threads(2)
    from opd_diag.cli import main as cli
    from opd_diag.core.runs import load_run
    from opd_diag.preflight import Thresholds
    from opd_diag.zoo.phenomena import merge_validation
    from opd_diag.zoo.validate import coldstart_dir

    runs, out = Path(args.runs), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "preflight-validation" if split == "in-sample" else "preflight-validation-heldout"
    outcomes = read_outcomes(args.outcomes, split, runs, merge_validation)
    if args.rejudge:
        df = pd.read_csv(out / f"{stem}.csv")
        df = pd.DataFrame([judge(r.dropna().to_dict(), outcomes, r.get("opd_run"))
                           for _, r in df.iterrows()])
        write(df, out, stem, split, outcomes)
        return
    jobs = []
    for it in load_pair_set(args.pair_set):
        if args.pairs and it["pair"] not in args.pairs:
            continue
        if "coldstart_of" in it:  # the recommended recovery, checked: a cold-started student
            student = Path(it["student"])
            if not (student / "coldstart.json").is_file():
                print(f"[preflight-validation] {it['pair']}: skipped, no cold-started student at "
                      f"{student} (`opd-diag zoo validate --family v2 --extra-runs` builds it)")
                continue
            it = {**it, "argv": coldstart_argv(runs, it["pair"], it["coldstart_of"], student)}
        jobs.append((it["pair"], it["argv"], it.get("opd_run")))
    name, base = COLDSTART
    student = coldstart_dir(runs, base)
    if args.pair_set == "zoo-v1" and (student / "coldstart.json").is_file() and (
            not args.pairs or name in args.pairs):
        jobs.append((name, coldstart_argv(runs, name, base, student), None))
    rows = []
    for name, argv, opd_run in jobs:
        for seed in args.seeds:
            pf = runs / f"preflight-{name}" if seed == 0 else runs / f"preflight-{name}-s{seed}"
            t0 = time.perf_counter()
            if args.reuse:
                verdict, code = redecide(pf), None
                wall = verdict["seconds"]
            else:
                code = cli(["--quiet", "preflight", *argv, "--out", str(pf), "--seed", str(seed)])
                wall = time.perf_counter() - t0
                verdict = json.loads((pf / "verdict.json").read_text())
            row = {"pair": name, "seed": seed, "split": split, "verdict": verdict["verdict"],
                   "exit_code": code if code is not None else
                   {"GO": 0, "CAUTION": 3, "NO-GO": 4}[verdict["verdict"]],
                   "thresholds_version": verdict["thresholds"].get("version", "v1"),
                   # guard 2 stops counting looping rollouts (preflight/truncation.py)
                   "truncation_guard": verdict.get("truncation", {}).get("guard_version", 1),
                   "preflight_seconds": round(wall, 1)}
            for c in verdict["conditions"]:
                v = c["value"]
                row[c["condition"]] = f"{c['status']} ({c['metric']}={v:.3f})" \
                    if v is not None and v == v else c["status"]
                row[f"{c['condition']}: value"] = v if v is not None else np.nan
            nov = load_run(pf).probe("novelty")
            nov = nov[nov.section.isin(["frontier", "score"])].set_index("metric").value
            row.update({m: float(nov[m]) for m in NOVELTY if m in nov})
            rows.append(judge(row, outcomes, opd_run))
            print(f"[preflight-validation] {name} seed {seed}: {verdict['verdict']} in "
                  f"{wall:.0f} s", flush=True)
    df = pd.DataFrame(rows)
    if args.merge and (out / f"{stem}.csv").is_file():
        df = merge_rows(pd.read_csv(out / f"{stem}.csv"), df)
    stale = set(df.thresholds_version) - {Thresholds().version}
    if stale:
        print(f"[preflight-validation] rows judged under {sorted(stale)}, not "
              f"{Thresholds().version}: re-run them (--reuse re-judges stored runs)")
    write(df, out, stem, split, outcomes)
    print((out / f"{stem}.md").read_text())


REPORTS = Path(__file__).resolve().parents[1] / "reports"


def coldstart_argv(runs: Path, name: str, base: str, student: Path) -> list[str]:
    """``opd-diag preflight`` arguments for a cold-started ``student`` of zoo pair ``base``: its
    teacher, checker and length cap, on the pair's default-budget prompts (written to
    ``runs/<name>-prompts.jsonl``)."""
    from opd_diag.preflight import BUDGETS
    from opd_diag.zoo import get_pair, model_dir

    zp = get_pair(base)
    prompts = runs / f"{name}-prompts.jsonl"
    prompts.parent.mkdir(parents=True, exist_ok=True)
    zp.prompts(BUDGETS["default"]["n_prompts"])[["prompt", "answer"]].to_json(
        prompts, orient="records", lines=True)
    return ["--student", str(student), "--teacher", str(model_dir(zp.teacher)),
            "--prompts", str(prompts), "--checker", f"task:{zp.task}",
            "--max-new-tokens", str(zp.hyper.max_new_tokens)]


def merge_rows(recorded: pd.DataFrame, fresh: pd.DataFrame) -> pd.DataFrame:
    """``--merge``: the fresh rows replace the recorded rows of their (pair, seed); every other
    recorded row is kept as it was, in its place, and the fresh ones follow."""
    key = ["pair", "seed"]
    kept = recorded[~recorded.set_index(key).index.isin(fresh.set_index(key).index)]
    return pd.concat([kept, fresh], ignore_index=True)


def read_outcomes(path: str | None, split: str, runs: Path | None = None,
                  merge=None) -> pd.DataFrame:
    """The OPD outcome table indexed by run: ``--outcomes``, else the committed one of the split
    (in-sample: ``zoo-validation.csv``, v1 runs; held-out: ``zoo-v2-validation.csv``, indexed by
    pair)."""
    if path is None and split == "held-out":
        path = REPORTS / "zoo-v2-validation.csv"
        outcomes = pd.read_csv(path)
        extra = REPORTS / "zoo-v2-extra-items.csv"
        if extra.is_file():  # the cold start's outcome, against the cold-started student
            from opd_diag.zoo.v2.validate import extra_outcomes

            outcomes = pd.concat([outcomes, extra_outcomes(pd.read_csv(extra))],
                                 ignore_index=True)
        return outcomes.set_index("pair")
    outcomes = pd.read_csv(path or REPORTS / "zoo-validation.csv")
    if path is None and runs is not None and merge and (runs / "zoo-validation.csv").exists():
        outcomes = merge(outcomes, pd.read_csv(runs / "zoo-validation.csv"))
    return outcomes.set_index("run" if "run" in outcomes else "pair")


def write(df: pd.DataFrame, out: Path, stem: str, split: str, outcomes: pd.DataFrame) -> None:
    """Write the table and its report, refusing a table its own rules contradict."""
    problems = check_table(df, outcomes)
    if problems:
        raise SystemExit("validation table contradicts its rules:\n  " + "\n  ".join(problems))
    for path, text in ((out / f"{stem}.csv", None), (out / f"{stem}.md", render(df, split))):
        tmp = path.with_name(f".{path.name}.tmp")
        df.to_csv(tmp, index=False) if text is None else tmp.write_text(text)
        tmp.replace(path)


def _count(df: pd.DataFrame, col: str) -> str:
    c = df[col].value_counts() if col in df else pd.Series(dtype=int)
    return (f"{int(c.get('agree', 0))} agree, {int(c.get('disagree', 0))} wrong, "
            f"{int(c.get('hedge', 0))} hedged (CAUTION), {int(c.get('undetermined', 0))} "
            f"undetermined, of {int(c.sum())}")


def render(df: pd.DataFrame, split: str = "in-sample") -> str:
    from opd_diag.preflight import Thresholds
    from opd_diag.zoo.phenomena import markdown_table

    th = Thresholds()
    first = df[df.seed == df.seed.min()].drop(columns=["seed"])
    judged = first.dropna(subset=["outcome"]) if "outcome" in first else first.iloc[:0]
    cond_cols = [c for c in CONDITIONS if c in first]
    main_cols = ["pair", "verdict", *cond_cols, "opd_run", "opd_seeds", "outcome_subset",
                 "acc_before", "acc_after", "acc_teacher", "gap_recovery",
                 "gap_recovery_ci_low", "gap_recovery_ci_high", "outcome_provisional", "outcome",
                 "agreement_provisional", "agreement"]
    lines = [f"# Pre-flight verdicts vs measured OPD outcomes ({split})", "",
             "Generated by `python benchmarks/preflight_validation.py` under the protocol of "
             f"docs/validation.md, thresholds **{th.version}** "
             f"(`{', '.join(sorted(set(first.thresholds_version)))}` in the rows).", ""]
    if split == "in-sample":
        held = REPORTS / "preflight-validation-heldout.csv"
        headline = "pending (no held-out table)"
        if held.is_file():
            h = pd.read_csv(held)
            h = h[h.seed == h.seed.min()]
            headline = _count(h.dropna(subset=["outcome"]) if "outcome" in h else h.iloc[:0],
                              "agreement") + " (`preflight-validation-heldout.md`)"
        lines += [f"**Held-out agreement: {headline}.** These are the 7 calibration pairs, on "
                  "which the thresholds were set, so the agreement below is in-sample and says "
                  "little about new pairs.", ""]
    else:
        lines += ["**Held-out pairs**: every verdict below was recorded under the frozen "
                  "thresholds before any of these pairs had an OPD outcome; the outcomes come from "
                  "`reports/zoo-v2-validation.csv` (derived from `reports/zoo-v2-eval-items.csv`"
                  ", one fixed OPD budget, >= 3 seeds), joined with `--rejudge` without re-running "
                  "a pre-flight. Nothing here was used to set a threshold.", ""]
        if df.pair.str.endswith("+coldstart").any():
            lines += ["**Added later**: `v2-incompatible+coldstart`, the recommended recovery "
                      "(v2-incompatible's student cold-started on v2-teacher-b's rollouts), was "
                      "pre-flighted under the same thresholds and truncation guard 2 "
                      "(`truncation_guard`; both fixed before it) while its OPD runs were "
                      "running, before any of their outcomes existed; its outcome (3 seeds, the "
                      "same budget, scored against the cold-started student) comes from "
                      "`reports/zoo-v2-extra-items.csv`.", ""]
    lines += [f"**{split} agreement under the protocol:** {_count(judged, 'agreement')}.", "",
              f"**Provisional agreement** (outcomes from however many OPD seeds each pair has, "
              f"even fewer than the protocol's 3; the same as above when every pair has 3): "
              f"{_count(judged, 'agreement_provisional')}.", "",
              markdown_table(first[[c for c in main_cols if c in first]]), ""]
    bad = ["disagree", "hedge"]
    wrong = judged[judged.get("agreement", pd.Series(dtype=str)).isin(bad)
                   | judged.get("agreement_provisional", pd.Series(dtype=str)).isin(bad)] \
        if len(judged) else judged
    lines += ["## Wrong or hedged calls", ""]
    if len(wrong):
        for _, r in wrong.iterrows():
            failing = [c for c in cond_cols if str(r[c]).startswith(("NO-GO", "CAUTION"))]
            lines.append(f"* **{r.pair}**: {r.verdict} ({', '.join(failing) or 'no failing row'})"
                         f" but OPD {r.outcome} (protocol; provisional {r.outcome_provisional}, "
                         f"{int(r.opd_seeds)} seed(s)): gap recovery {r.gap_recovery:.2f} on "
                         f"{r.outcome_subset}, 95% CI [{r.gap_recovery_ci_low:.2f}, "
                         f"{r.gap_recovery_ci_high:.2f}]"
                         + (f"; {r.outcome_note}." if isinstance(r.get("outcome_note"), str)
                            and r.outcome_note else "."))
    else:
        lines.append("None.")
    lines += ["", "## Margins (seed 0)", "", "Distance of each statistic to its nearest line "
              "(reachability: positive = above the line, i.e. on the NO-GO side).", ""]
    m = margins(df)
    if len(m):
        lines += [markdown_table(m), ""]
    if split == "in-sample" and "outcome_provisional" in df:
        loo = leave_one_out(df)
        lines += ["## Leave-one-pair-out (reachability lines refitted without the pair)", "",
                  f"{_count(loo, 'agreement_provisional')} (provisional outcomes).", "",
                  markdown_table(loo), ""]
    if df.seed.nunique() > 1:
        seeds = df.pivot_table(index="pair", columns="seed", values="verdict", aggfunc="first",
                               sort=False)
        table = pd.DataFrame({f"seed {s}": seeds[s] for s in seeds.columns})
        table.insert(0, "pair", table.index)
        lines += ["## Across pre-flight sampling seeds", "",
                  markdown_table(table.reset_index(drop=True)), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
