"""opd-diag: will this teacher teach this student?

Diagnostics for on-policy distillation (OPD): capture both models at student-visited states,
run probes on the resulting tables, and turn them into a verdict. See README.md and DESIGN.md.
"""

from . import _compat  # noqa: F401  (old module paths keep working; see README)
from .core.errors import OpdDiagError
from .core.models import load_model, load_pair
from .core.prompts import load_prompts
from .core.runs import load_run
from .preflight import BUDGETS, PreflightConfig, Thresholds, Verdict, run_preflight
from .probes import list_probes, register_probe, run_probe
from .states.capture import CaptureConfig, score_states
from .states.collect import run_capture
from .states.rollout import SamplingConfig
from .tasks.verify import make_verifier
from .version import __version__

__all__ = [
    "BUDGETS", "CaptureConfig", "OpdDiagError", "PreflightConfig", "SamplingConfig", "Thresholds",
    "Verdict", "list_probes", "load_model", "load_pair", "load_prompts", "load_run",
    "make_verifier", "register_probe", "run_capture", "run_preflight", "run_probe",
    "score_states", "__version__",
]
