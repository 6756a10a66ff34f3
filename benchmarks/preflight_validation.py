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


MIN_OPD_SEEDS = 3
N_EVAL_DEFAULT = 100  # 5-digit eval items per OPD run when the CSV does not say (zoo: 100)


def _acc_draws(acc: float, n: int, rng, n_boot: int) -> np.ndarray:
    """Bootstrap draws of an accuracy over ``n`` eval items (a resample of n 0/1 items has a
    Binomial(n, acc) count: the item bootstrap of a binary vector needs only its mean)."""
    return rng.binomial(n, acc, n_boot) / n


def outcome(o: pd.DataFrame | pd.Series, seed: int = 0, n_boot: int = 4000) -> dict:
    """An OPD outcome from one or more seeds of a run (docs/validation.md): gap recovery with a
    95% bootstrap CI over eval items (and seeds), and worked / failed / undetermined."""
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
    if gap <= 0.05:
        result = "failed"  # the teacher is not ahead: nothing to recover
    elif lo >= 0.5:
        result = "worked"
    elif hi < 0.2:
        result = "failed"
    else:
        result = "undetermined"
    protocol = n_seeds >= MIN_OPD_SEEDS
    return {"acc5d_before": float(before.mean()), "acc5d_after": float(after.mean()),
            "acc5d_teacher": float(teacher.mean()), "gap_recovery_5d": point,
            "gap_recovery_ci_low": lo, "gap_recovery_ci_high": hi, "opd_seeds": n_seeds,
            "outcome_provisional": result,
            "outcome": result if protocol else "undetermined",
            "outcome_note": "" if protocol else f"{n_seeds} OPD seed(s) < {MIN_OPD_SEEDS}"}


def agrees(verdict: str, result: str) -> str:
    """``agree`` / ``disagree`` / ``hedge`` (CAUTION on a decided outcome) / ``undetermined``."""
    if result not in ("worked", "failed"):
        return "undetermined"
    if verdict == "CAUTION":
        return "hedge"
    return "agree" if (verdict == "GO") == (result == "worked") else "disagree"


def judge(row: dict, outcomes: pd.DataFrame, opd_run: str | None = None) -> dict:
    """A pre-flight row with its pair's OPD outcome and whether the verdict agrees with it
    (under the protocol, and provisionally on the single-seed outcomes)."""
    drop = ("opd_run", "acc5d_before", "acc5d_after", "acc5d_teacher", "gap_recovery_5d",
            "gap_recovery_ci_low", "gap_recovery_ci_high", "opd_seeds", "outcome",
            "outcome_provisional", "outcome_note", "agreement", "agreement_provisional", "agrees")
    row = {k: v for k, v in row.items() if k not in drop}
    run = opd_run or OUTCOME_RUN.get(row["pair"])
    if run and run in outcomes.index:
        row["opd_run"] = run
        row.update(outcome(outcomes.loc[[run]]))
        row["agreement"] = agrees(row["verdict"], row["outcome"])
        row["agreement_provisional"] = agrees(row["verdict"], row["outcome_provisional"])
    return row


def redecide(pf: Path) -> dict:
    """Re-judge a stored pre-flight run with the current thresholds (probes re-run, no sampling)."""
    from opd_diag.core.runs import load_run
    from opd_diag.preflight import PreflightConfig, decide, overall
    from opd_diag.preflight.truncation import truncation_row, verdict_with_truncation
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
            "thresholds": {"version": cfg.thresholds.version}}


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
    """``zoo-v1`` (the built-in zoo pairs) or a JSON file of ``{"pair", "argv"?, "opd_run"?}``."""
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
    ap.add_argument("--rejudge", action="store_true",
                    help="re-join the OPD outcomes onto --out's existing table (no pre-flight runs)")
    args = ap.parse_args()
    split = args.split or ("in-sample" if args.pair_set == "zoo-v1" else "held-out")
    torch.set_num_threads(2)
    from opd_diag.cli import main as cli
    from opd_diag.core.runs import load_run
    from opd_diag.preflight import BUDGETS, Thresholds
    from opd_diag.zoo import get_pair, model_dir
    from opd_diag.zoo.phenomena import merge_validation
    from opd_diag.zoo.validate import coldstart_dir

    runs, out = Path(args.runs), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "preflight-validation" if split == "in-sample" else "preflight-validation-heldout"
    default = Path(__file__).resolve().parents[1] / "reports" / "zoo-validation.csv"
    outcomes = pd.read_csv(args.outcomes or default)
    if args.outcomes is None and (runs / "zoo-validation.csv").exists():
        outcomes = merge_validation(outcomes, pd.read_csv(runs / "zoo-validation.csv"))
    outcomes = outcomes.set_index("run")
    if args.rejudge:
        df = pd.read_csv(out / f"{stem}.csv")
        df = pd.DataFrame([judge(r.dropna().to_dict(), outcomes, r.get("opd_run"))
                           for _, r in df.iterrows()])
        df.to_csv(out / f"{stem}.csv", index=False)
        (out / f"{stem}.md").write_text(render(df, split))
        return
    jobs = [(it["pair"], it["argv"], it.get("opd_run")) for it in load_pair_set(args.pair_set)
            if not args.pairs or it["pair"] in args.pairs]
    name, base = COLDSTART
    student = coldstart_dir(runs, base)
    if args.pair_set == "zoo-v1" and (student / "coldstart.json").is_file() and (
            not args.pairs or name in args.pairs):
        zp = get_pair(base)
        prompts = runs / f"{name}-prompts.jsonl"
        zp.prompts(BUDGETS["default"]["n_prompts"])[["prompt", "answer"]].to_json(
            prompts, orient="records", lines=True)
        jobs.append((name, ["--student", str(student), "--teacher", str(model_dir(zp.teacher)),
                            "--prompts", str(prompts), "--checker", f"task:{zp.task}",
                            "--max-new-tokens", str(zp.hyper.max_new_tokens)], None))
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
    stale = set(df.thresholds_version) - {Thresholds().version}
    if stale:
        print(f"[preflight-validation] rows judged under {sorted(stale)}, not "
              f"{Thresholds().version}: re-run them (--reuse re-judges stored runs)")
    df.to_csv(out / f"{stem}.csv", index=False)
    (out / f"{stem}.md").write_text(render(df, split))
    print((out / f"{stem}.md").read_text())


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
    main_cols = ["pair", "verdict", *cond_cols, "opd_run", "opd_seeds", "gap_recovery_5d",
                 "gap_recovery_ci_low", "gap_recovery_ci_high", "outcome_provisional", "outcome",
                 "agreement_provisional", "agreement"]
    lines = [f"# Pre-flight verdicts vs measured OPD outcomes ({split})", "",
             "Generated by `python benchmarks/preflight_validation.py` under the protocol of "
             f"docs/validation.md, thresholds **{th.version}** "
             f"(`{', '.join(sorted(set(first.thresholds_version)))}` in the rows).", ""]
    if split == "in-sample":
        lines += ["**Held-out agreement: pending.** The held-out pairs (zoo v2, a second task "
                  "family) are not built yet; these are the 7 calibration pairs, on which the "
                  "thresholds were set, so the agreement below is in-sample and says little about "
                  "new pairs. Run `python benchmarks/preflight_validation.py --pair-set "
                  "PAIRS.json --outcomes OUTCOMES.csv` on the held-out set "
                  "(writes `preflight-validation-heldout.md`).", ""]
    lines += [f"**{split} agreement under the protocol:** {_count(judged, 'agreement')}.", "",
              f"**Provisional agreement** (single-seed OPD outcomes, CI from eval items only — not "
              f"the protocol's >= 3 seeds): {_count(judged, 'agreement_provisional')}.", "",
              markdown_table(first[[c for c in main_cols if c in first]]), ""]
    wrong = judged[judged.get("agreement_provisional", pd.Series(dtype=str)).isin(
        ["disagree", "hedge"])] if len(judged) else judged
    lines += ["## Wrong or hedged calls (provisional outcomes)", ""]
    if len(wrong):
        for _, r in wrong.iterrows():
            failing = [c for c in cond_cols if str(r[c]).startswith(("NO-GO", "CAUTION"))]
            lines.append(f"* **{r.pair}**: {r.verdict} ({', '.join(failing) or 'no failing row'})"
                         f" but OPD {r.outcome_provisional} (gap recovery "
                         f"{r.gap_recovery_5d:.2f}, 95% CI [{r.gap_recovery_ci_low:.2f}, "
                         f"{r.gap_recovery_ci_high:.2f}]).")
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
