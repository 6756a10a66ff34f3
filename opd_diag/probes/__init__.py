"""Probes: registered, versioned functions from a run's tables to one table.

A probe is ``fn(run: Run, **options) -> pandas.DataFrame``. :func:`run_probe` adds ``probe`` and
``probe_version`` columns and writes ``probes/<name>.parquet``, so a table whose meaning changed
between versions can always be told apart.

May import ``core`` and ``tasks`` only: a probe reads tables and never loads a model, never
imports ``states`` (generations a probe needs are made by ``preflight`` through ``states``).
"""

from . import horizon, novelty, overlap, sparse, thinking, tokens  # noqa: F401  (registers the built-ins)
from .registry import ProbeSpec, get_probe, list_probes, register_probe, run_probe

__all__ = ["ProbeSpec", "get_probe", "list_probes", "register_probe", "run_probe"]
