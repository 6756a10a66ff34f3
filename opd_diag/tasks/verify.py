"""Answer checking for evaluation and cold-start filtering.

A *checker* is ``check(completion, answer) -> bool``; an *extractor* is
``extract(completion) -> str | None`` (None: the completion states no final answer). Build
both from one spec string with :func:`make_verifier`:

==================  ===========================================================================
``auto``            the last ``\\boxed{…}``, else ``#### x``, else ``Answer: x``, else nothing
``boxed``           the last ``\\boxed{…}`` (nested braces allowed), as thunlp/OPD's filter
``hash``            GSM8K style ``#### x``
``answer``          the last ``Answer: x`` line (DAPO template)
``regex:PATTERN``   the last match of PATTERN (group 1 if it has a group)
``task:NAME``       ``opd_diag.tasks.get_task(NAME)``: its ``extract_answer`` and ``check``
``module:function`` a Python function ``f(completion, answer) -> bool`` (no extraction)
==================  ===========================================================================

Extracted answers match the reference exactly after normalisation (whitespace, ``$``, trailing
period, ``\\text{}``, thousands separators) or numerically (``0.5 == 1/2 == .50``).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from ..core.errors import OpdDiagError

Extractor = Callable[[str], "str | None"]
Checker = Callable[[str, str], bool]


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{…}`` (or ``\\fbox{…}``), with balanced nested braces."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, j = 1, i
    while j < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        j += 1
    return text[i: j - 1].strip() if depth == 0 else None


def _last_match(pattern: str, text: str) -> str | None:
    found = list(re.finditer(pattern, text, flags=re.MULTILINE))
    if not found:
        return None
    m = found[-1]
    return (m.group(1) if m.groups() else m.group(0)).strip()


def extract_hash(text: str) -> str | None:
    """GSM8K's ``#### 42``."""
    return _last_match(r"####\s*([^\n]+)", text)


def extract_answer_line(text: str) -> str | None:
    """DAPO's ``Answer: 42`` (the last one)."""
    return _last_match(r"(?i)answer\s*[:：]\s*([^\n]+)", text)


def extract_auto(text: str) -> str | None:
    for extract in (extract_boxed, extract_hash, extract_answer_line):
        found = extract(text)
        if found:
            return found
    return None


def normalize_answer(ans: str) -> str:
    """Canonical text form: strip ``$``, ``\\text{}``, spaces, a trailing period, ``1,000`` commas."""
    s = ans.strip().rstrip(".").strip().strip("$").strip()
    s = re.sub(r"\\text\{([^}]*)\}", r"\1", s)
    s = s.rstrip(".").strip()
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    return re.sub(r"\s+", "", s)


def _as_number(s: str) -> Fraction | None:
    m = re.fullmatch(r"(-?\d+)/(\d+)|\\frac\{(-?\d+)\}\{(\d+)\}", s)
    try:
        if m:
            num, den = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
            return Fraction(int(num), int(den)) if int(den) else None
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def answers_match(predicted: str | None, reference: str) -> bool:
    """Exact match after :func:`normalize_answer`, or equal as numbers."""
    if predicted is None:
        return False
    a, b = normalize_answer(predicted), normalize_answer(str(reference))
    if a == b:
        return True
    x, y = _as_number(a), _as_number(b)
    return x is not None and y is not None and x == y


@dataclass
class Verifier:
    """A named extractor + checker pair built from a spec string."""

    spec: str
    extract: Extractor | None
    check: Checker


def _from_extractor(spec: str, extract: Extractor) -> Verifier:
    return _tag(Verifier(spec, extract, lambda text, ans: answers_match(extract(text), ans)))


def _tag(v: Verifier) -> Verifier:
    """Let ``v.check`` (what ``run_preflight`` receives) carry its spec and extractor, so the
    pre-flight can measure how many completions the checker parses at all."""
    v.check.spec, v.check.extract = v.spec, v.extract
    return v


MIN_EXTRACTED = 0.5
"""Below this share of parsed completions a checker is reading the wrong format."""


def extraction_report(texts: list[str], extract: Extractor, n_examples: int = 3) -> dict:
    """How many ``texts`` the extractor finds an answer in: ``n``, ``n_extracted``, ``share`` and
    up to ``n_examples`` ``(completion tail, extracted)`` examples of parsed ones."""
    found = [extract(t) for t in texts]
    ok = [(t[-80:], f) for t, f in zip(texts, found, strict=True) if f is not None]
    return {"n": len(texts), "n_extracted": len(ok),
            "share": len(ok) / len(texts) if texts else float("nan"), "examples": ok[:n_examples]}


def checkers_that_parse(texts: list[str], min_share: float = MIN_EXTRACTED) -> list[str]:
    """Built-in checkers (``auto``, ``boxed``, ``hash``, ``answer``, ``task:NAME``) that extract an
    answer from at least ``min_share`` of ``texts``, best first."""
    from . import list_tasks

    specs = ["auto", "boxed", "hash", "answer"] + [f"task:{t}" for t in list_tasks()]
    shares = []
    for spec in specs:
        v = make_verifier(spec)
        if v.extract is not None:
            share = extraction_report(texts, v.extract)["share"]
            if share >= min_share:
                shares.append((share, spec))
    return [f"{spec} ({share:.0%})" for share, spec in sorted(shares, key=lambda x: -x[0])]


def make_verifier(spec: str = "auto") -> Verifier:
    """Build a :class:`Verifier` from a spec (see the module docstring); bad specs raise."""
    simple = {"auto": extract_auto, "boxed": extract_boxed, "hash": extract_hash,
              "answer": extract_answer_line}
    if spec in simple:
        return _from_extractor(spec, simple[spec])
    if spec.startswith("regex:"):
        pattern = spec[len("regex:"):]
        try:
            re.compile(pattern)
        except re.error as exc:
            raise OpdDiagError(f"checker {spec!r}: invalid regular expression: {exc}") from None
        return _from_extractor(spec, lambda text: _last_match(pattern, text))
    if spec.startswith("task:"):
        try:
            from . import get_task
        except ImportError:
            raise OpdDiagError(f"checker {spec!r}: opd_diag.tasks is not available") from None
        task = get_task(spec[len("task:"):])
        return _tag(Verifier(spec, task.extract_answer,
                             lambda text, ans: bool(task.check(text, ans))))
    if re.fullmatch(r"[\w.]+:\w+", spec):
        module, func = spec.split(":")
        try:
            fn = getattr(importlib.import_module(module), func)
        except (ImportError, AttributeError) as exc:
            raise OpdDiagError(f"checker {spec!r}: cannot import {module}.{func}: {exc}") from None
        if not callable(fn):
            raise OpdDiagError(f"checker {spec!r}: {module}.{func} is not callable")
        return _tag(Verifier(spec, None, lambda text, ans: bool(fn(text, ans))))
    raise OpdDiagError(
        f"unknown checker {spec!r}; use auto | boxed | hash | answer | regex:PATTERN | "
        "task:NAME | module:function"
    )
