"""The built-in OPD loop and the recovery recipes (cold start, prompt selection).

>>> from opd_diag.train import TrainConfig, train
>>> # train(load_pair(student, teacher), load_prompts(file), "runs/opd", TrainConfig(steps=100))

May import ``core``, ``tasks``, ``states`` and ``probes``; writes the same tables as a capture.
Never imports ``preflight``, ``report`` or ``cli``.
"""

from .config import PRESETS, TrainConfig, resolve_config
from .loop import init_distributed, train

__all__ = ["PRESETS", "TrainConfig", "init_distributed", "resolve_config", "train"]
