"""The recipes of the committed zoo models (see :class:`opd_diag.zoo.train.ModelSpec`).

Every model is a ~0.8 M-parameter ``LlamaForCausalLM`` (d=128, 3 layers, 4 heads, ffn 512, tied
embeddings) trained on fresh synthetic addition problems. What differs is *what* each one saw:

* the reasoning **style** (``lsd`` = style A, ``msd`` = style B),
* the prompt **templates** (teachers are "post-trained" on one template; students, like base
  models, saw both),
* the **exposure** to hard problems. Length generalisation fails sharply at this scale, so the
  share of 5-digit problems in training sets the 5-digit accuracy: 0 % exposure gives a student that
  is confidently wrong on them, ~1 % gives a partly competent one (feasibility §3).

Models listed first matter most and are built first. ``init_from`` models continue from another
zoo model (a cheap "post-training" stage): the same-pipeline ``-long`` models continue on their
parent's own data, ``student-rl`` gains 5-digit skill its base lacks.
"""

from __future__ import annotations

from .train import ModelSpec

EASY = ((1, 0.31), (2, 0.31), (3, 0.32))
UNIFORM_1_5 = ((1, 1.0), (2, 1.0), (3, 1.0), (4, 1.0), (5, 1.0))
BOTH = ("plain", "question")

MODEL_SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="teacher-a",
        summary="Style A (least-significant digit first) teacher, 1-5 digits, plain template only.",
        style="lsd",
        mix=UNIFORM_1_5,
        steps=1000,
        seed=11,
    ),
    ModelSpec(
        name="student-partial",
        summary="Style A student, mostly 1-3 digits + 6% 4-digit + 2.5% 5-digit: partly competent on 5 digits.",
        style="lsd",
        mix=EASY + ((4, 0.06), (5, 0.025)),
        templates=BOTH,
        steps=1200,
        seed=21,
    ),
    ModelSpec(
        name="student-0",
        summary="Style A student, mostly 1-3 digits + 6% 4-digit, never saw 5 digits: confidently wrong there.",
        style="lsd",
        mix=EASY + ((4, 0.06),),
        templates=BOTH,
        steps=1200,
        seed=31,
    ),
    ModelSpec(
        name="teacher-b",
        summary="Style B (column sums most-significant first, then a carry pass) teacher, 1-5 digits.",
        style="msd",
        mix=UNIFORM_1_5,
        steps=1000,
        seed=41,
    ),
    ModelSpec(
        name="student-partial-long",
        summary="student-partial trained 400 more steps on its own data: stronger, but no new kind of skill.",
        style="lsd",
        mix=EASY + ((4, 0.06), (5, 0.025)),
        templates=BOTH,
        steps=400,
        seed=22,
        lr=1e-3,
        warmup=30,
        init_from="student-partial",
    ),
    ModelSpec(
        name="student-rl",
        summary="student-0 post-trained 300 steps on 1-5 digits: gained the 5-digit skill its base lacks.",
        style="lsd",
        mix=UNIFORM_1_5,
        templates=BOTH,
        steps=300,
        seed=51,
        lr=1e-3,
        warmup=20,
        init_from="student-0",
    ),
    ModelSpec(
        name="student-0-long",
        summary="student-0 trained 400 more steps on its own data: a same-pipeline model without 5 digits.",
        style="lsd",
        mix=EASY + ((4, 0.06),),
        templates=BOTH,
        steps=400,
        seed=32,
        lr=1e-3,
        warmup=30,
        init_from="student-0",
    ),
)


def get_spec(name: str) -> ModelSpec:
    from ..core.errors import OpdDiagError

    for spec in MODEL_SPECS:
        if spec.name == name:
            return spec
    raise OpdDiagError(
        f"unknown zoo model {name!r}; valid models: {', '.join(s.name for s in MODEL_SPECS)}"
    )
