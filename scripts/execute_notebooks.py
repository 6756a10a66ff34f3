"""Execute the analysis notebooks in place on `make demo`'s runs, so they are committed with their
outputs (figures included) and read on GitHub: ``python scripts/execute_notebooks.py``.

Run ``make demo`` first (the notebooks' default paths are ``runs/demo/...``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    if not (ROOT / "runs" / "demo" / "preflight-success").exists():
        print("runs/demo is missing: run `make demo` first", file=sys.stderr)
        return 2
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    for k in ("OPD_DIAG_RUN", "OPD_DIAG_RUNS"):
        os.environ.pop(k, None)
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(ROOT)}}).execute()
        for cell in nb.cells:  # environment warnings (e.g. tqdm without ipywidgets) are noise
            if cell.cell_type == "code":
                cell.outputs = [o for o in cell.outputs if not (
                    o.output_type == "stream" and o.name == "stderr" and "Warning" in o.text)]
                cell.metadata.pop("execution", None)
        nbformat.write(nb, path)
        print(f"executed {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
