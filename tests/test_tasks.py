"""Tasks: rendering, verification and the registry."""

from __future__ import annotations

import random

import pytest

from opd_diag.tasks import AdditionTask, Problem, Task, get_task, list_tasks, register_task

TASK = get_task("addition")


def problems(n: int = 60, seed: int = 0) -> list[Problem]:
    rng = random.Random(seed)
    return [
        TASK.sample(rng, d) for d in TASK.difficulties for _ in range(n // len(TASK.difficulties))
    ]


def test_builtin_task_is_registered() -> None:
    assert "addition" in list_tasks()
    assert set(TASK.styles) >= {"lsd", "msd"} and len(TASK.templates) >= 2


@pytest.mark.parametrize("style", TASK.styles)
def test_reasoning_checks_for_every_style(style: str) -> None:
    rng = random.Random(1)
    for p in problems():
        text = TASK.render_reasoning(p, style, rng)
        assert TASK.extract_answer(text) == p.answer == str(sum(p.inputs))
        assert TASK.check(text, p.answer)
        assert not TASK.check(text, str(int(p.answer) + 1))


@pytest.mark.parametrize("template", TASK.templates)
def test_prompt_holds_the_operands(template: str) -> None:
    for p in problems(20):
        prompt = TASK.render_prompt(p, template)
        assert prompt == " ".join(prompt.split())  # canonical: single spaces
        for x in p.inputs:
            assert " ".join(str(x)) in prompt
        assert TASK.extract_answer(prompt) is None  # a prompt never looks like an answer


def test_difficulty_is_the_longest_operand() -> None:
    rng = random.Random(2)
    for d in TASK.difficulties:
        for _ in range(50):
            p = TASK.sample(rng, d)
            assert max(len(str(x)) for x in p.inputs) == d


def test_styles_differ_and_vary() -> None:
    p = Problem("addition", (34567, 891), str(34567 + 891), 5)
    a = {TASK.render_reasoning(p, "lsd", random.Random(s)) for s in range(20)}
    b = {TASK.render_reasoning(p, "msd", random.Random(s)) for s in range(20)}
    assert len(a) > 10 and len(b) > 10  # natural variation
    assert not a & b
    # style A starts from the least significant column, style B from the most significant
    assert all("7 + 1" in t or "7 plus 1" in t for t in a)
    assert all(t.index("3 + 0") < t.index("7 + 1") for t in b if "3 + 0" in t and "7 + 1" in t)


def test_sampling_is_deterministic() -> None:
    assert problems(seed=5) == problems(seed=5)
    p = problems()[-1]
    assert TASK.render_reasoning(p, "lsd", random.Random(3)) == TASK.render_reasoning(
        p, "lsd", random.Random(3)
    )


def test_extract_answer_edge_cases() -> None:
    assert TASK.extract_answer("") is None
    assert TASK.extract_answer("so the answer is .") is None
    assert TASK.extract_answer("the answer is 1 2 . no wait the answer is 4 2 .") == "42"


@pytest.mark.parametrize(
    "call",
    [
        lambda: get_task("nope"),
        lambda: TASK.render_prompt(problems(5)[0], "chat"),
        lambda: TASK.render_reasoning(problems(5)[0], "abc", random.Random(0)),
        lambda: TASK.sample(random.Random(0), 9),
    ],
)
def test_bad_names_raise_value_error_with_options(call) -> None:
    with pytest.raises(ValueError, match="valid"):
        call()


def test_register_a_new_task() -> None:
    class Copy(Task):
        name = "copy-test"
        templates = ("plain",)
        styles = ("direct",)
        difficulties = (1, 2)

        def sample(self, rng, difficulty):
            n = rng.randint(0, 10**difficulty - 1)
            return Problem(self.name, (n,), str(n), difficulty)

        def render_prompt(self, problem, template):
            return "copy " + " ".join(str(problem.inputs[0])) + " ="

        def render_reasoning(self, problem, style, rng):
            return "the answer is " + " ".join(problem.answer) + " ."

        def extract_answer(self, text):
            return AdditionTask().extract_answer(text)

    task = register_task(Copy(), replace=True)
    p = task.sample(random.Random(0), 2)
    assert get_task("copy-test").check(
        task.render_reasoning(p, "direct", random.Random(0)), p.answer
    )
    with pytest.raises(ValueError):
        register_task(Copy())
