"""Pre-flight budgets: how many prompts, samples, continuations and frontier samples a check spends."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.errors import OpdDiagError
from .rules import Thresholds


@dataclass
class PreflightConfig:
    """Budget of a pre-flight check.

    Attributes:
        n_prompts: prompts drawn (first n) from the prompt set.
        n_samples: student (and teacher) samples per prompt.
        max_new_tokens / temperature / top_k / seed: as in capture.
        depths: prefix fractions for the continuation probe; n_continue samples each.
        max_continuation_rollouts: student rollouts continued.
        n_frontier: second-stage samples per model on each frontier prompt (the prompts whose
            first-stage samples were not all alike): the novelty score's main evidence.
        max_frontier_samples: cap on second-stage samples per model (fewer per prompt when
            most prompts are on the frontier).
    """

    n_prompts: int = 64
    n_samples: int = 4
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_k: int = 16
    seed: int = 0
    depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)
    n_continue: int = 2
    max_continuation_rollouts: int = 16
    n_frontier: int = 16
    max_frontier_samples: int = 512
    batch_size: int = 32
    thresholds: Thresholds = field(default_factory=Thresholds)

    @classmethod
    def budget(cls, name: str = "default", **overrides) -> PreflightConfig:
        """The named budget (:data:`BUDGETS`) with ``overrides``; ``None`` values are ignored."""
        if name not in BUDGETS:
            raise OpdDiagError(f"unknown budget {name!r}; valid budgets: {', '.join(BUDGETS)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        return cls(**{**BUDGETS[name], **given})

    def __post_init__(self) -> None:
        if self.n_prompts <= 0 or self.n_samples <= 0 or self.n_frontier <= 0:
            raise OpdDiagError("preflight budget: n_prompts, n_samples and n_frontier must be "
                               f"positive (got {self.n_prompts}, {self.n_samples}, "
                               f"{self.n_frontier})")
        if any(not 0 <= d < 1 for d in self.depths):
            raise OpdDiagError(f"continuation depths must lie in [0, 1), got {self.depths}")


# Named pre-flight budgets (``--budget``); "default" is PreflightConfig's own defaults.
BUDGETS: dict[str, dict] = {
    "small": dict(n_prompts=16, n_samples=2, max_continuation_rollouts=8, n_continue=2,
                  n_frontier=8, max_frontier_samples=128),
    "default": dict(n_prompts=64, n_samples=4, max_continuation_rollouts=16, n_continue=2,
                    n_frontier=16, max_frontier_samples=512),
    "large": dict(n_prompts=128, n_samples=8, max_continuation_rollouts=64, n_continue=4,
                  n_frontier=32, max_frontier_samples=2048),
}
