"""OPD outcomes and agreement under the validation protocol (docs/validation.md), in one place.

The zoo's OPD validations (v1 ``zoo.validate``, v2 ``zoo.v2.validate``) and the pre-flight
validation benchmark (``benchmarks/preflight_validation.py``) all classify a measured gap
recovery with :func:`classify` and score a verdict against it with :func:`agrees`, so the rule
cannot drift between the calibration and the held-out reports.

* gap recovery = (acc_after − acc_before) / (acc_teacher − acc_before), mean over OPD seeds, with
  a 95 % bootstrap CI over eval items (:func:`bootstrap_recovery`, paired: the same items for
  before, after and teacher);
* **worked** when the CI's lower end is ≥ :data:`WORKED_CUT` and the teacher is ahead by more
  than :data:`MIN_GAP`; **failed** when the teacher is not ahead (gap ≤ :data:`MIN_GAP`) or the
  CI's upper end is < :data:`FAILED_CUT`; **undetermined** otherwise;
* under the protocol an outcome needs ≥ :data:`MIN_SEEDS` OPD seeds (fewer: ``undetermined``,
  with the single-seed class kept as ``outcome_provisional``);
* agreement: worked ↔ GO, failed ↔ NO-GO; CAUTION on a decided outcome is a ``hedge`` and an
  undetermined outcome is never agreement.
"""

from __future__ import annotations

import numpy as np

WORKED_CUT = 0.5
FAILED_CUT = 0.2
MIN_GAP = 0.05
MIN_SEEDS = 3
N_BOOT = 2000


def classify(lo: float, hi: float, gap: float, n_seeds: int) -> dict:
    """``outcome_provisional``, ``outcome`` (the protocol's, needing ``MIN_SEEDS``) and a note."""
    if not gap > MIN_GAP:
        result = "failed"  # the teacher is not ahead: nothing to recover
    elif not (np.isfinite(lo) and np.isfinite(hi)):
        result = "undetermined"
    elif lo >= WORKED_CUT:
        result = "worked"
    elif hi < FAILED_CUT:
        result = "failed"
    else:
        result = "undetermined"
    protocol = n_seeds >= MIN_SEEDS
    notes = []
    if not gap > MIN_GAP:
        notes.append(f"teacher not ahead (gap {gap:+.2f} <= {MIN_GAP}); recovery is meaningless")
    if not protocol:
        notes.append(f"{n_seeds} OPD seed(s) < {MIN_SEEDS}")
    return {"outcome_provisional": result, "outcome": result if protocol else "undetermined",
            "outcome_note": "; ".join(notes)}


def agrees(verdict: str, result: str) -> str:
    """``agree`` / ``disagree`` / ``hedge`` (CAUTION on a decided outcome) / ``undetermined``."""
    if result not in ("worked", "failed"):
        return "undetermined"
    if verdict == "CAUTION":
        return "hedge"
    return "agree" if (verdict == "GO") == (result == "worked") else "disagree"


def bootstrap_recovery(before: np.ndarray, after_S_N: np.ndarray, teacher: np.ndarray,
                       n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float, float]:
    """Point gap recovery and its 95 % percentile-bootstrap CI over eval items.

    ``before``/``teacher``: (N,) correctness; ``after_S_N``: (seeds, N). Items are resampled
    jointly for all three, so the CI is paired. Returns NaNs when the gap is 0.
    """
    before, teacher = np.asarray(before, float), np.asarray(teacher, float)
    after_S_N = np.asarray(after_S_N, float)

    def rec(idx):
        b, t = before[idx].mean(), teacher[idx].mean()
        a = after_S_N[:, idx].mean()
        return (a - b) / (t - b) if abs(t - b) > 1e-12 else np.nan

    n = len(before)
    point = rec(np.arange(n))
    rng = np.random.default_rng(seed)
    boots = np.array([rec(rng.integers(0, n, n)) for _ in range(n_boot)])
    boots = boots[np.isfinite(boots)]
    if not np.isfinite(point) or len(boots) < n_boot // 2:
        return float(point), float("nan"), float("nan")
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return float(point), float(lo), float(hi)
