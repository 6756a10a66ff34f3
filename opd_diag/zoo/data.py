"""Fixed prompt sets and eval sets as pandas DataFrames.

Every set is a pure function of (task, template, difficulty mixture, n, seed), so the same call gives
the same rows on every machine. Eval sets use their own seeds (``EVAL_SEED``) and are disjoint in
practice from anything a model was trained on (training draws fresh problems from other seeds; with
~10^10 possible 5-digit problems a collision is negligible).
"""

from __future__ import annotations

import random

import pandas as pd

from ..tasks import Task, get_task

EVAL_SEED = 1234
#: OPD prompt pools by *content* for the content-alignment runs (the paper's phenomenon #17):
#: name -> (operands, difficulty mixture). ``teacher`` is teacher-a's own training content (two
#: operands, 1-5 digits uniform: its "RL data"); ``three-operand`` is the same skill on content
#: no zoo model was trained on (three operands, 1-5 digits), our counterpart of the paper's
#: DeepMath prompts deduplicated against the teacher's DAPO data (no three-operand problem can
#: occur in a two-operand training stream). Both are scored on the same two-operand eval sets.
CONTENT_POOLS: dict[str, tuple[int, tuple[tuple[int, float], ...]]] = {
    "teacher": (2, ((1, 1.0), (2, 1.0), (3, 1.0), (4, 1.0), (5, 1.0))),
    "three-operand": (3, ((1, 1.0), (2, 1.0), (3, 1.0), (4, 1.0), (5, 1.0))),
}
#: the standard eval subsets: name -> difficulties drawn uniformly
SUBSETS: dict[str, tuple[int, ...]] = {"easy": (1, 2, 3), "4d": (4,), "5d": (5,)}


def prompt_set(
    task: str | Task,
    template: str,
    mix: tuple[tuple[int, float], ...],
    n: int,
    seed: int,
) -> pd.DataFrame:
    """``n`` prompts drawn from a difficulty mixture: columns ``prompt``, ``answer``, ``difficulty``.

    ``task``: a registered task's name or a :class:`~opd_diag.tasks.Task` instance."""
    t = get_task(task) if isinstance(task, str) else task
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


def content_prompt_set(content: str, template: str, n: int, seed: int) -> pd.DataFrame:
    """``n`` addition prompts of one :data:`CONTENT_POOLS` pool (columns as :func:`prompt_set`)."""
    from ..core.errors import OpdDiagError
    from ..tasks import AdditionTask

    if content not in CONTENT_POOLS:
        raise OpdDiagError(f"unknown content pool {content!r}; valid pools: "
                           f"{', '.join(CONTENT_POOLS)}")
    operands, mix = CONTENT_POOLS[content]
    task = AdditionTask(f"addition-{operands}op", n_operands=operands, max_digits=5)
    return prompt_set(task, template, mix, n, seed)


#: zoo-v2 content pools (:mod:`opd_diag.zoo.v2.content`): pool name -> what its prompts are
V2_CONTENT_POOLS = {
    "aligned": "the pair's own prompts (v2-teacher-a's content: distinct numbers)",
    "unaligned": "the same lengths with one number repeated (no zoo-v2 model saw repeats)",
}


def v2_content_prompts(pair, pool: str, n: int = 1024, seed: int = 0) -> pd.DataFrame:
    """``n`` OPD prompts of the :data:`V2_CONTENT_POOLS` pool ``pool`` for the zoo-v2 ``pair``
    (columns of ``pair.prompts``)."""
    from ..core.errors import OpdDiagError
    from ..tasks.sorting import SortTask

    if pool not in V2_CONTENT_POOLS:
        raise OpdDiagError(f"unknown zoo-v2 content pool {pool!r}; valid pools: "
                           f"{', '.join(V2_CONTENT_POOLS)}")
    if pool == "aligned":
        return pair.prompts(n, seed=seed)
    return prompt_set(SortTask("sort-repeats", repeats=True), pair.template, pair.opd_mix, n, seed)


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
