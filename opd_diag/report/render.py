"""Render: a structured :class:`~opd_diag.report.build.Report` → one self-contained HTML file.

Jinja2 with ``autoescape=True``: every string that reaches the page — model completions, prompts,
token texts, run ids, paths — is escaped, and no template marks anything ``|safe``. Figures become
PNG ``data:`` URIs, the CSS is inline, and a Content-Security-Policy forbids scripts and any
network fetch, so the file can be mailed or attached to a PR and opens the same offline.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined
from matplotlib.figure import Figure

from ..core.runs import _atomic_write_bytes
from .build import Report

MAX_ROWS = 300
"""Tables longer than this show their first and last ``MAX_ROWS // 2`` rows (the page says so
and names the table a notebook reads in full); this bounds the file size on long runs."""
REWARD_CLIP = 3.0
"""Nats at which the token colour saturates."""


def figure_data_uri(fig: Figure, dpi: int = 90) -> str:
    """The figure as a ``data:image/png;base64,…`` URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def fmt(value) -> str:
    """Cell formatting: 4 significant digits, integers as integers, NaN/None as an em dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return str(int(v)) if v.is_integer() and abs(v) < 1e12 else f"{v:.4g}"
    if isinstance(value, (list, tuple, np.ndarray)):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    return str(value)


def reward_style(reward: float) -> str:
    """Inline background colour of a token: red (teacher disagrees) ↔ blue (teacher agrees)."""
    if reward is None or not np.isfinite(reward):
        return ""
    a = min(abs(float(reward)) / REWARD_CLIP, 1.0) * 0.75
    rgb = "220, 50, 47" if reward < 0 else "38, 110, 210"
    return f"background-color: rgba({rgb}, {a:.2f})"


def table_view(df: pd.DataFrame, max_rows: int = MAX_ROWS) -> dict:
    """Columns and rows (raw values; the template formats them), truncated for long tables."""
    n = len(df)
    shown = df if n <= max_rows else pd.concat([df.head(max_rows // 2), df.tail(max_rows // 2)])
    rows = [list(r) for r in shown.itertuples(index=False, name=None)]
    return {"columns": [str(c) for c in df.columns], "rows": rows, "n_rows": n,
            "truncated": n > max_rows}


def environment() -> Environment:
    env = Environment(loader=PackageLoader("opd_diag.report", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(fmt=fmt, reward_style=reward_style, table_view=table_view,
                       data_uri=figure_data_uri)
    return env


def render_html(report: Report) -> str:
    """The report as an HTML string."""
    from ..version import __version__

    return environment().get_template("report.html.j2").render(report=report, version=__version__)


def write_html(report: Report, out: str | Path) -> Path:
    """Render ``report`` and write it atomically to ``out``."""
    out = Path(out)
    data = render_html(report).encode("utf-8")
    _atomic_write_bytes(out, lambda tmp: tmp.write_bytes(data))
    return out
