"""Teacher ranking: one pre-flight per candidate teacher on the same prompts and the same student
rollouts, plus cheap signals from the literature, ordered into ``ranking.csv``.

The student is sampled once: the first candidate's pre-flight samples the student's rollouts,
and every later candidate's capture copies them (:func:`opd_diag.states.collect.reuse_student_rollouts`)
and only re-scores them with its own teacher. Everything that depends on the teacher (its own
rollouts, continuations, frontier samples) is generated per candidate.

Order: verdict first (GO, then CAUTION, then NO-GO), then the expected gain within a verdict
(the novelty score: the teacher − student accuracy gap on the student's frontier), then the
step-0 overlap ratio. Signals in the table:

* ``novelty_score`` (+ CI): capability the teacher has at the student's own prompts;
* ``overlap_ratio``: top-k overlap at the student's states (paper §3.1);
* the verdict table's compatibility and reachability values;
* ``rsr``: the Rank-Surprisal Ratio of the teacher's own rollouts under the student (Yang et
  al. 2026, arXiv 2601.14249: mean token rank / mean negative log-likelihood under the student;
  lower = informative yet within the student's reach). Ranks come from the captured top-k list,
  so a token outside the student's top-k counts as rank k + 1 (a capped rank, our choice).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import OpdDiagError
from ..core.models import LoadedModel, Pair, check_same_tokenizer
from ..core.runs import Run, check_collection_dir, load_run, stack_list_column, write_parquet
from ..states.collect import Verifier, reuse_student_rollouts
from .budgets import PreflightConfig
from .rules import VERDICTS, Verdict
from .run import run_preflight

RANK_COLUMNS = ["teacher", "rank", "verdict", "expected_gain", "expected_gain_low",
                "expected_gain_high", "reachable_share", "novelty_score", "novelty_ci_low",
                "novelty_ci_high", "overlap_ratio", "rsr", "teacher_path", "run"]


def rank_surprisal_ratio(run: Run) -> float:
    """RSR of the teacher's own rollouts under the student (``aux/teacher``: roles swapped,
    ``_t`` columns are the student); NaN when the run has no teacher rollouts."""
    if not run.has_aux("teacher"):
        return float("nan")
    states = run.aux("teacher").states
    if len(states) == 0:
        return float("nan")
    ids = stack_list_column(states, "topk_ids_t")  # the student's top-k at each teacher state
    k = ids.shape[1]
    hit = ids == states.token.to_numpy()[:, None]
    rank = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, k + 1)
    nll = -states.logp_t.to_numpy(float)
    return float(rank.mean() / max(nll.mean(), 1e-12))


def _condition_value(table: pd.DataFrame, metric: str) -> float:
    sel = table[table.metric == metric] if "metric" in table else table.iloc[0:0]
    return float(sel.value.iloc[0]) if len(sel) and pd.notna(sel.value.iloc[0]) else float("nan")


def _novelty(run: Run) -> tuple[float, float, float]:
    if "novelty" not in run.probes():
        return (float("nan"),) * 3
    nov = run.probe("novelty")
    get = {m: float(v) for m, v in zip(nov.get("metric", []), nov.get("value", []), strict=False)}
    return (get.get("novelty_score", np.nan), get.get("novelty_ci_low", np.nan),
            get.get("novelty_ci_high", np.nan))


def _overlap(run: Run) -> float:
    if "overlap" not in run.probes():
        return float("nan")
    ov = run.probe("overlap")
    row = ov[ov.level == "run"]
    return float(row.overlap_ratio.iloc[0]) if len(row) else float("nan")


def signals(name: str, verdict: Verdict) -> dict:
    """One ranking row from a finished pre-flight."""
    run = load_run(verdict.run)
    score, lo, hi = _novelty(run)
    row = {"teacher": name, "verdict": verdict.verdict, "novelty_score": score,
           "novelty_ci_low": lo, "novelty_ci_high": hi, "overlap_ratio": _overlap(run),
           "rsr": rank_surprisal_ratio(run), "teacher_path": run.meta["models"]["teacher"]["path"],
           "run": str(verdict.run)}
    # the expected effect's band (rules.expected_effect): the reachable share of the teacher's
    # signal times the frontier accuracy gap and its CI; without a reachability statistic, the gap
    reach = verdict.table.set_index("condition").value.get("reachability", np.nan)
    share = 1.0 - float(reach) if reach == reach else 1.0
    row.update({"expected_gain": share * score, "expected_gain_low": share * lo,
                "expected_gain_high": share * hi, "reachable_share": share if reach == reach
                else np.nan})
    for _, cond in verdict.table.iterrows():
        row[f"{cond.condition}: {cond.metric}"] = cond.value
        row[f"{cond.condition}: status"] = cond.status
    return row


def order(table: pd.DataFrame) -> pd.DataFrame:
    """Verdict (GO < CAUTION < NO-GO), then expected gain, then overlap ratio, descending."""
    key = table.assign(_v=table.verdict.map(VERDICTS.index),
                       _g=-table.expected_gain.fillna(-np.inf),
                       _o=-table.overlap_ratio.fillna(-np.inf))
    out = key.sort_values(["_v", "_g", "_o"], kind="stable").drop(columns=["_v", "_g", "_o"])
    out.insert(1, "rank", range(1, len(out) + 1))
    first = [c for c in RANK_COLUMNS if c in out]
    return out[first + [c for c in out.columns if c not in first]].reset_index(drop=True)


@dataclass
class Ranking:
    table: pd.DataFrame
    out: Path
    verdicts: dict[str, Verdict]

    def render(self) -> str:
        cols = ["rank", "teacher", "verdict", "expected_gain", "overlap_ratio", "rsr"]
        return self.table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}")


def rank_teachers(student: LoadedModel, teachers: Mapping[str, LoadedModel],
                  prompts: pd.DataFrame, out: str | Path, *, config: PreflightConfig | None = None,
                  verifier: Verifier | None = None, overwrite: bool = False,
                  progress: bool = False, report: bool = True, **preflight_kwargs) -> Ranking:
    """Pre-flight every candidate teacher against ``student`` on the same prompts and student
    rollouts; write ``out/<teacher>/`` (a pre-flight run each), ``out/ranking.csv`` and — with
    ``report`` — ``out/report.html`` comparing them.

    ``teachers`` maps a display name to a loaded model (``load_model(dir, role="teacher")``);
    every teacher must share the student's tokenizer (as for a pre-flight).
    """
    if not teachers:
        raise OpdDiagError("rank-teachers needs at least one teacher (--teacher DIR, repeatable)")
    names = list(teachers)
    bad = [n for n in names if not n or "/" in n or n.startswith(".")]
    if bad or len(set(names)) != len(names):
        raise OpdDiagError(f"teacher names must be unique, non-empty and free of '/': {names}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OpdDiagError(f"--out {out} is a file; give a directory for the ranking")
    check_collection_dir(out, ("ranking.csv", "ranking.parquet", "report.html"),
                         what="teacher ranking")  # the output-dir rule (core/runs.py)
    for name in names:  # fail before any work when a candidate cannot be compared at all
        check_same_tokenizer(student.tokenizer, teachers[name].tokenizer)
    verdicts: dict[str, Verdict] = {}
    source = None
    for name in names:
        pair = Pair(student=student, teacher=teachers[name])
        with reuse_student_rollouts(source):
            kwargs = dict(config=config, verifier=verifier, progress=progress, **preflight_kwargs)
            if overwrite:
                kwargs["overwrite"] = True
            verdicts[name] = run_preflight(pair, prompts, out / name, **kwargs)
        source = source or verdicts[name].run
    table = order(pd.DataFrame([signals(n, v) for n, v in verdicts.items()]))
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".ranking.csv.tmp"
    table.to_csv(tmp, index=False)
    tmp.replace(out / "ranking.csv")
    write_parquet(out / "ranking.parquet", table)
    if report:
        write_ranking_report(table, out / "report.html")
    return Ranking(table, out, verdicts)


def write_ranking_report(table: pd.DataFrame, path: Path) -> Path:
    """The comparison report of the candidates' pre-flights, led by the ranking table."""
    from ..report import Section, TableBlock, build_report  # lazy: reads the runs written above
    from ..report.render import write_html

    report = build_report(list(table.run), kind="comparison", labels=list(table.teacher))
    report.title = "Teacher ranking"
    cols = [c for c in RANK_COLUMNS if c not in ("run", "teacher_path")]
    report.sections.insert(0, Section(
        "Ranking", "Verdict first (GO, CAUTION, NO-GO), then the expected gain (the teacher − "
        "student accuracy gap on the student's frontier), then the step-0 overlap ratio. RSR: "
        "rank-surprisal ratio of the teacher's own rollouts under the student (lower = more "
        "informative within the student's reach).",
        tables=[TableBlock("Candidates", table[cols], "ranking.csv")]))
    return write_html(report, path)
