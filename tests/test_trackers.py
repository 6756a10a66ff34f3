"""Optional TensorBoard / W&B mirroring of the loop's metrics rows (``--report-to``)."""

from __future__ import annotations

import importlib.util

import pytest

from opd_diag.core.errors import OpdDiagError
from opd_diag.core.models import load_pair
from opd_diag.core.prompts import load_prompts
from opd_diag.core.runs import load_run
from opd_diag.train import resolve_config, train
from opd_diag.train.trackers import parse_report_to


def test_report_to_names_are_validated():
    assert parse_report_to("none") == [] and parse_report_to("") == []
    assert parse_report_to("TensorBoard, wandb,tensorboard") == ["tensorboard", "wandb"]
    with pytest.raises(OpdDiagError, match="unknown tracker"):
        parse_report_to("tensorbored")
    with pytest.raises(OpdDiagError, match="unknown tracker"):
        resolve_config("tiny", overrides={"report_to": "mlflow"})


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                    reason="tensorboard not installed (it is in the test extras)")
def test_tensorboard_gets_every_metrics_row(tiny_pair, prompts_file, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = resolve_config("tiny", overrides={"steps": 3, "report_to": "tensorboard"})
    train(load_pair(*tiny_pair), load_prompts(prompts_file), tmp_path / "run", cfg,
          progress=False)
    run = load_run(tmp_path / "run")
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    for key in ("loss", "rkl", "overlap_ratio", "grad_norm"):
        events = acc.Scalars(key)
        assert [e.step for e in events] == run.metrics.step.tolist(), key
        assert [e.value for e in events] == pytest.approx(run.metrics[key].tolist(), rel=1e-6)


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_a_missing_tracker_package_stops_before_training(tiny_pair, prompts_file, tmp_path):
    cfg = resolve_config("tiny", overrides={"steps": 1, "report_to": "wandb"})
    with pytest.raises(OpdDiagError, match="pip install wandb"):
        train(load_pair(*tiny_pair), load_prompts(prompts_file), tmp_path / "run", cfg,
              progress=False)
    assert not (tmp_path / "run").exists()
