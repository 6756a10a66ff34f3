"""Every analysis notebook runs top to bottom (nbclient, the venv's python3 kernel) against small
runs made in this session, and is committed with its outputs (executed on `make demo`'s runs)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from report_runs import report_runs

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_the_five_notebooks_exist():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_with_outputs_that_read_on_github(path):
    """Committed executed (on `make demo`'s runs, `scripts/execute_notebooks.py`): every cell ran
    in order without an error, and every cell that displays a figure holds its PNG."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), path.name
    for cell in code:
        assert not [o for o in cell.outputs if o.output_type == "error"], path.name
        if ".figure)" in cell.source:
            pngs = [o for o in cell.outputs if "image/png" in o.get("data", {})]
            assert pngs, f"{path.name}: a figure cell has no image output"
    assert any(c.cell_type == "markdown" and "What to look for" in c.source for c in nb.cells), \
        f"{path.name}: no 'What to look for' guidance"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, monkeypatch, tmp_path):
    runs = report_runs()
    monkeypatch.setenv("OPD_DIAG_RUN", str(runs["preflight"]))
    monkeypatch.setenv("OPD_DIAG_RUNS", f"{runs['train_a']},{runs['train_b']}")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError with the failing cell's traceback
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert errors == []
    assert os.environ["OPD_DIAG_RUN"] == str(runs["preflight"])
