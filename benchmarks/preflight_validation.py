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

    python benchmarks/preflight_validation.py [--runs runs/examples] [--out reports] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

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


def outcome(o: pd.Series) -> dict:
    gap = o["acc_teacher/5d"] - o["acc_before/5d"]
    gained = o["acc_after/5d"] - o["acc_before/5d"]
    # OPD worked: the teacher was ahead and the student closed >= half of the gap
    worked = gap > 0.05 and o["gap_recovery/5d"] >= 0.5
    # OPD failed: no gap to close, or the student gained < 20% of it (or regressed)
    failed = gap <= 0.05 or o["gap_recovery/5d"] < 0.2 or gained < 0
    return {"acc5d_before": o["acc_before/5d"], "acc5d_after": o["acc_after/5d"],
            "acc5d_teacher": o["acc_teacher/5d"], "gap_recovery_5d": o["gap_recovery/5d"],
            "outcome": "worked" if worked else "failed" if failed else "partial"}


def judge(row: dict, outcomes: pd.DataFrame) -> dict:
    """A pre-flight row with its pair's OPD outcome and whether the verdict agrees with it."""
    row = {k: v for k, v in row.items()
           if k not in ("opd_run", "acc5d_before", "acc5d_after", "acc5d_teacher",
                        "gap_recovery_5d", "outcome", "agrees")}
    run = OUTCOME_RUN.get(row["pair"])
    if run and run in outcomes.index:
        row["opd_run"] = run
        row.update(outcome(outcomes.loc[run]))
        row["agrees"] = {"worked": row["verdict"] == "GO",
                         "failed": row["verdict"] != "GO"}.get(row["outcome"], True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs/examples")
    ap.add_argument("--out", default="reports")
    ap.add_argument("--pairs", nargs="*")
    ap.add_argument("--seeds", nargs="*", type=int, default=[0])
    ap.add_argument("--rejudge", action="store_true",
                    help="re-join the OPD outcomes onto --out's existing table (no pre-flight runs)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    from opd_diag.cli import main as cli
    from opd_diag.core.runs import load_run
    from opd_diag.preflight import BUDGETS
    from opd_diag.zoo import get_pair, list_pairs, model_dir
    from opd_diag.zoo.phenomena import merge_validation
    from opd_diag.zoo.validate import coldstart_dir

    runs, out = Path(args.runs), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # the committed outcomes of `python -m opd_diag.zoo.validate`, with any runs re-done since
    # under --runs replacing theirs
    outcomes = pd.read_csv(Path(__file__).resolve().parents[1] / "reports" / "zoo-validation.csv")
    if (runs / "zoo-validation.csv").exists():
        outcomes = merge_validation(outcomes, pd.read_csv(runs / "zoo-validation.csv"))
    outcomes = outcomes.set_index("run")
    if args.rejudge:
        df = pd.read_csv(out / "preflight-validation.csv")
        df = pd.DataFrame([judge(r.dropna().to_dict(), outcomes) for _, r in df.iterrows()])
        df.to_csv(out / "preflight-validation.csv", index=False)
        (out / "preflight-validation.md").write_text(render(df))
        return
    jobs = []  # (row name, preflight arguments)
    for zp in list_pairs():
        if args.pairs and zp.name not in args.pairs:
            continue
        extra = []
        for alt in zp.alt_teachers:  # e.g. reverse: is the same-pipeline teacher any different?
            extra += ["--reference", str(model_dir(alt))]
        jobs.append((zp.name, ["--pair", zp.name, *extra]))
    name, base = COLDSTART
    student = coldstart_dir(runs, base)
    if (student / "coldstart.json").is_file() and (not args.pairs or name in args.pairs):
        zp = get_pair(base)
        prompts = runs / f"{name}-prompts.jsonl"
        zp.prompts(BUDGETS["default"]["n_prompts"])[["prompt", "answer"]].to_json(
            prompts, orient="records", lines=True)
        jobs.append((name, ["--student", str(student), "--teacher", str(model_dir(zp.teacher)),
                            "--prompts", str(prompts), "--checker", f"task:{zp.task}",
                            "--max-new-tokens", str(zp.hyper.max_new_tokens)]))
    rows = []
    for name, argv in jobs:
        for seed in args.seeds:
            pf = runs / f"preflight-{name}" if seed == 0 else runs / f"preflight-{name}-s{seed}"
            t0 = time.perf_counter()
            code = cli(["--quiet", "preflight", *argv, "--out", str(pf), "--seed", str(seed)])
            wall = time.perf_counter() - t0
            verdict = json.loads((pf / "verdict.json").read_text())
            row = {"pair": name, "seed": seed, "verdict": verdict["verdict"], "exit_code": code,
                   "preflight_seconds": round(wall, 1)}
            for c in verdict["conditions"]:
                row[c["condition"]] = f"{c['status']} ({c['metric']}={c['value']:.3f})" \
                    if c["value"] == c["value"] else c["status"]
            nov = load_run(pf).probe("novelty")
            nov = nov[nov.section.isin(["frontier", "score"])].set_index("metric").value
            row.update({m: float(nov[m]) for m in NOVELTY if m in nov})
            rows.append(judge(row, outcomes))
            print(f"[preflight-validation] {name} seed {seed}: {verdict['verdict']} in "
                  f"{wall:.0f} s", flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(out / "preflight-validation.csv", index=False)
    (out / "preflight-validation.md").write_text(render(df))
    print(df[df.seed == df.seed.min()].T.to_string())


def render(df: pd.DataFrame) -> str:
    from opd_diag.zoo.phenomena import markdown_table

    first = df[df.seed == df.seed.min()].drop(columns=["seed"])
    main_cols = ["pair", "verdict", "exit_code", "preflight_seconds", "thinking compatibility",
                 "template alignment", "reachability", "teacher novelty", "novelty_ci_low",
                 "novelty_ci_high", "n_frontier_prompts", "acc_teacher_frontier",
                 "acc_student_frontier", "horizon", "opd_run", "acc5d_before", "acc5d_after",
                 "acc5d_teacher", "gap_recovery_5d", "outcome", "agrees"]
    judged = first.dropna(subset=["outcome"]) if "outcome" in first else first.iloc[:0]
    lines = ["# Pre-flight verdicts vs measured OPD outcomes on the zoo", "",
             "Generated by `python benchmarks/preflight_validation.py` (default budget, "
             "2 CPU threads) into `reports/preflight-validation.csv`; the OPD outcomes come "
             "from `python -m opd_diag.zoo.validate` (reverse-KL OPD, `cpu-zoo` preset, "
             "`reports/zoo-validation.csv`).", "",
             "Outcome: *worked* when the teacher was ahead on 5-digit sums and the student closed "
             "≥ 50% of the gap; *failed* when there was no gap to close (the teacher is not "
             "better), the student closed < 20% of it, or it regressed. A verdict agrees when a "
             "run that worked got GO and a run that failed got CAUTION or NO-GO.", "",
             f"**{int(judged.agrees.sum())} of {len(judged)} judged pairs agree** "
             f"(seed {int(df.seed.min())}).", "",
             markdown_table(first[[c for c in main_cols if c in first]]), ""]
    if df.seed.nunique() > 1:
        seeds = df.pivot_table(index="pair", columns="seed", values="verdict", aggfunc="first",
                               sort=False)
        lo = df.pivot_table(index="pair", columns="seed", values="novelty_ci_low",
                            aggfunc="first", sort=False)
        table = pd.DataFrame({f"seed {s}": seeds[s] + " (novelty CI low " +
                              lo[s].map("{:.3f}".format) + ")" for s in seeds.columns})
        table.insert(0, "pair", table.index)
        agree = df.dropna(subset=["outcome"]) if "outcome" in df else df.iloc[:0]
        lines += ["## Across sampling seeds", "",
                  f"The same pre-flight with `--seed` {', '.join(map(str, seeds.columns))}: "
                  f"{int(agree.agrees.sum())} of {len(agree)} (pair, seed) verdicts agree with "
                  "the pair's OPD outcome.", "", markdown_table(table.reset_index(drop=True)), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
