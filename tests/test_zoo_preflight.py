"""The pre-flight verdict on every zoo pair, at the default budget, from the CLI (issue: probes
+ pre-flight). Each pair's expected verdict is its measured OPD outcome
(reports/preflight-validation.md): GO where reverse-KL OPD closed >= 50% of the 5-digit gap,
CAUTION / NO-GO where it stalled, collapsed or regressed — and the failing conditions are the
ones the pair was built to show."""

import json

import pytest

from opd_diag.cli import main

# pair -> (verdict, {condition: status} that must hold)
EXPECTED = {
    "success": ("GO", {"teacher novelty": "GO", "reachability": "GO"}),
    "out-of-reach": ("NO-GO", {"reachability": "NO-GO", "teacher novelty": "GO"}),
    "incompatible": ("NO-GO", {"thinking compatibility": "NO-GO"}),
    # the same-pipeline teacher is more accurate on the student's frontier, and OPD worked
    "no-novelty": ("GO", {"teacher novelty": "GO", "thinking compatibility": "GO"}),
    "reverse": ("NO-GO", {"teacher novelty": "NO-GO"}),
    # the template is its own condition now (its recovery is the template, not a cold start)
    "template": ("NO-GO", {"template alignment": "NO-GO", "teacher novelty": "NO-GO"}),
    "long-horizon": ("GO", {"teacher novelty": "GO"}),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPECTED))
def test_zoo_pair_verdict_matches_its_opd_outcome(name, tmp_path, capsys):
    verdict, conditions = EXPECTED[name]
    out = tmp_path / name
    code = main(["--quiet", "preflight", "--pair", name, "--out", str(out)])
    data = json.loads((out / "verdict.json").read_text())
    got = {c["condition"]: (c["status"], c["value"]) for c in data["conditions"]}
    assert data["verdict"] == verdict, (name, got)
    assert code == {"GO": 0, "CAUTION": 3, "NO-GO": 4}[verdict]
    for cond, status in conditions.items():
        assert got[cond][0] == status, (name, cond, got)
    assert f"VERDICT: {verdict}" in capsys.readouterr().out
