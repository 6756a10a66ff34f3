"""opd-diag: will this teacher teach this student?

Diagnostics for on-policy distillation (OPD): capture both models at student-visited states,
run probes on the resulting tables, and turn them into a verdict. See README.md and DESIGN.md.
"""

from . import _compat  # noqa: F401  (old module paths keep working; see README)
from .core.errors import OpdDiagError
from .core.models import load_model, load_pair
from .core.prompts import load_prompts
from .core.runs import load_run
from .preflight import (
    BUDGETS,
    PreflightConfig,
    Thresholds,
    Verdict,
    check_ranking,
    rank_teachers,
    run_preflight,
)
from .preflight.plan import plan_preflight
from .probes import list_probes, register_probe, run_probe
from .states.backend import use_backend
from .states.capture import CaptureConfig, score_states
from .states.collect import run_capture
from .states.cost import plan_capture, plan_train
from .states.rollout import SamplingConfig
from .tasks.verify import make_verifier
from .version import __version__


def __getattr__(name: str):
    """``od.zoo`` (the model zoo: ``od.zoo.get_pair``, ``od.zoo.model_dir``, ...), imported on
    first use so that ``import opd_diag`` stays light."""
    if name == "zoo":
        import importlib

        return importlib.import_module(".zoo", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BUDGETS", "CaptureConfig", "OpdDiagError", "PreflightConfig", "SamplingConfig", "Thresholds",
    "Verdict", "check_ranking", "list_probes", "load_model", "load_pair", "load_prompts", "load_run",
    "make_verifier", "rank_teachers", "register_probe", "run_capture", "run_preflight", "run_probe",
    "score_states", "__version__", "plan_capture", "plan_preflight", "plan_train", "use_backend",
    "zoo",
]
