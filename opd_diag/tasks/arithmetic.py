"""Multi-digit addition with two genuinely different chain-of-thought styles.

Numbers are written digit by digit (``345`` -> ``"3 4 5"``); column sums (0-99) are single number
tokens. Every token is separated by one space, so the zoo's word-level tokenizer round-trips every
string exactly.

Styles (same final answer line, ``so the answer is 4 2 3 .``), shown for ``345 + 78``:

* ``lsd`` (style A, least significant digit first, carry written at each step)::

    start from the right . column 1 : 5 + 8 = 13 , write 3 , carry 1 . column 2 : 4 + 7 + 1 = 12 ,
    write 2 , carry 1 . column 3 : 3 + 0 + 1 = 4 , write 4 , no carry . so the answer is 4 2 3 .

* ``msd`` (style B, most significant column sums first, then a carry-resolution pass)::

    first the column sums : 3 + 0 = 3 , 4 + 7 = 11 , 5 + 8 = 13 . now the carries from the right :
    13 gives 3 carry 1 ; 11 + 1 = 12 gives 2 carry 1 ; 3 + 1 = 4 gives 4 . so the answer is 4 2 3 .

Natural variation: synonyms ("column"/"col"/"digit"/"place", "+"/"plus", "="/"is"/"makes",
"write"/"put"/"keep", ...), optional openers and optional "no carry" clauses are drawn from ``rng``.
Several tokens are therefore plausible at many positions, so a model's top-k has real structure and
its SFT loss cannot collapse to ~0 (the digits, which decide correctness, stay deterministic).

Difficulty ``d`` (1-5, or more for long variants): one operand has exactly ``d`` digits, the others
1..d digits, order random.
"""

from __future__ import annotations

import random

from .base import Problem, Task

_OPENERS = {
    "lsd": (
        "start from the right .",
        "go from right to left .",
        "add the columns from the right .",
    ),
    "msd": ("start from the left .", "go from left to right .", "add the columns from the left ."),
}
_SHARED_OPENER = "let us add ."
_COL_WORDS = ("column", "col", "digit", "place")


def digits(n: int) -> str:
    """``345`` -> ``"3 4 5"``."""
    return " ".join(str(n))


class AdditionTask(Task):
    """Add ``n_operands`` non-negative integers (see module docstring)."""

    templates = ("plain", "question")
    styles = ("lsd", "msd")

    def __init__(self, name: str = "addition", n_operands: int = 2, max_digits: int = 5) -> None:
        self.name = name
        self.n_operands = n_operands
        self.difficulties = tuple(range(1, max_digits + 1))

    # --- problems and prompts ---------------------------------------------------------------

    def sample(self, rng: random.Random, difficulty: int) -> Problem:
        self.check_difficulty(difficulty)
        lengths = [rng.randint(1, difficulty) for _ in range(self.n_operands)]
        lengths[rng.randrange(self.n_operands)] = difficulty
        ops = tuple(_number(rng, n) for n in lengths)
        return Problem(self.name, ops, str(sum(ops)), difficulty)

    def render_prompt(self, problem: Problem, template: str) -> str:
        self.check_template(template)
        if template == "plain":
            return " + ".join(digits(x) for x in problem.inputs) + " ="
        return (
            "question : what is " + " plus ".join(digits(x) for x in problem.inputs) + " ? answer :"
        )

    # --- reasoning ---------------------------------------------------------------------------

    def render_reasoning(self, problem: Problem, style: str, rng: random.Random) -> str:
        self.check_style(style)
        ops = problem.inputs
        width = max(len(str(x)) for x in ops)
        cols = [[(x // 10**i) % 10 for x in ops] for i in range(width)]  # least significant first
        parts = [_opener(style, rng)]
        body = _lsd(cols, rng) if style == "lsd" else _msd(cols, rng)
        parts += body
        parts.append(f"{rng.choice(('so', 'thus', 'hence'))} the answer is {digits(sum(ops))} .")
        return _join(*parts)

    def extract_answer(self, text: str) -> str | None:
        toks = text.split()
        for i in range(len(toks) - 2, -1, -1):
            if toks[i] == "answer" and toks[i + 1] == "is":
                out = []
                for tok in toks[i + 2 :]:
                    if len(tok) == 1 and tok.isdigit():
                        out.append(tok)
                    else:
                        break
                return "".join(out) or None
        return None

    def words(self) -> set[str]:
        rng = random.Random(0)
        seen: set[str] = set()
        for _ in range(3000):
            p = self.sample(rng, rng.choice(self.difficulties))
            for t in self.templates:
                seen.update(self.render_prompt(p, t).split())
            for s in self.styles:
                seen.update(self.render_reasoning(p, s, rng).split())
        return seen


def _join(*parts: str) -> str:
    """Join the non-empty parts with single spaces (the tokenizer's canonical form)."""
    return " ".join(p for p in parts if p)


def _number(rng: random.Random, n_digits: int) -> int:
    return (
        rng.randint(0, 9) if n_digits == 1 else rng.randint(10 ** (n_digits - 1), 10**n_digits - 1)
    )


def _opener(style: str, rng: random.Random) -> str:
    r = rng.random()
    if r < 0.25:
        return ""
    if r < 0.4:
        return _SHARED_OPENER
    return rng.choice(_OPENERS[style])


def _terms(values: list[int], rng: random.Random) -> str:
    """``4 + 7`` or ``4 plus 7`` (the operator word is drawn per step)."""
    op = " + " if rng.random() < 0.7 else " plus "
    return op.join(str(v) for v in values)


def _eq(rng: random.Random) -> str:
    r = rng.random()
    return "=" if r < 0.6 else ("is" if r < 0.8 else "makes")


def _carry_clause(carry: int, rng: random.Random) -> str:
    if carry:
        return f", carry {carry}" if rng.random() < 0.7 else f", carry the {carry}"
    r = rng.random()
    return ", no carry" if r < 0.4 else (", carry 0" if r < 0.6 else "")


def _final_carry(carry: int, rng: random.Random) -> str:
    return (
        f"write the last carry {carry} ."
        if rng.random() < 0.6
        else f"the carry {carry} goes in front ."
    )


def _lsd(cols: list[list[int]], rng: random.Random) -> list[str]:
    """Style A: one step per column from the right, each with its written digit and carry."""
    word = rng.choice(_COL_WORDS)
    steps, carry = [], 0
    for i, col in enumerate(cols, start=1):
        if rng.random() < 0.2:
            word = rng.choice(_COL_WORDS)
        total = sum(col) + carry
        if carry and rng.random() < 0.3:
            lhs = f"{_terms(col, rng)} + carry {carry}"
        else:
            lhs = _terms(col + ([carry] if carry else []), rng)
        write = rng.choice(("write", "put", "keep"))
        carry = total // 10
        steps.append(
            _join(
                f"{word} {i} : {lhs} {_eq(rng)} {total} , {write} {total % 10}",
                _carry_clause(carry, rng),
                rng.choice((".", ";")),
            )
        )
    if carry:
        steps.append(_final_carry(carry, rng))
    return steps


def _msd(cols: list[list[int]], rng: random.Random) -> list[str]:
    """Style B: column sums without carries from the left, then a carry pass from the right."""
    sums = [sum(c) for c in cols]
    first = [
        f"{_terms(c, rng)} {'=' if rng.random() < 0.7 else 'is'} {s}" for c, s in zip(cols, sums)
    ]
    intro = rng.choice(
        ("first the column sums :", "column sums first :", "first add each column :")
    )
    out = [intro + " " + " , ".join(reversed(first)) + " ."]
    out.append(
        rng.choice(
            (
                "now the carries from the right :",
                "then fix the carries from the right :",
                "next resolve the carries from the right :",
            )
        )
    )
    steps, carry = [], 0
    for s in sums:
        total = s + carry
        head = f"{s} + {carry} = {total}" if carry else f"{s}"
        carry = total // 10
        tail = (f" carry {carry}" if rng.random() < 0.7 else f" with {carry} over") if carry else ""
        steps.append(f"{head} {rng.choice(('gives', 'leaves'))} {total % 10}{tail}")
    out.append(" ; ".join(steps) + " .")
    if carry:
        out.append(_final_carry(carry, rng))
    return out
