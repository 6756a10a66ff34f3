"""opd-diag: will this teacher teach this student?

Diagnostics for on-policy distillation (OPD): capture both models at student-visited states,
run probes on the resulting tables, and turn them into a verdict. See README.md and DESIGN.md.
"""

from .capture import CaptureConfig, score_states
from .errors import OpdDiagError
from .models import load_model, load_pair
from .pipeline import run_capture
from .probes import list_probes, register_probe, run_probe
from .prompts import load_prompts
from .rollout import SamplingConfig
from .runs import load_run

__version__ = "0.1.0"
__all__ = [
    "CaptureConfig", "OpdDiagError", "SamplingConfig", "list_probes", "load_model", "load_pair",
    "load_prompts", "load_run", "register_probe", "run_capture", "run_probe", "score_states",
]
