"""HTML reports from real pre-flight and OPD-loop runs on tiny models: every kind renders, the
HTML parses and is balanced, every figure is present, numbers are table cells, model text is
escaped, the file is bounded, and bad input fails with exit code 2."""

from __future__ import annotations

from html.parser import HTMLParser

import pandas as pd
import pytest
from report_runs import XSS, XSS_IMG, report_runs

from opd_diag.cli import main
from opd_diag.core.errors import OpdDiagError
from opd_diag.report import build_report, write_report
from opd_diag.report import tables as T
from opd_diag.report.render import fmt, render_html

VOID = {"meta", "img", "br", "hr", "link", "input", "col", "area", "base", "source", "wbr"}
EXPECTED = {
    "preflight": {"depth_profile", "continuation", "reachability", "tip"},
    "training": {"curves", "eval", "depth_heatmap", "entropy_heatmap", "depth_profile"},
    "comparison": {"curves", "eval", "depth_profile"},
}


class Page(HTMLParser):
    """Collects figures, images, scripts and event-handler attributes; checks tag balance."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.stack, self.errors, self.figures, self.images = [], [], [], []
        self.scripts, self.handlers, self.text = 0, [], []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "figure":
            self.figures.append(attrs.get("id", "").removeprefix("fig-"))
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        self.scripts += tag == "script"
        self.handlers += [k for k in attrs if k.startswith("on")]
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def runs():
    return report_runs()


@pytest.fixture(scope="module")
def rendered(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("reports")
    sets = {"preflight": [runs["preflight"]], "training": [runs["train_a"]],
            "comparison": [runs["train_a"], runs["train_b"], runs["preflight"]]}
    return {kind: (build_report(paths), write_report(paths, out / f"{kind}.html"))
            for kind, paths in sets.items()}


@pytest.mark.parametrize("kind", ["preflight", "training", "comparison"])
def test_every_kind_renders_parses_and_has_its_figures(rendered, kind):
    report, path = rendered[kind]
    assert report.kind == kind
    html = path.read_text()
    page = Page(html)
    assert page.errors == [] and page.stack == [], "unbalanced tags"
    assert EXPECTED[kind] <= set(page.figures), set(page.figures)
    assert sorted(page.figures) == sorted(p.name for p in report.plots)
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    assert len(page.images) == len(report.plots)
    assert page.scripts == 0 and page.handlers == []
    assert "http://" not in html and "https://" not in html, "no external assets"
    assert path.stat().st_size < 5_000_000


@pytest.mark.parametrize("kind", ["preflight", "comparison"])
def test_model_text_is_shown_as_text(rendered, kind):
    html = rendered[kind][1].read_text()
    page = Page(html)
    text = "".join(page.text)
    assert XSS in text and XSS_IMG in text  # visible as characters
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert" not in html
    assert page.scripts == 0 and page.handlers == []


def test_preflight_numbers_are_table_cells(runs, rendered):
    from opd_diag.core.runs import load_run

    run = load_run(runs["preflight"])
    verdict, table = T.verdict(run)
    html = rendered["preflight"][1].read_text()
    assert f'class="badge {verdict}"' in html
    for _, row in table.iterrows():
        assert f">{fmt(row.value)}<" in html and row.condition in html
    plots = {p.name: p for p in rendered["preflight"][0].plots}
    pd.testing.assert_frame_equal(plots["depth_profile"].table.drop(columns="run"),
                                  T.overlap_by_depth(run))
    depth = run.probe("overlap").query("level == 'depth'")
    assert plots["depth_profile"].table.overlap_ratio.tolist() == pytest.approx(
        depth.overlap_ratio.tolist())
    cont = plots["continuation"].table.set_index("depth")
    nov = run.probe("novelty").query("section == 'continuation' and metric == 'advantage'")
    assert cont.advantage.tolist() == pytest.approx(nov.value.tolist())


def test_training_report_reads_the_loop_tables(runs, rendered):
    from opd_diag.core.runs import load_run

    run = load_run(runs["train_a"])
    plots = {p.name: p for p in rendered["training"][0].plots}
    curves = plots["curves"].table
    assert curves.step.tolist() == run.metrics.step.tolist()
    for col in ("overlap_ratio", "overlap_mass_s", "overlap_mass_t", "eq7_advantage", "H_s",
                "H_t", "entropy_gap", "loss", "grad_norm"):
        assert curves[col].tolist() == pytest.approx(run.metrics[col].tolist()), col
    ev = plots["eval"].table
    assert {"greedy_acc", "greedy_gap_recovery"} <= set(ev.metric)
    # the initial student is drawn at 0 optimizer steps done, each eval row at step + 1
    acc = ev[ev.metric == "greedy_acc"]
    assert acc.steps_done.tolist() == [0, *(run.metrics.dropna(subset=["eval/greedy_acc"]).step
                                           + 1).tolist()]
    assert acc.value.iat[0] == pytest.approx(run.meta["eval_initial"]["greedy_acc"])
    assert (acc.ci_low <= acc.value + 1e-12).all() and (acc.value <= acc.ci_high + 1e-12).all()
    assert set(plots["depth_heatmap"].table.step) == set(run.states.step)
    assert {"overlap", "horizon"} <= set(run.probes())  # written by the report, readable later


def test_comparison_final_numbers(runs, rendered):
    report = rendered["comparison"][0]
    final = report.sections[0].tables[0].table.set_index("quantity")  # one column per run
    assert final.columns.tolist() == ["train_a", "train_b", "preflight"]
    assert final.loc["verdict"].notna().tolist() == [False, False, True]
    curves = {p.name: p for p in report.plots}["curves"].table
    assert set(curves.run) == {"train_a", "train_b"}


def test_labels_and_trajectory_sample(runs):
    report = build_report([runs["train_a"], runs["train_b"]], labels=["topk", "sampled"],
                          n_trajectories=4)
    assert [r["label"] for r in report.runs] == ["topk", "sampled"]
    traj = report.sections[-1].trajectories
    assert len(traj) == 4 and {t["run"] for t in traj} == {"train_a", "train_b"}
    for t in traj:
        tok = t["tokens"]
        assert (tok.reward == tok.logp_t - tok.logp_s).all() and len(tok) == t["n_tokens"]
    html = render_html(report)
    assert html.count('class="tok"') == sum(len(t["tokens"]) for t in traj)


def test_cli_writes_and_bad_input_exits_2(runs, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(runs["preflight"]), "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "x.html")]) == 2
    assert "not an opd-diag run" in capsys.readouterr().err
    assert main(["report", "--out", str(tmp_path / "x.html")]) == 2
    assert main(["report", str(runs["preflight"]), "--kind", "weekly",
                 "--out", str(tmp_path / "x.html")]) == 2
    assert main(["report", str(runs["train_a"]), "--kind", "preflight",
                 "--out", str(tmp_path / "x.html")]) == 2
    assert main(["report", str(runs["train_a"]), str(runs["train_b"]), "--label", "one",
                 "--out", str(tmp_path / "x.html")]) == 2
    assert not (tmp_path / "x.html").exists()


def test_capture_only_run_is_rejected(tiny_pair, tmp_path):
    from opd_diag.core.models import load_pair
    from opd_diag.core.prompts import validate_prompts
    from opd_diag.states.collect import run_capture
    from opd_diag.states.rollout import SamplingConfig

    run = run_capture(load_pair(*tiny_pair), validate_prompts(pd.DataFrame({"prompt": ["w1 w2"]})),
                      tmp_path / "cap", progress=False,
                      sampling=SamplingConfig(n_samples=1, max_new_tokens=4))
    with pytest.raises(OpdDiagError, match="neither a pre-flight run"):
        build_report([run])
    with pytest.raises(OpdDiagError, match="no runs"):
        build_report([])
