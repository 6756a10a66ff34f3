"""Static HTML reports: compute (probes, loop) → structure (:mod:`.build`, :mod:`.tables`) →
render (:mod:`.render`, ``templates/``).

>>> from opd_diag.report import write_report
>>> write_report(["runs/pf-success"], "reports/success.html")       # kind from the run
>>> write_report(["runs/opd-a", "runs/opd-b"], "cmp.html", labels=["a", "b"])

Notebooks use the same pieces: ``tables.*(run)`` gives the numbers a report prints and
``figures.*(table)`` the figure it draws.

May import ``core``, ``probes`` and ``preflight.rules``: a report reads tables and computes nothing
that needs a model (never ``states``, ``core.models``, ``train`` or ``cli``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..core.runs import Run
from .build import KINDS, Report, Section, TableBlock, build_report, detect_kind

__all__ = ["KINDS", "Report", "Section", "TableBlock", "build_report", "detect_kind",
           "write_report"]


def write_report(runs: Sequence[str | Path | Run], out: str | Path, kind: str = "auto",
                 labels: Sequence[str] | None = None, n_trajectories: int = 6) -> Path:
    """Build and write one self-contained HTML report of ``runs`` to ``out``.

    Args:
        runs: run directories (or loaded runs); several make a comparison report.
        out: the HTML file to write.
        kind: ``auto`` | ``preflight`` | ``training`` | ``comparison``.
        labels: names of the runs in the report (default: their run ids).
        n_trajectories: trajectories shown with per-token reward colouring.
    """
    from .render import write_html

    report = build_report(runs, kind=kind, labels=labels, n_trajectories=n_trajectories)
    return write_html(report, out)
