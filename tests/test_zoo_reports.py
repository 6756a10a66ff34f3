"""The committed zoo reports are regenerated from their committed tables (no drift), and the
pre-flight verdicts agree with the measured OPD outcomes they are compared with."""

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from opd_diag.zoo.phenomena import render

REPORTS = Path(__file__).resolve().parent.parent / "reports"


def _load_benchmark():
    path = REPORTS.parent / "benchmarks" / "preflight_validation.py"
    spec = importlib.util.spec_from_file_location("preflight_validation", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(not (REPORTS / "zoo-phenomena.csv").exists(), reason="no committed report")
def test_phenomena_markdown_matches_its_tables():
    df = pd.read_csv(REPORTS / "zoo-phenomena.csv")
    val = pd.read_csv(REPORTS / "zoo-validation.csv")
    assert (REPORTS / "zoo-phenomena.md").read_text() == render(df, val)
    assert set(df.reproduced) <= {"yes", "no", "not run"}
    assert list(df.id) == list(range(1, 19))
    # the success claim in the table is the number in the validation table
    success = val.set_index("run").loc["opd-success"]
    assert f"{success['gap_recovery/5d']:.3f}" in df.set_index("id").loc[11, "ours"]


@pytest.mark.skipif(not (REPORTS / "preflight-validation.csv").exists(),
                    reason="no committed report")
def test_preflight_validation_markdown_matches_its_table():
    df = pd.read_csv(REPORTS / "preflight-validation.csv")
    assert (REPORTS / "preflight-validation.md").read_text() == _load_benchmark().render(df)
    judged = df.dropna(subset=["agrees"])
    assert len(judged) >= 5
    val = pd.read_csv(REPORTS / "zoo-validation.csv").set_index("run")
    for _, row in judged.iterrows():
        assert row.gap_recovery_5d == pytest.approx(val.loc[row.opd_run, "gap_recovery/5d"])
