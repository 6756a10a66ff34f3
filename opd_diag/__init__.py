"""opd-diag: will this teacher teach this student?

Diagnostics for on-policy distillation (OPD): capture both models at student-visited states,
run probes on the resulting tables, and turn them into a verdict. See README.md and DESIGN.md.
"""

from .capture import CaptureConfig, score_states
from .errors import OpdDiagError
from .models import load_model, load_pair
from .pipeline import run_capture
from .preflight import BUDGETS, PreflightConfig, Thresholds, Verdict, run_preflight
from .probes import list_probes, register_probe, run_probe
from .prompts import load_prompts
from .rollout import SamplingConfig
from .runs import load_run
from .verify import make_verifier

__version__ = "0.1.0"
__all__ = [
    "BUDGETS", "CaptureConfig", "OpdDiagError", "PreflightConfig", "SamplingConfig", "Thresholds",
    "Verdict", "list_probes", "load_model", "load_pair", "load_prompts", "load_run",
    "make_verifier", "register_probe", "run_capture", "run_preflight", "run_probe",
    "score_states",
]
