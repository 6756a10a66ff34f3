"""Zoo-v2 models and pairs: the same seven pair kinds as v1, on the sort task, names ``v2-*``.

Held out: these pairs are never used to set the verdict's thresholds (docs/validation.md). The
models live in ``opd_diag/zoo/models-v2``; :func:`opd_diag.zoo.get_pair` and
:func:`opd_diag.zoo.model_dir` resolve ``v2-*`` names here, so ``opd-diag preflight --pair
v2-success`` works like a v1 pair. Eval subsets are list lengths: ``easy`` 2-6, ``mid`` 7-9,
``hard`` 10-12 (the skill the exposure dial controls).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ...core.errors import OpdDiagError
from ..data import eval_set
from ..registry import OPDHyper, Pair
from .specs import MODEL_SPECS

ZOO2_DIR = Path(__file__).resolve().parents[1] / "models-v2"
PREFIX = "v2-"
SUBSETS2: dict[str, tuple[int, ...]] = {"easy": (2, 3, 4, 5, 6), "mid": (7, 8, 9),
                                        "hard": (10, 11, 12)}
SUBSET_MAIN = "hard"
ALL_LENGTHS = tuple((n, 1.0) for n in range(2, 13))
#: completions reach ~290 tokens at 12 numbers; 320 leaves room without truncating a right answer
MAX_NEW_TOKENS = 320


def list_models() -> list[str]:
    return [s.name for s in MODEL_SPECS]


def model_dir(name: str, zoo_dir: Path = ZOO2_DIR) -> Path:
    if name not in list_models():
        raise OpdDiagError(f"unknown zoo-v2 model {name!r}; valid models: {', '.join(list_models())}")
    path = Path(zoo_dir) / name
    if not (path / "config.json").exists():
        raise OpdDiagError(f"zoo-v2 model {name!r} is not built at {path}; run "
                           f"`opd-diag zoo build --family v2 --only {name}`")
    return path


@dataclass(frozen=True)
class Pair2(Pair):
    """A v2 pair: a :class:`~opd_diag.zoo.registry.Pair` whose eval subsets are list lengths."""

    task: str = "sort"
    opd_mix: tuple[tuple[int, float], ...] = ALL_LENGTHS
    hyper: OPDHyper = field(default_factory=lambda: OPDHyper(max_new_tokens=MAX_NEW_TOKENS))
    subsets: tuple[str, ...] = ("easy", "mid", "hard")
    #: the subset whose gap recovery is the pair's OPD outcome (None: ``hard`` when evaluated)
    main_subset: str | None = None
    family: str = "v2"

    def eval_sets(self, n_per_subset: int = 200, template: str | None = None) -> pd.DataFrame:
        subsets = {k: SUBSETS2[k] for k in self.subsets}
        return eval_set(self.task, template or self.template, n_per_subset, subsets=subsets)

    def model_dirs(self) -> dict[str, Path]:
        return {m: model_dir(m) for m in self.models}


PAIRS2: tuple[Pair2, ...] = (
    Pair2(name="v2-success", student="v2-student-partial", teacher="v2-teacher-a",
          demonstrates="A compatible teacher with a skill the student only partly has.",
          expected="Same style A (selection sort); the student saw 4% of 10-12 number lists, so it "
          "is partly competent there and the teacher's tokens should sit in its top-k: built to "
          "recover a large share of the hard-subset gap.",
          references=("v2-student-partial-long",)),
    Pair2(name="v2-out-of-reach", student="v2-student-0", teacher="v2-teacher-a",
          demonstrates="The teacher's skill is one the student never saw.",
          expected="v2-student-0 never saw more than 9 numbers; on 10-12 it should be confidently "
          "wrong, putting the teacher's tokens outside its top-k: built for reverse-KL OPD to "
          "stall on the hard subset."),
    Pair2(name="v2-incompatible", student="v2-student-partial", teacher="v2-teacher-b",
          demonstrates="The teacher has the skill but thinks in another style.",
          expected="v2-teacher-b sorts by insertion (style B), the student by selection: the "
          "texts differ at almost every step, so overlap should be low and OPD should degrade "
          "the student instead of teaching it."),
    Pair2(name="v2-no-novelty", student="v2-student-partial", teacher="v2-student-partial-long",
          demonstrates="A stronger teacher from the student's own pipeline.",
          expected="v2-student-partial-long is the student trained longer on the same data: high "
          "overlap, little new behaviour; built for the paper's 'novelty beats strength' case (v1's "
          "twin taught anyway because it was more accurate on the student's frontier).",
          references=("v2-teacher-a",)),
    Pair2(name="v2-reverse", student="v2-student-rl", teacher="v2-student-0",
          demonstrates="Distilling a post-trained student back toward its base.",
          expected="v2-student-rl gained the long-list skill on top of v2-student-0; OPD toward "
          "its base (or the same-pipeline v2-student-0-long) should erase it.",
          # reference: the same-pipeline sibling. The held-out verdict was recorded with the
          # teacher itself as reference (distance 0 by construction), which run_preflight now
          # refuses; docs/validation.md reports that row as a probe defect.
          alt_teachers=("v2-student-0-long",), references=("v2-student-0-long",),
          # post-training moved mid (0.04 -> 0.32), not hard (0.00 -> 0.01): the outcome is
          # measured where the gain is (set when the models were built, before any OPD run)
          main_subset="mid"),
    Pair2(name="v2-template", student="v2-student-partial", teacher="v2-teacher-a",
          demonstrates="Prompts in a template the teacher was never trained on.",
          expected="v2-teacher-a saw only `plain`; OPD with `question` prompts (misaligned) "
          "should give lower overlap and recovery than with `plain`.",
          template="question", contrast_template="plain"),
    Pair2(name="v2-long-horizon", student="v2-student-partial", teacher="v2-teacher-a",
          demonstrates="On the longest reasoning (10-12 numbers, ~200-290 tokens) the teacher's "
          "advantage may decay with depth.",
          expected="OPD prompts are only 10-12 number lists; once a student prefix has dropped or "
          "misplaced a number no continuation can fix it, so the teacher-continuation advantage "
          "should fall with depth.",
          opd_mix=((10, 1.0), (11, 1.0), (12, 1.0)), subsets=("hard",)),
)


def list_pairs() -> list[Pair2]:
    return list(PAIRS2)


def get_pair(name: str) -> Pair2:
    for pair in PAIRS2:
        if pair.name == name:
            return pair
    raise OpdDiagError(f"unknown zoo-v2 pair {name!r}; valid: {', '.join(p.name for p in PAIRS2)}")


def pairs_table() -> pd.DataFrame:
    return pd.DataFrame([{"pair": p.name, "student": p.student, "teacher": p.teacher,
                          "template": p.template, "demonstrates": p.demonstrates}
                         for p in PAIRS2])
