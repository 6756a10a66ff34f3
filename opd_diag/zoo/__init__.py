"""The model-organism zoo: tiny HF checkpoints and teacher-student pairs that reproduce OPD's conditions.

>>> from opd_diag.zoo import get_pair, model_dir
>>> pair = get_pair("success")
>>> prompts = pair.prompts(256)           # DataFrame: prompt, answer, difficulty
>>> evals = pair.eval_sets(200)           # DataFrame: prompt, answer, subset, difficulty
>>> model_dir(pair.student)               # a standard HF directory
>>> get_pair("v2-success")               # zoo v2, the held-out testbed (opd_diag.zoo.v2)

The zoo sits on top of the library (it trains, pre-flights and validates its pairs): it may
import every stage except ``cli``.
"""

from __future__ import annotations

from .build import build_zoo, write_checkpoint
from .data import eval_set, prompt_set
from .evaluate import evaluate, generate_greedy
from .registry import (
    ZOO_DIR,
    OPDHyper,
    Pair,
    list_models,
    list_pairs,
)
from .registry import get_pair as _get_pair_v1
from .registry import model_dir as _model_dir_v1
from .registry import pairs_table as _pairs_table_v1
from .specs import MODEL_SPECS
from .specs import get_spec as _get_spec_v1
from .train import ModelSpec, train_model

# Both families behind one API: ``v2-*`` names resolve in zoo v2 (:mod:`.v2`), the rest in v1.


def get_spec(name: str) -> ModelSpec:
    """The recipe of zoo model ``name`` (v1, or zoo v2 for ``v2-*`` names)."""
    if name.startswith("v2-"):
        from .v2.specs import get_spec as get_spec_v2

        return get_spec_v2(name)
    return _get_spec_v1(name)


def model_dir(name: str, zoo_dir=None):
    """Directory of the committed model ``name`` (a standard HF model directory); ``v2-*``
    names resolve in ``opd_diag/zoo/models-v2``."""
    if name.startswith("v2-"):
        from .v2.registry import model_dir as model_dir_v2

        return model_dir_v2(name) if zoo_dir is None else model_dir_v2(name, zoo_dir)
    return _model_dir_v1(name) if zoo_dir is None else _model_dir_v1(name, zoo_dir)


def get_pair(name: str) -> Pair:
    """The pair called ``name`` (v1, or zoo v2 for ``v2-*``); raises ``OpdDiagError`` listing
    the valid names of both families."""
    from ..core.errors import OpdDiagError
    from .v2.registry import PAIRS2

    if not name.startswith("v2-"):
        try:
            return _get_pair_v1(name)
        except OpdDiagError:
            pass
    for pair in PAIRS2:
        if pair.name == name:
            return pair
    names = [p.name for p in (*list_pairs(), *PAIRS2)]
    raise OpdDiagError(f"unknown pair {name!r}; valid pairs: {', '.join(names)}")


def pairs_table(family: str = "v1"):
    """One row per pair (what ``zoo list`` shows): ``family`` ``"v1"`` (default), ``"v2"``
    (the held-out zoo v2) or ``"all"`` (both, with a ``family`` column)."""
    import pandas as pd

    from ..core.errors import OpdDiagError

    if family == "v1":
        return _pairs_table_v1()
    if family not in ("v2", "all"):
        raise OpdDiagError(f"unknown zoo family {family!r}; valid: v1, v2, all")
    from .v2.registry import pairs_table as pairs_table_v2

    if family == "v2":
        return pairs_table_v2()
    both = pd.concat([_pairs_table_v1().assign(family="v1"), pairs_table_v2().assign(family="v2")],
                     ignore_index=True)
    return both[["family", *[c for c in both.columns if c != "family"]]]

__all__ = [
    "MODEL_SPECS",
    "ModelSpec",
    "OPDHyper",
    "Pair",
    "ZOO_DIR",
    "build_zoo",
    "eval_set",
    "evaluate",
    "generate_greedy",
    "get_pair",
    "get_spec",
    "list_models",
    "list_pairs",
    "model_dir",
    "pairs_table",
    "prompt_set",
    "train_model",
    "write_checkpoint",
]
