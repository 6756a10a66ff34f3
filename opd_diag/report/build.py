"""Structure: runs → a :class:`Report` (sections of figures, tables and trajectories).

compute (probes, loop) → **structure (here)** → render (``render.py`` + templates). The kind of
report follows from what the runs hold:

* one run with a ``verdict`` probe table → ``preflight``;
* one run with ``metrics.jsonl`` (an OPD loop run) → ``training``;
* several runs → ``comparison`` (curves overlaid, a table of final numbers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..core.errors import OpdDiagError
from ..core.runs import Run, load_run
from . import figures as F
from . import tables as T

KINDS = ("preflight", "training", "comparison")
CONFIG_KEYS = ("objective", "top_k", "strategy", "lr", "steps", "batch_prompts", "n_samples",
               "max_new_tokens", "temperature", "capture_top_k", "checker")


@dataclass
class TableBlock:
    title: str
    table: pd.DataFrame
    source: str = ""
    caption: str = ""


@dataclass
class Section:
    title: str
    intro: str = ""
    plots: list[F.Plot] = field(default_factory=list)
    tables: list[TableBlock] = field(default_factory=list)
    trajectories: list[dict] = field(default_factory=list)


@dataclass
class Report:
    kind: str
    title: str
    runs: list[dict]
    sections: list[Section]
    verdict: str | None = None

    @property
    def plots(self) -> list[F.Plot]:
        return [p for s in self.sections for p in s.plots]


def _open(runs: Sequence[str | Path | Run]) -> list[Run]:
    if not runs:
        raise OpdDiagError("no runs given: pass one run directory or more")
    return [r if isinstance(r, Run) else load_run(r) for r in runs]


def detect_kind(runs: Sequence[Run]) -> str:
    """``comparison`` for several runs; else ``preflight`` or ``training`` from the tables."""
    if len(runs) > 1:
        return "comparison"
    run = runs[0]
    if "verdict" in run.probes():
        return "preflight"
    if not run.metrics.empty:
        return "training"
    raise OpdDiagError(
        f"{run.path} is neither a pre-flight run (no probes/verdict.parquet; run `opd-diag "
        "preflight`) nor an OPD loop run (no metrics.jsonl; run `opd-diag train`)")


def _labels(runs: Sequence[Run], labels: Sequence[str] | None) -> list[str]:
    if labels:
        if len(labels) != len(runs):
            raise OpdDiagError(f"{len(labels)} labels for {len(runs)} runs")
        return list(labels)
    out: list[str] = []
    for run in runs:
        base = T.run_label(run)
        out.append(base if base not in out else f"{base} ({len(out)})")
    return out


def build_report(runs: Sequence[str | Path | Run], kind: str = "auto",
                 labels: Sequence[str] | None = None, n_trajectories: int = 6) -> Report:
    """Structure a report of ``kind`` (``auto``: :func:`detect_kind`) from run directories."""
    opened = _open(runs)
    if kind not in ("auto", *KINDS):
        raise OpdDiagError(f"unknown report kind {kind!r}; use auto or one of {', '.join(KINDS)}")
    kind = detect_kind(opened) if kind == "auto" else kind
    names = _labels(opened, labels)
    if kind != "comparison" and len(opened) != 1:
        raise OpdDiagError(f"a {kind} report takes one run, got {len(opened)}")
    if kind == "preflight" and "verdict" not in opened[0].probes():
        raise OpdDiagError(f"{opened[0].path} has no verdict table; run `opd-diag preflight`")
    if kind == "training" and opened[0].metrics.empty:
        raise OpdDiagError(f"{opened[0].path} has no metrics.jsonl; is it an OPD loop run?")
    build = {"preflight": _preflight, "training": _training, "comparison": _comparison}[kind]
    report = build(opened, names, n_trajectories)
    report.runs = [{"label": n, **T.run_info(r)} for r, n in zip(opened, names, strict=True)]
    return report


def _trajectory_section(runs: Sequence[Run], n: int) -> Section:
    per = max(1, n // len(runs)) if n > 0 else 0
    items = [dict(t, run=T.run_label(r)) for r in runs for t in T.trajectories(r, per)]
    return Section("Trajectories: where the teacher disagrees",
                   "Each token of a sampled student completion, coloured by the OPD reward "
                   "log q(ŷₜ) − log p(ŷₜ) (teacher minus student log-prob of the sampled token): "
                   "red where the teacher finds the token unlikely, blue where it likes it more "
                   "than the student. Hover a token for its numbers.", trajectories=items)


def _preflight(runs: list[Run], names: list[str], n_traj: int) -> Report:
    run = runs[0]
    verdict, table = T.verdict(run)
    sections = [Section("Verdict", "Each condition's number against its threshold; the "
                        "recovery applies where the status is not GO.",
                        tables=[TableBlock("Conditions", table, "run.probe('verdict')")])]
    th = ((run.meta.get("preflight") or {}).get("thresholds")) or {}
    s = Section("Thinking-pattern compatibility",
                "Top-k alignment at the student's own states (paper §3.1: the initial overlap "
                "predicts whether OPD can work).",
                plots=[F.depth_profile({names[0]: T.overlap_by_depth(run)})],
                tables=[TableBlock("Run-level overlap", T.overlap_summary(run),
                                   "run.probe('overlap').query(\"level == 'run'\")"),
                        TableBlock("Reading the numbers", T.glossary(
                            [*T.overlap_summary(run).columns, "compatibility_score"]),
                            "opd_diag.core.glossary.GLOSSARY"),
                        TableBlock("Compatibility components", T.thinking_components(run),
                                   "run.probe('thinking')")])
    sections.append(s)
    cont, nov = T.continuation_by_depth(run), T.novelty_evidence(run)
    if len(cont) or len(nov):
        s = Section("Teacher novelty and horizon",
                    "Does the teacher know something at the student's states, and how deep into "
                    "the trajectory does that stay true (paper §3.2, §6.1)?")
        if len(cont):
            s.plots.append(F.continuation_advantage(cont))
        if len(nov):
            s.tables.append(TableBlock("Novelty evidence", nov, "run.probe('novelty')"))
        sections.append(s)
    auroc = T.auroc_by_depth(run)
    if len(auroc) and auroc.auroc_rbar.notna().any():
        sections.append(Section("Reward informativeness by depth", plots=[F.auroc_by_depth(auroc)]))
    reach = T.reachability(run)
    sections.append(Section(
        "Reachability", "Reverse-KL OPD moves mass only through tokens the student samples: a "
        "correction the student gives ~0 probability is out of reach.",
        plots=[F.reachability_bars(reach, th.get("unreachable_nogo"), th.get("unreachable_caution"))],
        tables=[TableBlock("Reachability by step", reach, "run.probe('reachability')")]))
    sections.append(Section("Token-level view", plots=[F.tip_quadrants(T.tip_quadrants(run))],
                            tables=[TableBlock("Teachability, teacher noise, outcome conflicts",
                                               T.token_level_other(run), "run.probe('token_level')")]))
    sections.append(_trajectory_section(runs, n_traj))
    return Report("preflight", f"Pre-flight: {names[0]}", [], sections, verdict)


def _config_table(run: Run) -> pd.DataFrame:
    cfg = run.config
    return pd.DataFrame([{"setting": k, "value": str(cfg[k])} for k in CONFIG_KEYS if k in cfg])


def _training(runs: list[Run], names: list[str], n_traj: int) -> Report:
    run, name = runs[0], names[0]
    sections = [Section("Summary", tables=[
        TableBlock("Final numbers", T.final_numbers(runs, names).set_index("run").T
                   .rename_axis("quantity").reset_index(),
                   "opd_diag.report.tables.final_numbers([run], [label]).set_index('run').T"),
        TableBlock("Configuration", _config_table(run), "run.config"),
        TableBlock("Reading the numbers", T.glossary(T.curves(run).columns),
                   "opd_diag.core.glossary.GLOSSARY")])]
    sections.append(Section("Training dynamics", "The paper's success signature: overlap ratio "
                            "rises, overlap masses stay near 1, the Eq. 7 advantage rises toward "
                            "0 and the entropy gap shrinks (§4).",
                            plots=[F.step_curves({name: T.curves(run)})]))
    ev = T.eval_curve(run)
    if len(ev):
        sections.append(Section("Evaluation", plots=[F.eval_curves({name: ev},
                                                                   {name: T.eval_baselines(run)})]))
    if len(run.states):
        depth = T.overlap_by_depth(run)
        ent = T.entropy_by_position(run)
        s = Section("Depth and position over training",
                    "Long-horizon view (§6.1): alignment per relative depth, and student entropy "
                    "per absolute position over steps (back-to-front destabilisation shows as "
                    "high entropy appearing at late positions first).",
                    plots=[F.step_heatmap(depth, "depth_bin", "overlap_ratio",
                                          "Overlap ratio by depth bin over steps", "depth_heatmap",
                                          "Overlap probe, level 'depth'.",
                                          "run.probe('overlap').query(\"level == 'depth'\")"),
                           F.step_heatmap(ent, "position_bin", "H_s",
                                          "Student entropy by position over steps",
                                          "entropy_heatmap",
                                          "Horizon probe, section 'entropy_by_position'.",
                                          "opd_diag.report.tables.entropy_by_position(run)",
                                          cmap="magma"),
                           F.depth_profile({name: depth}, "Alignment by depth: first vs last step")])
        btf = T.back_to_front(run)
        if len(btf):
            s.tables.append(TableBlock("Back-to-front detector", btf, "run.probe('horizon')"))
        sections.append(s)
    sections.append(_trajectory_section(runs, n_traj))
    return Report("training", f"Training dynamics: {name}", [], sections)


def _comparison(runs: list[Run], names: list[str], n_traj: int) -> Report:
    final = T.final_numbers(runs, names).set_index("run").T.rename_axis("quantity").reset_index()
    sections = [Section("Final numbers", tables=[TableBlock(
        "One column per run", final,
        "opd_diag.report.tables.final_numbers(runs, labels).set_index('run').T")])]
    loops = {n: T.curves(r) for r, n in zip(runs, names, strict=True) if not r.metrics.empty}
    if loops:
        sections.append(Section("Training dynamics, overlaid", plots=[F.step_curves(loops)]))
        evs = {n: T.eval_curve(r) for r, n in zip(runs, names, strict=True) if n in loops}
        if any(len(e) for e in evs.values()):
            base = {n: T.eval_baselines(r) for r, n in zip(runs, names, strict=True)}
            sections.append(Section("Evaluation, overlaid",
                                    plots=[F.eval_curves({k: v for k, v in evs.items() if len(v)},
                                                         base)]))
    depth = {}
    for r, n in zip(runs, names, strict=True):
        if len(r.states):
            d = T.overlap_by_depth(r)
            depth[n] = d[d.step == d.step.max()]
    if depth:
        sections.append(Section("Alignment by depth (last step of each run)",
                                plots=[F.depth_profile(depth, "Alignment by relative depth")]))
    verdicts = [T.verdict(r)[1].assign(run=n) for r, n in zip(runs, names, strict=True)
                if "verdict" in r.probes()]
    if verdicts:
        sections.append(Section("Pre-flight conditions", tables=[TableBlock(
            "Conditions per run", pd.concat(verdicts, ignore_index=True), "run.probe('verdict')")]))
    sections.append(_trajectory_section(runs, n_traj))
    return Report("comparison", "Comparison: " + " vs ".join(names), [], sections)
