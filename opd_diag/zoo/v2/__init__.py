"""Zoo v2, the held-out testbed: sort-task models with their own BPE tokenizer and recipe.

Seven pairs (``v2-success`` ... ``v2-long-horizon``) of the same kinds as v1, built on another task
(:class:`opd_diag.tasks.sorting.SortTask`), tokenizer (:mod:`.tokenizer`), architecture budget and
seeds, committed under ``opd_diag/zoo/models-v2``. They are never used to set the verdict's
thresholds. ``opd_diag.zoo.get_pair`` / ``model_dir`` / ``get_spec`` resolve ``v2-*`` names, so every
command that takes ``--pair`` works on them. Build: ``opd-diag zoo build --family v2``; OPD outcomes:
``python -m opd_diag.zoo.v2.validate`` (``reports/zoo-v2-validation.csv``).

Part of the ``zoo`` stage: may import every stage except ``cli``.
"""

from __future__ import annotations

from .registry import (
           PAIRS2,
           SUBSETS2,
           ZOO2_DIR,
           Pair2,
           get_pair,
           list_models,
           list_pairs,
           model_dir,
)
from .specs import MODEL_SPECS, get_spec

__all__ = ["MODEL_SPECS", "PAIRS2", "Pair2", "SUBSETS2", "ZOO2_DIR", "get_pair", "get_spec",
           "list_models", "list_pairs", "model_dir"]
