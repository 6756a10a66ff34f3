"""The recipes of the zoo-v2 models (held-out testbed): sorting, v2 BPE tokenizer, own seeds.

Same seven roles as v1 (:mod:`opd_diag.zoo.specs`) on another task, so that a verdict tuned on v1
can be scored on pairs it never saw. Difficulty is the list length (2-12); the exposure dial is
the share of long lists (10-12 numbers, the ``hard`` subset) in training:

* teachers see every length uniformly (``v2-teacher-a`` in style A ``select``, ``v2-teacher-b``
  in style B ``insert``), one template (``plain``);
* ``v2-student-partial`` sees mostly short lists, 10 % of 7-9 and 4 % of 10-12: partly competent;
* ``v2-student-0`` never sees more than 9 numbers: confidently wrong on the hard subset;
* ``-long`` models continue their parent on its own data; ``v2-student-rl`` post-trains
  ``v2-student-0`` on every length.

Architecture and schedule were set from a timing probe (0.55 s/step for d=128, 3 layers, batch 32
on one idle thread) so that the whole build fits in an hour of wall time on a shared 2-core box;
when the box got busy mid-build, ``v2-student-0`` (600 steps) and ``v2-student-partial-long``
(200) were given shorter schedules than first planned, as recorded here and on their cards
(docs/zoo.md).
"""

from __future__ import annotations

from ...core.errors import OpdDiagError
from ..train import ModelSpec

SHORT = tuple((n, 0.86 / 5) for n in range(2, 7))
MID = tuple((n, 0.10 / 3) for n in range(7, 10))
HARD = tuple((n, 0.04 / 3) for n in range(10, 13))
UNIFORM = tuple((n, 1.0) for n in range(2, 13))
BOTH = ("plain", "question")
ARCH = {"task": "sort", "d_model": 128, "n_layers": 3, "n_heads": 4, "d_ff": 512,
        "batch_size": 32}

MODEL_SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(name="v2-teacher-a", summary="Style A (selection sort) teacher, lists of 2-12, plain "
              "template only.", style="select", mix=UNIFORM, steps=1200, seed=111, **ARCH),
    ModelSpec(name="v2-student-partial", summary="Style A student, mostly 2-6 numbers + 10% 7-9 + "
              "4% 10-12: partly competent on long lists.", style="select", mix=SHORT + MID + HARD,
              templates=BOTH, steps=1200, seed=121, **ARCH),
    ModelSpec(name="v2-student-0", summary="Style A student, mostly 2-6 numbers + 10% 7-9, never "
              "more than 9: confidently wrong on long lists.", style="select", mix=SHORT + MID,
              templates=BOTH, steps=600, seed=131, **ARCH),
    ModelSpec(name="v2-teacher-b", summary="Style B (insertion sort) teacher, lists of 2-12, plain "
              "template only.", style="insert", mix=UNIFORM, steps=1200, seed=141, **ARCH),
    ModelSpec(name="v2-student-partial-long", summary="v2-student-partial trained 200 more steps "
              "on its own data: stronger, no new kind of skill.", style="select",
              mix=SHORT + MID + HARD, templates=BOTH, steps=200, seed=122, lr=1e-3, warmup=20,
              init_from="v2-student-partial", **ARCH),
    ModelSpec(name="v2-student-rl", summary="v2-student-0 post-trained 300 steps on lists of 2-12: "
              "gained the long-list skill its base lacks.", style="select", mix=UNIFORM,
              templates=BOTH, steps=300, seed=151, lr=1e-3, warmup=20, init_from="v2-student-0",
              **ARCH),
    ModelSpec(name="v2-student-0-long", summary="v2-student-0 trained 300 more steps on its own "
              "data: a same-pipeline model without long lists.", style="select", mix=SHORT + MID,
              templates=BOTH, steps=300, seed=132, lr=1e-3, warmup=20, init_from="v2-student-0",
              **ARCH),
)


def get_spec(name: str) -> ModelSpec:
    for spec in MODEL_SPECS:
        if spec.name == name:
            return spec
    raise OpdDiagError(
        f"unknown zoo-v2 model {name!r}; valid models: {', '.join(s.name for s in MODEL_SPECS)}"
    )
