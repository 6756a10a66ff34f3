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
    for pair in ("success", "incompatible"):  # the runs notebooks 02-04 read by default
        assert (out / f"opd-{pair}" / "metrics.jsonl").read_text().count("\n") == 2
        assert (out / f"opd-{pair}.html").exists()
    assert (out / "preflight-comparison.html").exists() and (out / "opd-comparison.html").exists()
