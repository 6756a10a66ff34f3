"""Answer extraction and checking for evaluation and cold-start filtering."""

from __future__ import annotations

import pytest

from opd_diag.core.errors import OpdDiagError
from opd_diag.tasks.verify import answers_match, extract_boxed, make_verifier, normalize_answer


def test_boxed_takes_the_last_and_handles_nested_braces():
    assert extract_boxed(r"first \boxed{1} then \boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert extract_boxed("no box") is None
    assert extract_boxed(r"\boxed{unclosed") is None


@pytest.mark.parametrize(("spec", "text", "answer", "ok"), [
    ("auto", r"so \boxed{42}.", "42", True),
    ("auto", "work\n#### 1,234", "1234", True),
    ("auto", "Answer: $0.5$", "1/2", True),
    ("auto", "Answer: 7", "8", False),
    ("boxed", "Answer: 7", "7", False),
    ("hash", "#### 3.0", "3", True),
    ("answer", "answer: \\text{blue}.", "blue", True),
    ("regex:RESULT=(\\d+)", "RESULT=5 RESULT=6", "6", True),
    ("auto", r"\boxed{\frac{3}{4}}", "0.75", True),
])
def test_checkers(spec, text, answer, ok):
    assert make_verifier(spec).check(text, answer) is ok


def test_no_final_answer_is_none():
    v = make_verifier("auto")
    assert v.extract("I think it is five") is None


def test_task_checker_delegates_to_tasks():
    tasks = pytest.importorskip("opd_diag.tasks")
    import random

    task = tasks.get_task("addition")
    p = task.sample(random.Random(0), difficulty=2)
    text = task.render_reasoning(p, task.styles[0], random.Random(0))
    v = make_verifier("task:addition")
    assert v.check(text, p.answer) and v.extract(text) == p.answer
    with pytest.raises(OpdDiagError, match="unknown task"):
        make_verifier("task:nope")


def test_python_checker_and_bad_specs():
    v = make_verifier("operator:contains")  # contains(text, answer)
    assert v.check("the answer is 9", "9") and v.extract is None
    for bad in ("regex:(", "nosuchmodule_xyz:f", "operator:nosuchfn", "what"):
        with pytest.raises(OpdDiagError):
            make_verifier(bad)


def test_normalisation():
    assert normalize_answer(" $1,000$. ") == "1000"
    assert answers_match("  2 ", "2.0") and not answers_match(None, "2")
