"""The validation report is re-derived, not re-rendered: every OPD outcome and agreement in
reports/preflight-validation.csv must follow from reports/zoo-validation.csv and the verdict's
own condition statuses under docs/validation.md's protocol (a hand-edited CSV fails)."""

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from opd_diag.preflight import VERDICTS, Thresholds

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("pv", ROOT / "benchmarks" / "preflight_validation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_outcomes_and_agreement_rederive_from_the_committed_csvs(bench):
    df = pd.read_csv(ROOT / "reports" / "preflight-validation.csv")
    outcomes = pd.read_csv(ROOT / "reports" / "zoo-validation.csv").set_index("run")
    assert (df.thresholds_version == Thresholds().version).all()
    judged = 0
    for _, r in df.iterrows():
        statuses = [str(r[c]).split(" ")[0] for c in bench.CONDITIONS if isinstance(r.get(c), str)]
        counted = [s for s in statuses if s in VERDICTS]
        verdict = max(counted, key=VERDICTS.index)
        if "truncation" in r and str(r["truncation"]).startswith("CAUTION"):
            verdict = "CAUTION"
        assert r.verdict == verdict, r.pair  # the verdict follows from its rows
        if isinstance(r.get("opd_run"), str):
            again = bench.judge({k: v for k, v in r.dropna().to_dict().items()}, outcomes)
            for col in ("outcome", "outcome_provisional", "agreement", "agreement_provisional"):
                assert again[col] == r[col], (r.pair, col)
            assert again["gap_recovery_5d"] == pytest.approx(r.gap_recovery_5d)
            judged += 1
    assert judged >= 6


def test_outcome_rules(bench):
    one = pd.DataFrame({"acc_before/5d": [0.5], "acc_after/5d": [0.86], "acc_teacher/5d": [0.95]})
    assert bench.outcome(one)["outcome_provisional"] == "worked"
    assert bench.outcome(one)["outcome"] == "undetermined"  # 1 OPD seed < 3
    three = pd.concat([one] * 3, ignore_index=True).assign(seed=[0, 1, 2])
    assert bench.outcome(three)["outcome"] == "worked"
    mid = three.assign(**{"acc_after/5d": 0.66})  # recovery 0.36: between the cut-offs
    assert bench.outcome(mid)["outcome"] == "undetermined"
    stall = three.assign(**{"acc_after/5d": 0.51})
    assert bench.outcome(stall)["outcome"] == "failed"
    assert bench.agrees("CAUTION", "failed") == "hedge"  # never counted as agreement
    assert bench.agrees("GO", "undetermined") == "undetermined"
    assert bench.agrees("NO-GO", "failed") == "agree" and bench.agrees("GO", "failed") == "disagree"
