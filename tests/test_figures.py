"""Figures a reader can trust: labelled axes with units, y-ranges that do not turn noise into a
crash, depth bins as categories, missing cells outside the colour scale, eval from step 0 with
CIs, and the probe printout with counts as integers and each metric's meaning."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from report_runs import report_runs

from opd_diag.report import build_report
from opd_diag.report import figures as F


@pytest.fixture(scope="module")
def reports():
    runs = report_runs()
    return {"preflight": build_report([runs["preflight"]]),
            "training": build_report([runs["train_a"]]),
            "comparison": build_report([runs["train_a"], runs["train_b"], runs["preflight"]])}


@pytest.mark.parametrize("kind", ["preflight", "training", "comparison"])
def test_every_panel_has_axis_labels(reports, kind):
    for plot in reports[kind].plots:
        for ax in plot.figure.axes:
            if not ax.get_visible() or ax.get_label() == "<colorbar>":
                continue
            assert ax.get_xlabel().strip(), f"{plot.name}: panel {ax.get_title()!r} has no x label"
            assert ax.get_ylabel().strip(), f"{plot.name}: panel {ax.get_title()!r} has no y label"


@pytest.mark.parametrize("centre", [0.97, 0.22, 0.999, 0.0004])
def test_a_tiny_wobble_is_drawn_tiny(centre):
    ax = Figure().subplots()
    values = centre + np.array([0.0, 0.0005, -0.0003, 0.0002])
    values = np.clip(values, 0, 1)
    F.sane_ylim(ax, values, "overlap_mass_t")
    lo, hi = ax.get_ylim()
    assert hi - lo >= 0.1 - 1e-9, "a 0.0005 wobble must not fill the panel"
    assert 0.0 <= lo <= values.min() and values.max() <= hi <= 1.0


def test_unbounded_quantities_keep_their_data_and_a_minimum_span():
    ax = Figure().subplots()
    F.sane_ylim(ax, np.array([3.1, 3.1002]), "rkl")
    lo, hi = ax.get_ylim()
    assert lo < 3.1 < 3.1002 < hi and hi - lo >= 0.05
    ax = Figure().subplots()
    F.sane_ylim(ax, np.array([0.0, 2.0]), "rkl")  # a real change is shown in full
    lo, hi = ax.get_ylim()
    assert lo <= 0.0 and hi >= 2.0 and hi - lo < 2.5


def test_depth_bins_are_categories():
    df = pd.DataFrame({"step": -1, "depth_bin": range(4), "overlap_ratio": [0.5, 0.6, 0.7, 0.8]})
    plot = F.depth_profile({"run": df})
    ax = plot.figure.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["0–25%", "25–50%", "50–75%", "75–100%"]


def test_missing_heatmap_cells_are_outside_the_colour_scale():
    df = pd.DataFrame({"step": [0, 0, 1], "depth_bin": [0, 1, 0], "overlap_ratio": [0.2, 0.4, 0.3]})
    plot = F.step_heatmap(df, "depth_bin", "overlap_ratio", "t", "n", "c", "s")
    image = plot.figure.axes[0].images[0]
    data = image.get_array()
    assert np.ma.is_masked(data) and int(np.ma.getmaskarray(data).sum()) == 1  # (1, bin 1)
    cmap = image.get_cmap()
    bad = tuple(cmap.get_bad())
    assert all(bad != tuple(cmap(x)) for x in np.linspace(0, 1, 64)), "grey is on the scale"
    assert "no data" in plot.caption


def test_probe_printout_counts_are_integers_and_metrics_explained(tiny_pair, prompts_file,
                                                                  tmp_path, capsys):
    from opd_diag.cli import main

    out = tmp_path / "run"
    assert main(["--quiet", "capture", "--student", str(tiny_pair[0]), "--teacher",
                 str(tiny_pair[1]), "--prompts", str(prompts_file), "--n-samples", "2",
                 "--max-new-tokens", "6", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["probe", "overlap", str(out)]) == 0
    text = capsys.readouterr().out
    lines = {ln.split()[0]: ln for ln in text.splitlines() if ln.strip()}
    assert "step -1 = offline capture" in text
    n_states = lines["n_states"].split()[1]
    assert n_states.isdigit(), lines["n_states"]
    assert "higher is better" in lines["overlap_ratio"]
