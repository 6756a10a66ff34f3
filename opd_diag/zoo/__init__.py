"""The model-organism zoo: tiny HF checkpoints and teacher-student pairs that reproduce OPD's conditions.

>>> from opd_diag.zoo import get_pair, model_dir
>>> pair = get_pair("success")
>>> prompts = pair.prompts(256)           # DataFrame: prompt, answer, difficulty
>>> evals = pair.eval_sets(200)           # DataFrame: prompt, answer, subset, difficulty
>>> model_dir(pair.student)               # a standard HF directory

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
    get_pair,
    list_models,
    list_pairs,
    model_dir,
    pairs_table,
)
from .specs import MODEL_SPECS, get_spec
from .train import ModelSpec, train_model

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
