"""Figures: one function per figure, table in → :class:`Plot` (matplotlib Figure + that table).

Each function draws exactly the table it returns, so the report can print the numbers under the
image and a notebook can read them. Figures are built on ``matplotlib.figure.Figure`` directly
(no ``pyplot`` global state) and render with the Agg canvas; functions that compare runs take a
``{label: table}`` mapping and overlay one line per run.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib

if "matplotlib.pyplot" not in sys.modules:  # headless by default; a notebook's inline backend stays
    matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .tables import CURVE_PANELS  # noqa: E402

_DEPTH_METRICS = (("overlap_ratio", "overlap ratio"), ("overlap_mass_s", "overlap mass (student)"),
                  ("overlap_mass_t", "overlap mass (teacher)"), ("eq7_advantage", "Eq. 7 advantage"),
                  ("entropy_gap", "entropy gap"), ("rkl", "reverse KL"))
_STYLE = {"_s": "-", "_t": "--"}


@dataclass
class Plot:
    """A figure and the table it plots (``source`` says where a notebook finds that table)."""

    name: str
    title: str
    figure: Figure
    table: pd.DataFrame
    caption: str = ""
    source: str = ""


def _fig(n_panels: int = 1, cols: int = 2, h: float = 2.6) -> tuple[Figure, list]:
    cols = min(cols, n_panels)
    rows = int(np.ceil(n_panels / cols))
    fig = Figure(figsize=(4.4 * cols, h * rows), dpi=90, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _stack(frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    parts = [df.assign(run=label) for label, df in frames.items() if len(df)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _linestyle(col: str) -> str:
    return next((s for suffix, s in _STYLE.items() if col.endswith(suffix)), "-")


def step_curves(frames: Mapping[str, pd.DataFrame],
                panels: Sequence[tuple[str, Sequence[str]]] = CURVE_PANELS) -> Plot:
    """Loop scalars over steps, one panel per quantity; one colour per run, dashed = teacher."""
    present = [(t, [c for c in cols if any(c in df for df in frames.values())])
               for t, cols in panels]
    present = [(t, cols) for t, cols in present if cols]
    fig, axes = _fig(max(1, len(present)), cols=4, h=2.4)
    fig.set_size_inches(12.5, 2.4 * int(np.ceil(len(present) / 4)))
    for ax, (title, cols) in zip(axes, present, strict=False):
        for i, (label, df) in enumerate(frames.items()):
            for col in cols:
                if col in df and df[col].notna().any():
                    d = df[["step", col]].dropna()
                    name = col if len(frames) == 1 else f"{label}: {col}"
                    ax.plot(d.step, d[col], _linestyle(col), color=f"C{i}" if len(frames) > 1
                            else f"C{cols.index(col)}", lw=1.4, label=name)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        if ax.lines and (len(cols) > 1 or len(frames) > 1):
            ax.legend(fontsize=6)
    table = _stack(frames)
    return Plot("curves", "Training dynamics over steps", fig, table,
                "Loop scalars logged every step (metrics.jsonl); per-state means over the batch.",
                "run.metrics")


def depth_profile(frames: Mapping[str, pd.DataFrame], title: str = "Alignment by relative depth"
                  ) -> Plot:
    """Overlap metrics per relative-depth bin (t/T) at the first and last logged step."""
    keep = {}
    for label, df in frames.items():
        steps = sorted(df.step.unique())
        for s in dict.fromkeys([steps[0], steps[-1]]) if steps else []:
            keep[f"{label} @ step {s}" if s >= 0 else label] = df[df.step == s]
    metrics = [(c, n) for c, n in _DEPTH_METRICS if any(c in d for d in keep.values())]
    fig, axes = _fig(len(metrics), cols=3, h=2.3)
    for ax, (col, name) in zip(axes, metrics, strict=True):
        for i, (label, d) in enumerate(keep.items()):
            ax.plot(d.depth_bin, d[col], "o-", color=f"C{i}", ms=3, lw=1.2, label=label)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("depth bin (t/T)", fontsize=8)
        ax.tick_params(labelsize=7)
    if len(keep) > 1:
        axes[0].legend(fontsize=6)
    table = _stack(keep)
    return Plot("depth_profile", title, fig, table,
                "Overlap probe, level 'depth': per-state means in equal bins of relative depth t/T.",
                "run.probe('overlap').query(\"level == 'depth'\")")


def continuation_advantage(df: pd.DataFrame) -> Plot:
    """Teacher-minus-student continuation accuracy by prefix depth, bootstrap 95% CI."""
    fig, (ax, ax2) = _fig(2, cols=2)
    x = df.depth.astype(float)
    ax.errorbar(x, df.advantage, yerr=[df.advantage - df.ci_low, df.ci_high - df.advantage],
                fmt="o-", capsize=3, color="C0")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_title("Teacher continuation advantage (95% CI)", fontsize=9)
    ax.set_xlabel("prefix depth (fraction of the student rollout)", fontsize=8)
    ax2.plot(x, df.acc_teacher, "o-", label="teacher continues", color="C1")
    ax2.plot(x, df.acc_student, "o--", label="student continues", color="C2")
    ax2.set_title("Continuation accuracy", fontsize=9)
    ax2.set_xlabel("prefix depth", fontsize=8)
    ax2.legend(fontsize=6)
    for a in (ax, ax2):
        a.tick_params(labelsize=7)
    return Plot("continuation", "Teacher advantage from the student's own prefixes", fig, df,
                "Student rollouts truncated at each depth, continued by the teacher and by the "
                "student (paper §6.1). Where the CI reaches 0 the teacher stops paying.",
                "opd_diag.report.tables.continuation_by_depth(run)  # novelty probe")


_REACH = (("disagree_share", "teacher top-1 ≠ sampled token"),
          ("unreachable_share", "unreachable (p_s(top-1) < 1e-3)"),
          ("teacher_top1_outside_student_topk", "teacher top-1 outside student top-k"),
          ("corrective_mass_outside_share", "corrective mass outside student top-k"),
          ("rkl_share_unreachable", "share of KL at unreachable states"))


def reachability_bars(df: pd.DataFrame, nogo: float | None = None,
                      caution: float | None = None) -> Plot:
    """Reachability shares at the first step, with the verdict's thresholds on unreachable."""
    row = df.sort_values("step").iloc[0]
    table = pd.DataFrame([{"metric": c, "label": n, "value": float(row[c])} for c, n in _REACH
                          if c in row])
    fig, (ax,) = _fig(1, h=2.4)
    fig.set_size_inches(7.5, 2.4)
    ax.barh(table.label, table.value, color=["C7", "C3", "C1", "C1", "C3"][: len(table)])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    for x, style in ((caution, ":"), (nogo, "--")):
        if x is not None:
            ax.axvline(x, color="C3", ls=style, lw=1)
    ax.set_title("Where the teacher's corrections sit for the student", fontsize=9)
    ax.tick_params(labelsize=7)
    return Plot("reachability", "Reachability of the teacher's corrections", fig, table,
                "Shares over disagreement positions (first step). Dotted/dashed lines: the "
                "CAUTION / NO-GO thresholds on the unreachable share.",
                "run.probe('reachability')")


def tip_quadrants(df: pd.DataFrame) -> Plot:
    """TIP quadrants: share of states and of total KL per (entropy, divergence) half."""
    fig, axes = _fig(2, cols=2, h=2.6)
    for ax, col, name in zip(axes, ("share", "kl_share"), ("share of states", "share of KL"),
                             strict=True):
        grid = df.pivot(index="entropy", columns="divergence", values=col).reindex(
            index=["high", "low"], columns=["low", "high"])
        ax.imshow(grid.to_numpy(float), cmap="Blues", vmin=0, vmax=1)
        for (i, j), v in np.ndenumerate(grid.to_numpy(float)):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=9)
        ax.set_xticks([0, 1], ["low D", "high D"], fontsize=7)
        ax.set_yticks([0, 1], ["high H", "low H"], fontsize=7)
        ax.set_title(name, fontsize=9)
    return Plot("tip", "Token quadrants: student entropy × divergence (TIP)", fig, df,
                "Median split of student entropy H and reverse KL D over the visited states.",
                "opd_diag.report.tables.tip_quadrants(run)  # token_level probe")


def auroc_by_depth(df: pd.DataFrame) -> Plot:
    """AUROC of the sequence-mean reward r̄ (positions up to each depth bin) vs correctness."""
    fig, (ax,) = _fig(1)
    ax.plot(df.depth_bin, df.auroc_rbar, "o-")
    ax.axhline(0.5, color="grey", lw=0.8)
    ax.set_ylim(0, 1)
    ax.set_xlabel("depth bin (positions up to)", fontsize=8)
    ax.set_title("AUROC of r̄ vs correctness", fontsize=9)
    return Plot("auroc", "Is the dense reward still informative at depth?", fig, df,
                "Horizon probe, section 'auroc' (NaN where all rollouts share one outcome).",
                "opd_diag.report.tables.auroc_by_depth(run)")


def eval_curves(frames: Mapping[str, pd.DataFrame], baselines: Mapping[str, pd.DataFrame]
                ) -> Plot:
    """Held-out accuracy and gap recovery over steps; teacher / initial student as lines."""
    fig, (acc, rec) = _fig(2, cols=2)
    for i, (label, ev) in enumerate(frames.items()):
        accs = [c for c in ev if c.endswith("_acc")]
        recs = [c for c in ev if c.endswith("_gap_recovery")]
        for c in accs:
            acc.plot(ev.step, ev[c], "o-", ms=3, color=f"C{i}", label=f"{label}: {c}")
        for c in recs:
            rec.plot(ev.step, ev[c], "o-", ms=3, color=f"C{i}", label=f"{label}: {c}")
        b = baselines.get(label, pd.DataFrame())
        for _, r in b.iterrows():
            for c in accs:
                if c in r and pd.notna(r[c]):
                    acc.axhline(r[c], color=f"C{i}", lw=0.8,
                                ls="--" if r["model"] == "teacher" else ":")
    acc.set_title("Eval accuracy (dashed: teacher, dotted: initial student)", fontsize=9)
    rec.set_title("Gap recovery (acc − acc₀) / (acc_teacher − acc₀)", fontsize=9)
    rec.axhline(0, color="grey", lw=0.8)
    for a in (acc, rec):
        a.set_xlabel("step", fontsize=8)
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.tick_params(labelsize=7)
        if a.lines:
            a.legend(fontsize=6)
    table = _stack(frames)
    return Plot("eval", "Evaluation and gap recovery", fig, table,
                "Held-out evaluation rows of metrics.jsonl; baselines from run.json.",
                "opd_diag.report.tables.eval_curve(run), eval_baselines(run)")


def step_heatmap(df: pd.DataFrame, column: str, value: str, title: str, name: str,
                 caption: str, source: str, cmap: str = "viridis") -> Plot:
    """A (step × ``column``) heatmap of ``value`` (entropy by position, overlap by depth)."""
    grid = df.pivot_table(index=column, columns="step", values=value)
    fig, (ax,) = _fig(1, h=3.0)
    fig.set_size_inches(8.0, 3.0)
    im = ax.imshow(grid.to_numpy(float), aspect="auto", origin="lower", cmap=cmap,
                   interpolation="nearest")
    ax.set_xticks(range(grid.shape[1]), [str(s) for s in grid.columns], fontsize=6,
                  rotation=90 if grid.shape[1] > 12 else 0)
    ax.set_yticks(range(grid.shape[0]), [str(int(v)) for v in grid.index], fontsize=6)
    ax.set_xlabel("step", fontsize=8)
    ax.set_ylabel(column, fontsize=8)
    fig.colorbar(im, ax=ax, label=value)
    ax.set_title(title, fontsize=9)
    return Plot(name, title, fig, df, caption, source)
