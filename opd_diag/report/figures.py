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

# y-axis label (with units) per plotted quantity; probabilities and shares live in [0, 1]
UNITS: dict[str, str] = {
    "overlap_ratio": "|S_p ∩ S_q| / k", "overlap_mass_s": "probability mass",
    "overlap_mass_t": "probability mass", "eq7_advantage": "nats (≤ 0)", "H_s": "entropy (nats)",
    "H_t": "entropy (nats)", "entropy_gap": "nats", "rkl": "KL (nats/token)",
    "fkl": "KL (nats/token)", "loss": "loss (objective units)", "grad_norm": "L2 norm",
    "acc": "accuracy", "gap_recovery": "share of the gap",
}
BOUNDED = {"overlap_ratio", "overlap_mass_s", "overlap_mass_t", "acc"}
# the smallest y-span drawn: a 0.0005 wobble must not fill the panel and read as a crash
MIN_SPAN = {"bounded": 0.1, "nats": 0.05, "other": 0.05}


def unit_of(col: str) -> str:
    if col.endswith("_acc") or "_acc/" in col:
        return UNITS["acc"]
    if col.endswith("_gap_recovery"):
        return UNITS["gap_recovery"]
    return UNITS.get(col, col)


def sane_ylim(ax, values, col: str = "") -> None:
    """Give the panel a y-range of at least a minimum span around its data (clamped to [0, 1]
    for probabilities), so a tiny fluctuation looks tiny."""
    v = np.asarray([x for x in np.ravel(values) if np.isfinite(x)], float)
    if not len(v):
        return
    lo, hi = float(v.min()), float(v.max())
    bounded = col in BOUNDED or col.endswith("_acc") or "_acc/" in col
    span = MIN_SPAN["bounded"] if bounded else max(MIN_SPAN["other"], 0.1 * abs((lo + hi) / 2))
    if hi - lo >= span:
        pad = 0.05 * (hi - lo)
        lo, hi = lo - pad, hi + pad
    else:
        mid = (lo + hi) / 2
        lo, hi = mid - span / 2, mid + span / 2
    if bounded:  # keep the window inside [0, 1], shifting it rather than shrinking it
        if lo < 0.0:
            lo, hi = 0.0, max(hi - lo, span) if hi - lo < 1.0 else 1.0
        if hi > 1.0:
            lo, hi = max(0.0, 1.0 - max(hi - lo, span)), 1.0
    ax.set_ylim(lo, hi)


def depth_labels(bins, n_bins: int | None = None) -> list[str]:
    """Relative-depth bin ``b`` of ``n`` as the range of t/T it holds, e.g. ``0–12%``."""
    bins = [int(b) for b in bins]
    n = n_bins or (max(bins) + 1 if bins else 1)
    return [f"{100 * b // n}–{100 * (b + 1) // n}%" for b in bins]


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
        ax.set_ylabel(unit_of(cols[0]), fontsize=7)
        sane_ylim(ax, [df[c].to_numpy(float) for df in frames.values() for c in cols if c in df],
                  cols[0])
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
    n_bins = max((int(d.depth_bin.max()) + 1 for d in keep.values() if len(d)), default=1)
    for ax, (col, name) in zip(axes, metrics, strict=True):
        for i, (label, d) in enumerate(keep.items()):
            d = d.sort_values("depth_bin")
            ax.plot(d.depth_bin.astype(int), d[col], "o-", color=f"C{i}", ms=3, lw=1.2,
                    label=label)
        ax.set_xticks(range(n_bins), depth_labels(range(n_bins), n_bins), fontsize=6,
                      rotation=45 if n_bins > 6 else 0)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("relative depth t/T (bin)", fontsize=8)
        ax.set_ylabel(unit_of(col), fontsize=7)
        sane_ylim(ax, [d[col].to_numpy(float) for d in keep.values() if col in d], col)
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
    ax.set_ylabel("accuracy difference (teacher − student)", fontsize=7)
    ax2.plot(x, df.acc_teacher, "o-", label="teacher continues", color="C1")
    ax2.plot(x, df.acc_student, "o--", label="student continues", color="C2")
    ax2.set_title("Continuation accuracy", fontsize=9)
    ax2.set_xlabel("prefix depth (fraction of the student rollout)", fontsize=8)
    ax2.set_ylabel("accuracy", fontsize=7)
    ax2.set_ylim(-0.02, 1.02)
    ax2.legend(fontsize=6)
    for a in (ax, ax2):
        a.tick_params(labelsize=7)
    return Plot("continuation", "Teacher advantage from the student's own prefixes", fig, df,
                "Student rollouts truncated at each depth, continued by the teacher and by the "
                "student (paper §6.1). Where the CI reaches 0 the teacher stops paying.",
                "opd_diag.report.tables.continuation_by_depth(run)  # novelty probe")


_REACH = (("disagree_share", "teacher top-1 ≠ sampled token"),
          ("unreachable_share", "student p(teacher top-1) < 1e-3"),
          ("teacher_top1_outside_student_topk", "teacher top-1 outside student top-k"),
          ("corrective_mass_outside_share", "corrective mass outside student top-k"))


def reachability_bars(df: pd.DataFrame, nogo: float | None = None,
                      caution: float | None = None) -> Plot:
    """Left: the verdict's statistic, the share of the teacher's corrective signal out of
    reverse KL's reach, as a sensitivity curve over the gradient-ratio cutoff, with the verdict's
    lines at its cutoff. Right: descriptive shares over disagreement positions (no lines: the
    verdict does not read them). First step."""
    row = df.sort_values("step").iloc[0]
    curve = sorted(((float(c.split("@", 1)[1]), float(row[c])) for c in row.index
                    if str(c).startswith("grad_share_unreachable@") and row[c] == row[c]),
                   reverse=True)
    table = pd.DataFrame([{"metric": f"grad_share_unreachable@{c:.0e}", "cutoff": c, "value": v}
                          for c, v in curve]
                         + [{"metric": c, "cutoff": np.nan, "value": float(row[c])}
                            for c, _ in _REACH if c in row])
    fig, (left, right) = _fig(2, cols=2, h=2.6)
    if curve:
        xs, ys = zip(*curve, strict=True)
        left.plot(xs, ys, "o-", color="C0", lw=1.2, ms=4)
        left.set_xscale("log")
        left.invert_xaxis()
        cut = float(row.get("grad_ratio", np.nan))
        if cut == cut:
            left.axvline(cut, color="0.6", lw=0.8)
            left.plot([cut], [float(row["grad_share_unreachable"])], "o", color="C3", ms=6,
                      label=f"verdict statistic (cutoff {cut:g})")
        for y, style, name in ((caution, ":", "CAUTION line"), (nogo, "--", "NO-GO line")):
            if y is not None:
                left.axhline(y, color="C3", ls=style, lw=1, label=name)
        left.legend(fontsize=7, loc="upper left")
    else:
        left.text(0.5, 0.5, "no gradient-ratio curve in this run", ha="center", va="center",
                  transform=left.transAxes, fontsize=8, color="0.4")
    left.set_ylim(0, 1)
    left.set_xlabel("cutoff: reverse-KL gradient / forward-KL gradient", fontsize=8)
    left.set_ylabel("share of corrective signal below it", fontsize=8)
    left.set_title(f"Out of reach (on {row.get('measured_on', '?')})", fontsize=9)
    desc = table[table.cutoff.isna()]
    labels = [dict(_REACH)[m] for m in desc.metric]
    right.barh(labels, desc.value, color="C7")
    right.invert_yaxis()
    right.set_xlim(0, 1)
    right.set_title("Where the corrections sit (descriptive)", fontsize=9)
    right.set_xlabel("share of disagreement positions / of corrective mass", fontsize=8)
    right.set_ylabel("where the correction sits", fontsize=8)
    for ax in (left, right):
        ax.tick_params(labelsize=7)
    return Plot("reachability", "Reachability of the teacher's corrections", fig, table,
                "Left: share of the teacher's corrective signal whose reverse-KL gradient is below "
                "the cutoff times its forward-KL gradient (the verdict reads it at the marked "
                "cutoff; dotted/dashed: CAUTION / NO-GO lines). A curve that stays flat across "
                "cutoffs is a robust call. Right: descriptive shares, not read by the verdict.",
                "run.probe('reachability')")


def tip_quadrants(df: pd.DataFrame) -> Plot:
    """TIP quadrants: share of states and of total KL per (entropy, divergence) half."""
    fig, axes = _fig(2, cols=2, h=2.6)
    for ax, col, name in zip(axes, ("share", "kl_share"), ("share of states", "share of KL"),
                             strict=True):
        grid = df.pivot(index="entropy", columns="divergence", values=col).reindex(
            index=["high", "low"], columns=["low", "high"])
        values = grid.to_numpy(float)
        ax.imshow(np.ma.masked_invalid(values), cmap=_masked_cmap("Blues"), vmin=0, vmax=1)
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, "no data" if np.isnan(v) else f"{v:.2f}", ha="center", va="center",
                    fontsize=9 if np.isfinite(v) else 7, color="0.3" if np.isnan(v) else "black")
        ax.set_xticks([0, 1], ["low D", "high D"], fontsize=7)
        ax.set_yticks([0, 1], ["high H", "low H"], fontsize=7)
        ax.set_xlabel("reverse KL D (median split)", fontsize=8)
        ax.set_ylabel("student entropy H (median split)", fontsize=8)
        ax.set_title(name, fontsize=9)
    return Plot("tip", "Token quadrants: student entropy × divergence (TIP)", fig, df,
                "Median split of student entropy H and reverse KL D over the visited states.",
                "opd_diag.report.tables.tip_quadrants(run)  # token_level probe")


def _masked_cmap(name: str):
    """A colour map whose missing (masked / NaN) cells are hatched grey, outside its scale."""
    import matplotlib as mpl

    return mpl.colormaps[name].with_extremes(bad="#d9d9d9")


def auroc_by_depth(df: pd.DataFrame) -> Plot:
    """Per-bin AUROC of r̄ vs correctness against depth in tokens (the bin's mean position),
    with 95% CIs by prompt: depth-fraction bins and absolute token bins."""
    fig, (ax,) = _fig(1)
    for i, (scale, g) in enumerate(df.groupby("scale", sort=False)):
        g = g.sort_values("mean_position")
        x = g.mean_position.to_numpy(float)
        ax.plot(x, g.auroc_rbar, "o-" if scale == "tokens" else "s--", color=f"C{i}", ms=4,
                label="absolute token bins" if scale == "tokens" else "depth-fraction bins")
        if "auroc_ci_low" in g:
            ax.fill_between(x, g.auroc_ci_low.to_numpy(float), g.auroc_ci_high.to_numpy(float),
                            color=f"C{i}", alpha=0.15, lw=0)
    ax.axhline(0.5, color="grey", lw=0.8)
    ax.axhline(0.6, color="C3", lw=0.8, ls=":", label="0.6: the horizon rule's line")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.set_xlabel("depth: mean position of the bin (tokens)", fontsize=8)
    ax.set_ylabel("AUROC (0.5 = uninformative)", fontsize=7)
    ax.set_title("AUROC of r̄ per depth bin vs correctness", fontsize=9)
    return Plot("auroc", "Is the dense reward still informative at depth?", fig, df,
                "Horizon probe, sections 'auroc' (fractions) and 'auroc_tokens' (absolute tokens): "
                "per bin, not cumulative; bands: 95% CI resampling prompts (NaN where all "
                "rollouts share one outcome).",
                "opd_diag.report.tables.auroc_by_depth(run)")


def eval_curves(frames: Mapping[str, pd.DataFrame], baselines: Mapping[str, pd.DataFrame]
                ) -> Plot:
    """Held-out accuracy (95% CI where logged) and gap recovery against optimizer steps done.

    The initial student is drawn at 0 steps done (its accuracy is ``run.json``'s
    ``eval_initial``), an eval row logged at step ``s`` at ``s + 1`` (it ran after that step's
    update); the teacher is a dashed line.
    """
    fig, (acc, rec) = _fig(2, cols=2)
    rows = []
    for i, (label, ev) in enumerate(frames.items()):
        accs = [c for c in ev if c.endswith("_acc")]
        recs = [c for c in ev if c.endswith("_gap_recovery")]
        b = baselines.get(label, pd.DataFrame())
        init = b[b.model == "initial"].iloc[0] if len(b) and (b.model == "initial").any() else None
        teacher = b[b.model == "teacher"].iloc[0] if len(b) and (b.model == "teacher").any() \
            else None
        for j, c in enumerate(accs):
            x = (ev.step + 1).tolist()
            y = ev[c].tolist()
            lo = ev.get(f"{c}_ci_low", pd.Series(np.nan, index=ev.index)).tolist()
            hi = ev.get(f"{c}_ci_high", pd.Series(np.nan, index=ev.index)).tolist()
            if init is not None and c in init and pd.notna(init[c]):
                x, y = [0, *x], [float(init[c]), *y]
                lo = [float(init.get(f"{c}_ci_low", np.nan)), *lo]
                hi = [float(init.get(f"{c}_ci_high", np.nan)), *hi]
            y_, lo_, hi_ = (np.asarray(v, float) for v in (y, lo, hi))
            colour = f"C{i if len(frames) > 1 else j}"
            name = c if len(frames) == 1 else f"{label}: {c}"
            acc.plot(x, y_, "o-", ms=3, color=colour, label=name)
            if np.isfinite(lo_).any():
                acc.fill_between(x, lo_, hi_, color=colour, alpha=0.15, lw=0)
            if teacher is not None and c in teacher and pd.notna(teacher[c]):
                acc.axhline(float(teacher[c]), color=colour, lw=0.8, ls="--")
            rows += [dict(run=label, metric=c, steps_done=xx, value=v, ci_low=a, ci_high=h)
                     for xx, v, a, h in zip(x, y_, lo_, hi_, strict=True)]
        for j, c in enumerate(recs):
            x = [0, *(ev.step + 1).tolist()]
            y = [0.0, *ev[c].tolist()]
            rec.plot(x, y, "o-", ms=3, color=f"C{i if len(frames) > 1 else j}",
                     label=c if len(frames) == 1 else f"{label}: {c}")
            rows += [dict(run=label, metric=c, steps_done=xx, value=v) for xx, v in zip(x, y,
                                                                                    strict=True)]
    acc.set_title("Eval accuracy, 95% CI (dashed: teacher)", fontsize=9)
    acc.set_ylabel("accuracy", fontsize=7)
    acc.set_ylim(-0.02, 1.02)
    rec.set_title("Gap recovery (acc − acc₀) / (acc_teacher − acc₀)", fontsize=9)
    rec.set_ylabel("share of the gap (1 = teacher)", fontsize=7)
    rec.axhline(0, color="grey", lw=0.8)
    rec.axhline(1, color="grey", lw=0.8, ls="--")
    for a in (acc, rec):
        a.set_xlabel("optimizer steps done (0 = initial student)", fontsize=8)
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.tick_params(labelsize=7)
        if a.lines:
            a.legend(fontsize=6)
    return Plot("eval", "Evaluation and gap recovery", fig, pd.DataFrame(rows),
                "Held-out evaluation rows of metrics.jsonl (an eval at step s ran after that "
                "step's update); the initial student and the teacher from run.json; shaded: Wilson "
                "95% CI over eval prompts where the run logged it.",
                "opd_diag.report.tables.eval_curve(run), eval_baselines(run)")


def step_heatmap(df: pd.DataFrame, column: str, value: str, title: str, name: str,
                 caption: str, source: str, cmap: str = "viridis") -> Plot:
    """A (step × ``column``) heatmap of ``value`` (entropy by position, overlap by depth)."""
    grid = df.pivot_table(index=column, columns="step", values=value)
    fig, (ax,) = _fig(1, h=3.0)
    fig.set_size_inches(8.0, 3.0)
    values = grid.to_numpy(float)
    im = ax.imshow(np.ma.masked_invalid(values), aspect="auto", origin="lower",
                   cmap=_masked_cmap(cmap), interpolation="nearest")
    ax.set_xticks(range(grid.shape[1]), [str(s) for s in grid.columns], fontsize=6,
                  rotation=90 if grid.shape[1] > 12 else 0)
    ylabels = (depth_labels(grid.index, int(grid.index.max()) + 1) if column == "depth_bin"
               else [str(int(v)) for v in grid.index])
    ax.set_yticks(range(grid.shape[0]), ylabels, fontsize=6)
    ax.set_xlabel("step", fontsize=8)
    ax.set_ylabel({"depth_bin": "relative depth t/T", "position_bin": "position (tokens, bin start)"}
                  .get(column, column), fontsize=8)
    fig.colorbar(im, ax=ax, label=unit_of(value))
    caption = f"{caption} Grey cells: no data (outside the colour scale)."
    ax.set_title(title, fontsize=9)
    return Plot(name, title, fig, df, caption, source)
