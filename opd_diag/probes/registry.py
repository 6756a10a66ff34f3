"""The probe registry: ``register_probe`` / ``run_probe`` (the built-ins register on import of
``opd_diag.probes``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from ..core.errors import OpdDiagError
from ..core.runs import Run, RunWriter


@dataclass(frozen=True)
class ProbeSpec:
    name: str
    version: int
    fn: Callable[..., pd.DataFrame]
    summary: str


_REGISTRY: dict[str, ProbeSpec] = {}


def register_probe(name: str, version: int, summary: str = ""):
    """Decorator: register ``fn`` as probe ``name`` at ``version``."""

    def wrap(fn):
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"probe {name!r} registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = ProbeSpec(name, version, fn, summary or (doc[0] if doc else ""))
        return fn

    return wrap


def list_probes() -> list[ProbeSpec]:
    return sorted(_REGISTRY.values(), key=lambda s: s.name)


def get_probe(name: str) -> ProbeSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise OpdDiagError(
            f"unknown probe {name!r}; available: {', '.join(sorted(_REGISTRY))}"
        ) from None


def run_probe(name: str, run: Run, write: bool = True, **options) -> pd.DataFrame:
    """Run a registered probe on a run and (by default) write ``probes/<name>.parquet``."""
    spec = get_probe(name)
    df = spec.fn(run, **options)
    df.insert(0, "probe_version", spec.version)
    df.insert(0, "probe", spec.name)
    if write:
        RunWriter(run.path, run.meta).write_probe(name, df)
    return df
