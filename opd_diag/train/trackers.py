"""Optional experiment trackers: the loop's ``metrics.jsonl`` rows mirrored to TensorBoard / W&B.

``metrics.jsonl`` stays the record every probe, report and ``--resume`` reads; a tracker only
copies each row out (rank 0, after the row is written), so a tracker failing to import is a
clear error before training starts and never changes what the run directory holds.

``TrainConfig.report_to`` (``--report-to``) is ``none`` or a comma-separated list of
``tensorboard`` (event files under ``RUN/tensorboard/``; needs the ``tensorboard`` package) and
``wandb`` (``wandb.init(project=..., dir=RUN)``; needs ``wandb`` and a login or
``WANDB_MODE=offline``).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

from ..core.errors import OpdDiagError

TRACKERS = ("tensorboard", "wandb")


def parse_report_to(value: str) -> list[str]:
    """``"tensorboard,wandb"`` -> ``["tensorboard", "wandb"]``; ``none`` / empty -> ``[]``."""
    names = [v.strip().lower() for v in (value or "").split(",") if v.strip()]
    names = [n for n in names if n != "none"]
    bad = [n for n in names if n not in TRACKERS]
    if bad:
        raise OpdDiagError(f"--report-to: unknown tracker(s) {bad}; use none or a comma-separated "
                           f"list of {', '.join(TRACKERS)}")
    return list(dict.fromkeys(names))


def _scalars(row: dict) -> dict[str, float]:
    """The numeric, finite entries of a metrics row (``step`` is the x axis, not a scalar)."""
    out = {}
    for k, v in row.items():
        if k == "step" or isinstance(v, bool) or not isinstance(v, int | float):
            continue
        if math.isfinite(v):
            out[k] = float(v)
    return out


def require_packages(names: list[str]) -> None:
    """Fail before anything is written when a requested tracker's package is missing."""
    for name in names:
        if importlib.util.find_spec(name) is None:
            raise OpdDiagError(f"--report-to {name}: the '{name}' package is not installed; "
                               f"pip install {name} (or drop it from --report-to)")


class Trackers:
    """Forward metrics rows to the configured trackers (a no-op with none)."""

    def __init__(self, names: list[str], run_dir: str | Path, config: dict, run_name: str = ""):
        self.names, self._writers = names, []
        run_dir = Path(run_dir)
        require_packages(names)
        for name in names:
            if name == "tensorboard":
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
                writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in config.items()))
                self._writers.append(("tensorboard", writer))
            else:
                import wandb

                wrun = wandb.init(project=config.get("wandb_project") or "opd-diag",
                                  name=run_name or run_dir.name, dir=str(run_dir), config=config,
                                  resume="allow")
                self._writers.append(("wandb", wrun))

    def log(self, row: dict) -> None:
        step, scalars = int(row["step"]), _scalars(row)
        for kind, w in self._writers:
            if kind == "tensorboard":
                for k, v in scalars.items():
                    w.add_scalar(k, v, step)
                w.flush()
            else:
                w.log(scalars, step=step)

    def close(self) -> None:
        for kind, w in self._writers:
            if kind == "tensorboard":
                w.close()
            else:
                w.finish()
        self._writers = []
