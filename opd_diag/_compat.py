"""Old module paths (before the 0.2 layout) keep working, with a ``FutureWarning`` naming the new one.

``import opd_diag.capture`` gives the very module object ``opd_diag.states.capture`` (so
monkeypatching either name patches both). The aliases will be removed in 0.3.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED: dict[str, str] = {
    "opd_diag.errors": "opd_diag.core.errors",
    "opd_diag.runs": "opd_diag.core.runs",
    "opd_diag.models": "opd_diag.core.models",
    "opd_diag.divergences": "opd_diag.core.divergences",
    "opd_diag.prompts": "opd_diag.core.prompts",
    "opd_diag.verify": "opd_diag.tasks.verify",
    "opd_diag.rollout": "opd_diag.states.rollout",
    "opd_diag.capture": "opd_diag.states.capture",
    "opd_diag.pipeline": "opd_diag.states.collect",
    "opd_diag.extra": "opd_diag.states.generations",
    "opd_diag.distributed": "opd_diag.states.distributed",
    "opd_diag.vllm_backend": "opd_diag.states.vllm",
    "opd_diag.ingest": "opd_diag.integrations.ingest",
    "opd_diag.preflight_cli": "opd_diag.cli.preflight",
    "opd_diag.ingest_cli": "opd_diag.cli.ingest",
    "opd_diag.demo": "opd_diag.zoo.demo",
    "opd_diag.train.cli": "opd_diag.cli.train",
    "opd_diag.report.cli": "opd_diag.cli.report",
    "opd_diag.report.examples": "opd_diag.cli.examples",
    "opd_diag.zoo.cli": "opd_diag.cli.zoo",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec):
        warnings.warn(f"{spec.name} moved to {self.new}; import it from there (the old path "
                      "is removed in opd-diag 0.3)", FutureWarning, stacklevel=3)
        return importlib.import_module(self.new)

    def exec_module(self, module) -> None:  # the target module is already executed
        pass


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new))


if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _AliasFinder())
