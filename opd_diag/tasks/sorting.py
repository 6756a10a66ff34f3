"""Sorting a list of two-digit numbers, with two genuinely different chain-of-thought styles.

The task of zoo v2 (the held-out testbed): not digit arithmetic, longer reasoning (quadratic in the
list length), its own BPE tokenizer (:mod:`opd_diag.zoo.v2.tokenizer`). Values are distinct numbers
10-99 written as words (``"47"``); every token is separated by one space (canonical form).

Styles (same final answer line ``so the answer is 12 35 47 .``), shown for ``47 12 35``:

* ``select`` (style A, selection sort: the smallest of what is left, then what is sorted so far)::

    smallest of 47 12 35 is 12 , so far 12 . smallest of 47 35 is 35 , so far 12 35 .
    smallest of 47 is 47 , so far 12 35 47 . so the answer is 12 35 47 .

* ``insert`` (style B, insertion sort: each input number in turn goes into a sorted list)::

    insert 47 into nothing gives 47 . insert 12 into 47 gives 12 47 .
    insert 35 into 12 47 gives 12 35 47 . so the answer is 12 35 47 .

Natural variation: synonyms ("smallest"/"least"/"lowest"/"minimum", "of"/"among"/"in",
"so far"/"done"/"sorted", "insert"/"put"/"place", "gives"/"makes"/"is now"), optional openers and
separators are drawn from ``rng``; the numbers, which decide correctness, stay deterministic.

Difficulty ``n`` (2-12): the list length. Traces grow as ~n^2: about 30 words at n=3, 200-250 at
n=11-12 (tokens under the v2 BPE tokenizer: see ``opd_diag/zoo/models-v2/README.md``).
"""

from __future__ import annotations

import random

from .base import Problem, Task

LOW, HIGH = 10, 99
_OPENERS = {
    "select": ("take the smallest each time .", "pick the smallest first .", "select step by step ."),
    "insert": ("insert one number at a time .", "build the list one by one .", "place each number ."),
}
_SHARED_OPENER = "let us sort ."
_SMALLEST = ("smallest", "least", "lowest", "minimum")
_OF = ("of", "among", "in")
_SO_FAR = ("so far", "done", "sorted")
_INSERT = ("insert", "put", "place")
_GIVES = ("gives", "makes", "is now")


class SortTask(Task):
    """Sort ``n`` distinct two-digit numbers ascending (see module docstring).

    ``repeats=True`` draws lists in which exactly one number appears twice (``n - 1`` distinct
    numbers, one of them repeated at a random place): content no zoo-v2 model was trained on,
    the unaligned prompt pool of the content-alignment runs (:mod:`opd_diag.zoo.v2.content`).
    """

    templates = ("plain", "question")
    styles = ("select", "insert")

    def __init__(self, name: str = "sort", max_len: int = 12, repeats: bool = False) -> None:
        self.name = name
        self.repeats = repeats
        self.difficulties = tuple(range(2, max_len + 1))

    def sample(self, rng: random.Random, difficulty: int) -> Problem:
        self.check_difficulty(difficulty)
        if self.repeats:
            values = rng.sample(range(LOW, HIGH + 1), difficulty - 1)
            values.insert(rng.randrange(difficulty), rng.choice(values))
            values = tuple(values)
        else:
            values = tuple(rng.sample(range(LOW, HIGH + 1), difficulty))
        return Problem(self.name, values, " ".join(map(str, sorted(values))), difficulty)

    def render_prompt(self, problem: Problem, template: str) -> str:
        self.check_template(template)
        nums = " ".join(map(str, problem.inputs))
        if template == "plain":
            return f"sort : {nums} ="
        return f"question : put {nums} in order ? answer :"

    def render_reasoning(self, problem: Problem, style: str, rng: random.Random) -> str:
        self.check_style(style)
        values = list(problem.inputs)
        parts = [_opener(style, rng)]
        parts += _select(values, rng) if style == "select" else _insert(values, rng)
        parts.append(f"{rng.choice(('so', 'thus', 'hence'))} the answer is {problem.answer} .")
        return " ".join(p for p in parts if p)

    def extract_answer(self, text: str) -> str | None:
        toks = text.split()
        for i in range(len(toks) - 2, -1, -1):
            if toks[i] == "answer" and toks[i + 1] == "is":
                out = []
                for tok in toks[i + 2 :]:
                    if tok.isdigit():
                        out.append(tok)
                    else:
                        break
                return " ".join(out) or None
        return None

    def words(self) -> set[str]:
        rng = random.Random(0)
        seen: set[str] = set()
        for _ in range(2000):
            p = self.sample(rng, rng.choice(self.difficulties))
            for t in self.templates:
                seen.update(self.render_prompt(p, t).split())
            for s in self.styles:
                seen.update(self.render_reasoning(p, s, rng).split())
        return seen


def _opener(style: str, rng: random.Random) -> str:
    r = rng.random()
    if r < 0.25:
        return ""
    if r < 0.4:
        return _SHARED_OPENER
    return rng.choice(_OPENERS[style])


def _nums(values: list[int]) -> str:
    return " ".join(map(str, values))


def _select(values: list[int], rng: random.Random) -> list[str]:
    """Style A: the smallest of what is left, removed, and the sorted prefix so far."""
    left, done, steps = list(values), [], []
    word = rng.choice(_SMALLEST)
    for _ in range(len(values)):
        if rng.random() < 0.2:
            word = rng.choice(_SMALLEST)
        m = min(left)
        steps.append(
            f"{word} {rng.choice(_OF)} {_nums(left)} is {m} , {rng.choice(_SO_FAR)} "
            f"{_nums(done + [m])} {rng.choice(('.', ';'))}"
        )
        left.remove(m)
        done.append(m)
    return steps


def _insert(values: list[int], rng: random.Random) -> list[str]:
    """Style B: each number, in input order, inserted into the sorted list built so far."""
    done: list[int] = []
    steps = []
    verb = rng.choice(_INSERT)
    for v in values:
        if rng.random() < 0.2:
            verb = rng.choice(_INSERT)
        before = _nums(done) if done else "nothing"
        done = sorted(done + [v])
        steps.append(
            f"{verb} {v} into {before} {rng.choice(_GIVES)} {_nums(done)} {rng.choice(('.', ';'))}"
        )
    return steps
