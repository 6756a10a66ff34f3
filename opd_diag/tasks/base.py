"""The task interface: a verifiable reasoning task with prompt templates and reasoning styles.

Context: on-policy distillation needs prompts whose answers can be checked (to measure accuracy and
gap recovery) and, for the model-organism zoo, supervised chain-of-thought text to train students
and teachers from scratch. A :class:`Task` bundles both:

* ``sample(rng, difficulty)`` draws a :class:`Problem` (``difficulty`` is a task-defined knob, for
  addition the number of digits);
* ``render_prompt(problem, template)`` writes the question in one of ``task.templates``;
* ``render_reasoning(problem, style, rng)`` writes the completion (chain of thought + final answer)
  in one of ``task.styles``; ``rng`` drives the *natural variation* (synonyms, optional words), so
  two calls can give different text for the same problem and style;
* ``extract_answer(text)`` / ``check(text, answer)`` verify any completion, whichever model wrote it.

Intuition: styles are *how* a model thinks (the paper's "thinking pattern"), templates are *how it is
asked*. Two models trained on different styles disagree token by token even when both are right,
which is what makes a teacher incompatible. All styles of a task share the final answer format, so
one verifier scores every model.

Adding a task: subclass :class:`Task`, fill ``name``/``templates``/``styles``, implement the five
methods and call :func:`register_task`. Zoo models can only read text made of tokens in the zoo
tokenizer's vocabulary (``opd_diag.zoo.tokenizer.VOCAB``); ``Task.words()`` lists what a task needs.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import OpdDiagError


@dataclass(frozen=True)
class Problem:
    """One task instance.

    Attributes:
        task: name of the task that made it.
        inputs: the task-specific inputs (for addition: the operands).
        answer: the canonical answer string that :meth:`Task.check` compares against.
        difficulty: the difficulty knob value the problem was sampled with.
        meta: free-form extras (never needed to render or check).
    """

    task: str
    inputs: tuple[Any, ...]
    answer: str
    difficulty: int
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


class Task(ABC):
    """Base class of a verifiable chain-of-thought task. See the module docstring."""

    name: str = ""
    templates: tuple[str, ...] = ()
    styles: tuple[str, ...] = ()
    #: difficulty values the task understands (for addition: digit counts)
    difficulties: tuple[int, ...] = ()

    @abstractmethod
    def sample(self, rng: random.Random, difficulty: int) -> Problem:
        """Draw one problem at ``difficulty`` using only ``rng`` (deterministic given its state)."""

    @abstractmethod
    def render_prompt(self, problem: Problem, template: str) -> str:
        """The prompt text for ``problem`` in ``template`` (one of ``self.templates``)."""

    @abstractmethod
    def render_reasoning(self, problem: Problem, style: str, rng: random.Random) -> str:
        """Chain of thought and final answer in ``style``; ``rng`` picks among phrasings."""

    @abstractmethod
    def extract_answer(self, text: str) -> str | None:
        """The final answer in a completion, or ``None`` when there is none to read."""

    def check(self, text: str, answer: str) -> bool:
        """Whether the completion ``text`` ends with the correct final ``answer``."""
        return self.extract_answer(text) == answer

    def words(self) -> set[str]:
        """Every whitespace-separated token the task can ever write (for tokenizer coverage)."""
        return set()

    # --- validation helpers shared by subclasses -------------------------------------------

    def check_template(self, template: str) -> str:
        if template not in self.templates:
            raise OpdDiagError(
                f"unknown template {template!r} for task {self.name!r}; "
                f"valid templates: {', '.join(self.templates)}"
            )
        return template

    def check_style(self, style: str) -> str:
        if style not in self.styles:
            raise OpdDiagError(
                f"unknown style {style!r} for task {self.name!r}; valid styles: {', '.join(self.styles)}"
            )
        return style

    def check_difficulty(self, difficulty: int) -> int:
        if difficulty not in self.difficulties:
            raise OpdDiagError(
                f"difficulty {difficulty!r} out of range for task {self.name!r}; "
                f"valid: {', '.join(map(str, self.difficulties))}"
            )
        return difficulty

    def example(
        self, problem: Problem, template: str, style: str, rng: random.Random
    ) -> tuple[str, str]:
        """A (prompt, completion) training pair."""
        return self.render_prompt(problem, template), self.render_reasoning(problem, style, rng)


_TASKS: dict[str, Task] = {}


def register_task(task: Task, *, replace: bool = False) -> Task:
    """Make ``task`` available by name through :func:`get_task`. Returns it (usable as a helper)."""
    if not task.name:
        raise OpdDiagError("a task needs a non-empty `name`")
    if task.name in _TASKS and not replace:
        raise OpdDiagError(f"task {task.name!r} is already registered (pass replace=True)")
    _TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    """The registered task called ``name``; raises ``OpdDiagError`` listing the valid names."""
    try:
        return _TASKS[name]
    except KeyError:
        raise OpdDiagError(
            f"unknown task {name!r}; valid tasks: {', '.join(list_tasks())}"
        ) from None


def list_tasks() -> list[str]:
    """Names of all registered tasks, sorted."""
    return sorted(_TASKS)
