"""Verifiable chain-of-thought tasks: the public interface and the built-in tasks.

>>> from opd_diag.tasks import get_task
>>> import random
>>> task = get_task("addition")
>>> p = task.sample(random.Random(0), difficulty=3)
>>> prompt = task.render_prompt(p, "plain")
>>> completion = task.render_reasoning(p, "lsd", random.Random(0))
>>> task.check(completion, p.answer)
True

Register your own with :func:`register_task` (see :mod:`opd_diag.tasks.base`).

Also owns the answer checkers (:mod:`.verify`). May import ``core`` only.
"""

from __future__ import annotations

from .arithmetic import AdditionTask
from .base import Problem, Task, get_task, list_tasks, register_task
from .sorting import SortTask

__all__ = [
    "AdditionTask", "Problem", "SortTask", "Task", "get_task", "list_tasks", "register_task"
]

register_task(AdditionTask("addition", n_operands=2, max_digits=5))
register_task(SortTask("sort", max_len=12))
