"""`make demo` end to end on the zoo, shortened (2 OPD steps)."""

import pytest

from opd_diag.cli import main


@pytest.mark.slow
def test_demo_runs_on_the_zoo(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["--quiet", "demo", "--out", str(out), "--steps", "2"]) == 0
    text = capsys.readouterr().out
    for pair in ("success", "incompatible", "out-of-reach"):
        assert f"pre-flight {pair!r}" in text
        assert (out / f"preflight-{pair}.html").stat().st_size > 10_000
    assert "VERDICT:" in text
    assert (out / "opd-success" / "metrics.jsonl").read_text().count("\n") == 2
    assert (out / "opd-success.html").exists() and (out / "preflight-comparison.html").exists()
