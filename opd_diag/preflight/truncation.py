"""Truncation guard: a verdict computed on cut-off rollouts is a verdict about the budget.

With ``--max-new-tokens`` below a model's natural length (R1-style traces run to thousands of
tokens), most rollouts end at the cap, are scored wrong, every prompt looks settled and the
novelty rule says NO-GO. So the pre-flight measures the share of each model's rollouts that hit
the cap, and when more than :data:`MAX_TRUNCATED` of either model's rollouts did, the verdict
is CAUTION whatever the other rows say (:func:`verdict_with_truncation`), with the reason
"N% of rollouts truncated at L tokens".

A rollout that hit the cap while **looping** (its last :data:`LOOP_WINDOW` tokens repeat: fewer
than :data:`LOOP_MIN_DISTINCT` of their 4-grams are distinct) is not a budget problem: the model
would never have finished, and a wrong answer is the right score for it. Guard version 2 (found
on the held-out zoo-v2 pairs, whose students loop "34 34 34 …" on lists they cannot sort, which
turned two right NO-GOs into CAUTION; docs/validation.md) counts only the rollouts cut off
mid-text, and reports the looping share beside it. Rollout tables without ``completion_ids``
count every capped rollout (version 1's rule).

Pure functions of the run's rollouts tables (no models), like :func:`.rules.decide`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MAX_TRUNCATED = 0.10
CONDITION = "truncation"
GUARD_VERSION = 2
LOOP_WINDOW = 64
LOOP_NGRAM = 4
LOOP_MIN_DISTINCT = 0.3


def is_looping(ids) -> bool:
    """Whether a completion's last :data:`LOOP_WINDOW` tokens repeat (fewer than
    :data:`LOOP_MIN_DISTINCT` of their :data:`LOOP_NGRAM`-grams are distinct)."""
    tail = [int(t) for t in np.asarray(ids).ravel()[-LOOP_WINDOW:]]
    n = len(tail) - LOOP_NGRAM + 1
    if len(tail) < LOOP_WINDOW or n < 1:
        return False
    grams = {tuple(tail[i:i + LOOP_NGRAM]) for i in range(n)}
    return len(grams) / n < LOOP_MIN_DISTINCT


def _role_shares(rollouts: dict[str, pd.DataFrame | None]) -> dict[str, tuple[float, float]]:
    """Per model with rollouts: (share cut off at the cap mid-text, share looping to the cap)."""
    out = {}
    for role, table in rollouts.items():
        if table is None or not len(table):
            continue
        capped = (table.stop_reason == "length").to_numpy()
        loops = np.zeros(len(table), bool) if "completion_ids" not in table else np.array(
            [bool(c) and is_looping(ids) for c, ids in zip(capped, table.completion_ids)], bool)
        out[role] = (float((capped & ~loops).mean()), float(loops.mean()))
    return out


def truncated_shares(rollouts: dict[str, pd.DataFrame | None]) -> dict[str, float]:
    """Share of rollouts cut off at the cap mid-text (``stop_reason == "length"`` and not
    looping), per model: what the guard counts."""
    return {role: cut for role, (cut, _) in _role_shares(rollouts).items()}


def looping_shares(rollouts: dict[str, pd.DataFrame | None]) -> dict[str, float]:
    """Share of rollouts that ran to the cap while looping, per model (reported, not counted)."""
    return {role: loop for role, (_, loop) in _role_shares(rollouts).items()}


def truncation_row(rollouts: dict[str, pd.DataFrame | None], max_new_tokens: int,
                   threshold: float = MAX_TRUNCATED) -> dict:
    """One verdict-table row (the columns of :func:`.rules.decide`).

    Args:
        rollouts: ``{"student": run.rollouts, "teacher": teacher rollouts or None}``.
        max_new_tokens: the completion budget L the rollouts were sampled with.
    """
    both = _role_shares(rollouts)
    shares = {role: cut for role, (cut, _) in both.items()}
    worst_role = max(shares, key=shares.get) if shares else None
    worst = shares[worst_role] if worst_role else float("nan")
    per_model = ", ".join(f"{r} {s:.0%}" for r, s in shares.items()) or "no rollouts"
    status = "CAUTION" if worst_role and worst > threshold else "GO"
    loops = {r: loop for r, (_, loop) in both.items() if loop > 0}
    loop_note = ("; looping to the cap, not counted (a model failure, scored wrong, not a budget "
                 "problem): " + ", ".join(f"{r} {v:.0%}" for r, v in loops.items())) if loops else ""
    return dict(
        condition=CONDITION, metric="truncated_share", value=worst, status=status,
        rule=f"{worst:.0%} of rollouts truncated at {max_new_tokens} tokens ({per_model}); the "
             f"verdict is CAUTION, whatever the other rows say, when > {threshold:.0%} of either "
             f"model's rollouts are cut off mid-text{loop_note}",
        recovery="raise --max-new-tokens to the models' natural length (their "
                 "generation_config.max_new_tokens) and re-run: truncated rollouts are scored "
                 "wrong and make every prompt look settled")


def verdict_with_truncation(table: pd.DataFrame, verdict: str) -> str:
    """The overall verdict, CAUTION when the truncation row says so (also over a NO-GO)."""
    rows = table[table.condition == CONDITION]
    return "CAUTION" if len(rows) and (rows.status == "CAUTION").any() else verdict


def truncation_summary(row: dict, rollouts: dict[str, pd.DataFrame | None],
                       max_new_tokens: int) -> dict:
    """The ``truncation`` entry of ``verdict.json``."""
    both = _role_shares(rollouts)
    return {"max_new_tokens": int(max_new_tokens), "threshold": MAX_TRUNCATED,
            "guard_version": GUARD_VERSION,
            "truncated_share": {role: cut for role, (cut, _) in both.items()},
            "looping_share": {role: loop for role, (_, loop) in both.items()},
            "status": row["status"],
            "reason": row["rule"].split(" (")[0]}
