"""Committed zoo models and the teacher-student pairs built from them.

A :class:`Pair` is an experiment design, not just two names: the OPD prompt distribution, the
held-out eval subsets, the prompt template, recommended OPD hyper-parameters, and the outcome the
pair was *built* to show (and why, from how its models were trained). The diagnostics must find
that outcome with the same code a user runs on real models.

Models are reused across pairs: ``teacher-a`` teaches ``success``, ``out-of-reach``, ``template``
and ``long-horizon``; ``student-partial`` is the student of four pairs; ``student-0`` is the
out-of-reach student and the base of ``student-rl``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..core.errors import OpdDiagError
from .data import SUBSETS, eval_set, prompt_set
from .specs import MODEL_SPECS

ZOO_DIR = Path(__file__).resolve().parent / "models"


def list_models(zoo_dir: Path = ZOO_DIR) -> list[str]:
    """Names of the zoo models, in build order (all specs; see ``model_dir`` for what is on disk)."""
    return [s.name for s in MODEL_SPECS]


def model_dir(name: str, zoo_dir: Path = ZOO_DIR) -> Path:
    """Directory of the committed model ``name`` (a standard HF model directory)."""
    if name not in list_models():
        raise OpdDiagError(f"unknown zoo model {name!r}; valid models: {', '.join(list_models())}")
    path = Path(zoo_dir) / name
    if not (path / "config.json").exists():
        raise OpdDiagError(
            f"zoo model {name!r} is not built at {path}; run `opd-diag zoo build --only {name}`"
        )
    return path


@dataclass(frozen=True)
class OPDHyper:
    """Recommended OPD settings for a pair (CPU scale: ~1 s per step at batch 64 on one core)."""

    lr: float = 3e-4
    steps: int = 300
    batch_size: int = 64
    temperature: float = 1.0
    max_new_tokens: int = 144
    # k of the overlap ratio: zoo models put ~0.99 of their mass on their top-4 tokens; beyond 4 the
    # ranking is the order of ~1e-4 tail probabilities, which dilutes the ratio (report 16 as well)
    top_k: int = 4
    loss: str = "reverse_kl"


@dataclass(frozen=True)
class Pair:
    """A teacher-student pair and the experiment it is built for.

    Attributes:
        name: pair name (``opd-diag zoo list``).
        student, teacher: zoo model names.
        demonstrates: one sentence: the phenomenon.
        expected: the outcome OPD should show, with the reason from how the models were built.
        task: registered task name; ``template``: prompt template used for OPD and eval.
        opd_mix: difficulty mixture of the OPD prompt set.
        hyper: recommended OPD hyper-parameters.
        references: other zoo models the probes should compare against (the student's own base,
            same-pipeline models): the novelty probe's distributional reference.
        alt_teachers: teachers to run the same OPD with, for a side-by-side (``reverse``).
        contrast_template: a second template to run the same pair with (``template``).
    """

    name: str
    student: str
    teacher: str
    demonstrates: str
    expected: str
    task: str = "addition"
    template: str = "plain"
    opd_mix: tuple[tuple[int, float], ...] = ((1, 1.0), (2, 1.0), (3, 1.0), (4, 1.0), (5, 1.0))
    hyper: OPDHyper = field(default_factory=OPDHyper)
    references: tuple[str, ...] = ()
    alt_teachers: tuple[str, ...] = ()
    contrast_template: str | None = None
    subsets: tuple[str, ...] = ("easy", "4d", "5d")

    @property
    def models(self) -> tuple[str, ...]:
        return (self.student, self.teacher, *self.references, *self.alt_teachers)

    def prompts(self, n: int = 512, seed: int = 0, template: str | None = None) -> pd.DataFrame:
        """OPD prompt set: columns ``prompt``, ``answer``, ``difficulty``."""
        return prompt_set(self.task, template or self.template, self.opd_mix, n, seed)

    def eval_sets(self, n_per_subset: int = 200, template: str | None = None) -> pd.DataFrame:
        """Held-out eval set: columns ``prompt``, ``answer``, ``subset``, ``difficulty``."""
        subsets = {k: SUBSETS[k] for k in self.subsets}
        return eval_set(self.task, template or self.template, n_per_subset, subsets=subsets)

    def model_dirs(self) -> dict[str, Path]:
        return {m: model_dir(m) for m in self.models}


PAIRS: tuple[Pair, ...] = (
    Pair(
        name="success",
        student="student-partial",
        teacher="teacher-a",
        demonstrates="A compatible teacher with a capability the student only partly has: OPD works.",
        expected="Same style A; the student is partly competent on 5 digits (saw 2.5% of them), so the "
        "teacher's tokens sit inside its top-k: high step-0 overlap, reverse-KL OPD recovers >=50% of the "
        "5-digit gap in 300 steps.",
        references=("student-partial-long",),
    ),
    Pair(
        name="out-of-reach",
        student="student-0",
        teacher="teacher-a",
        demonstrates="The teacher's skill is one the student never saw: reverse-KL OPD stalls, forward KL fixes it.",
        expected="student-0 never saw 5-digit problems and is confidently wrong there (teacher tokens far "
        "outside its top-k at error positions): 5-digit accuracy stays ~0 under reverse-KL/sampled-token "
        "OPD, while forward KL (or a cold start) on the same states recovers it.",
    ),
    Pair(
        name="incompatible",
        student="student-partial",
        teacher="teacher-b",
        demonstrates="The teacher has the skill but thinks in another style: low overlap, OPD collapses.",
        expected="teacher-b reasons in style B (column sums from the left, then a carry pass): low step-0 "
        "overlap and overlap mass, the student's accuracy collapses within ~50 steps; a cold start "
        "(SFT on filtered teacher-b rollouts) raises step-0 overlap and OPD then recovers.",
        hyper=OPDHyper(steps=150),
    ),
    Pair(
        name="no-novelty",
        student="student-partial",
        teacher="student-partial-long",
        demonstrates="A stronger teacher from the student's own pipeline: the paper finds it teaches little; "
        "here it is more accurate on the student's frontier, and teaches.",
        expected="Built for the paper's 'novelty beats strength' (student-partial-long is student-partial "
        "trained longer on the same data: higher step-0 overlap than teacher-a). Measured: it does not "
        "reproduce at this scale. The longer-trained model is more accurate on the prompts the student "
        "sometimes fails (5-digit greedy 0.72 vs 0.51; ~+0.14 sampled, on the pre-flight's frontier "
        "prompts), and reverse-KL OPD lifts the student's 5-digit accuracy 0.50 -> 0.74: a GO, which the "
        "pre-flight's two-phase novelty estimate detects.",
        references=("teacher-a",),
    ),
    Pair(
        name="reverse",
        student="student-rl",
        teacher="student-0",
        demonstrates="Distilling a post-trained student back toward its base erases what post-training added.",
        expected="student-rl gained 5-digit skill on top of student-0 (300 post-training steps on 1-5 digits); OPD toward student-0 and toward the "
        "same-pipeline student-0-long both regress 5-digit accuracy toward 0 with near-identical "
        "trajectories (KL between the two teachers << KL student-teacher).",
        alt_teachers=("student-0-long",),
        # the same-pipeline sibling, not the teacher itself (whose distance is 0 by construction)
        references=("student-0-long",),
    ),
    Pair(
        name="template",
        student="student-partial",
        teacher="teacher-a",
        demonstrates="Prompts in a template the teacher was never trained on lower overlap and recovery.",
        expected="teacher-a saw only the `plain` template; the student saw both. OPD with `question` prompts "
        "(misaligned) gives lower step-0 overlap and worse recovery than with `plain` (aligned).",
        template="question",
        contrast_template="plain",
    ),
    Pair(
        name="long-horizon",
        student="student-partial",
        teacher="teacher-a",
        demonstrates="On the longest reasoning (5-digit sums, ~90-115 tokens) the teacher's advantage decays with depth.",
        expected="Teacher-continuation advantage from student prefixes is large early and near 0 late: once a "
        "student prefix holds a wrong digit no continuation can fix it. Per-depth reward AUROC falls too.",
        opd_mix=((5, 1.0),),
        subsets=("5d",),
    ),
)


def list_pairs() -> list[Pair]:
    """All zoo pairs, in the order of the paper's conditions."""
    return list(PAIRS)


def get_pair(name: str) -> Pair:
    """The pair called ``name``; raises ``OpdDiagError`` listing valid names."""
    for pair in PAIRS:
        if pair.name == name:
            return pair
    raise OpdDiagError(f"unknown pair {name!r}; valid pairs: {', '.join(p.name for p in PAIRS)}")


def pairs_table() -> pd.DataFrame:
    """One row per pair (name, student, teacher, template, demonstrates): what ``zoo list`` shows."""
    return pd.DataFrame(
        [
            {
                "pair": p.name,
                "student": p.student,
                "teacher": p.teacher,
                "template": p.template,
                "demonstrates": p.demonstrates,
            }
            for p in PAIRS
        ]
    )
