"""Fixed prompt sets and eval sets as pandas DataFrames.

Every set is a pure function of (task, template, difficulty mixture, n, seed), so the same call gives
the same rows on every machine. Eval sets use their own seeds (``EVAL_SEED``) and are disjoint in
practice from anything a model was trained on (training draws fresh problems from other seeds; with
~10^10 possible 5-digit problems a collision is negligible).
"""

from __future__ import annotations

import random

import pandas as pd

from ..tasks import get_task

EVAL_SEED = 1234
#: the standard eval subsets: name -> difficulties drawn uniformly
SUBSETS: dict[str, tuple[int, ...]] = {"easy": (1, 2, 3), "4d": (4,), "5d": (5,)}


def prompt_set(
    task: str,
    template: str,
    mix: tuple[tuple[int, float], ...],
    n: int,
    seed: int,
) -> pd.DataFrame:
    """``n`` prompts drawn from a difficulty mixture: columns ``prompt``, ``answer``, ``difficulty``."""
    t = get_task(task)
    t.check_template(template)
    rng = random.Random(seed)
    diffs, weights = zip(*mix)
    rows = []
    for _ in range(n):
        p = t.sample(rng, rng.choices(diffs, weights)[0])
        rows.append(
            {"prompt": t.render_prompt(p, template), "answer": p.answer, "difficulty": p.difficulty}
        )
    return pd.DataFrame(rows)


def eval_set(
    task: str,
    template: str,
    n_per_subset: int = 200,
    seed: int = EVAL_SEED,
    subsets: dict[str, tuple[int, ...]] | None = None,
) -> pd.DataFrame:
    """Held-out eval set: ``n_per_subset`` problems per subset; columns ``prompt``, ``answer``,
    ``subset``, ``difficulty``. The problems do not depend on the template (same seed -> same
    numbers), so accuracies under two templates are paired."""
    t = get_task(task)
    t.check_template(template)
    frames = []
    for i, (name, diffs) in enumerate((subsets or SUBSETS).items()):
        rng = random.Random(seed * 1000 + i)
        rows = []
        for _ in range(n_per_subset):
            p = t.sample(rng, rng.choice(diffs))
            rows.append(
                {
                    "prompt": t.render_prompt(p, template),
                    "answer": p.answer,
                    "subset": name,
                    "difficulty": p.difficulty,
                }
            )
        frames.append(pd.DataFrame(rows))
    return pd.concat(frames, ignore_index=True)
