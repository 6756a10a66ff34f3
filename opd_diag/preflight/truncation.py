"""Truncation guard: a verdict computed on cut-off rollouts is a verdict about the budget.

With ``--max-new-tokens`` below a model's natural length (R1-style traces run to thousands of
tokens), most rollouts end at the cap, are scored wrong, every prompt looks settled and the
novelty rule says NO-GO. So the pre-flight measures the share of each model's rollouts that hit
the cap, and when more than :data:`MAX_TRUNCATED` of either model's rollouts did, the verdict
is CAUTION whatever the other rows say (:func:`verdict_with_truncation`), with the reason
"N% of rollouts truncated at L tokens".

Pure functions of the run's rollouts tables (no models), like :func:`.rules.decide`.
"""

from __future__ import annotations

import pandas as pd

MAX_TRUNCATED = 0.10
CONDITION = "truncation"


def truncated_shares(rollouts: dict[str, pd.DataFrame | None]) -> dict[str, float]:
    """Share of rollouts that stopped at the cap (``stop_reason == "length"``), per model."""
    out = {}
    for role, table in rollouts.items():
        if table is not None and len(table):
            out[role] = float((table.stop_reason == "length").mean())
    return out


def truncation_row(rollouts: dict[str, pd.DataFrame | None], max_new_tokens: int,
                   threshold: float = MAX_TRUNCATED) -> dict:
    """One verdict-table row (the columns of :func:`.rules.decide`).

    Args:
        rollouts: ``{"student": run.rollouts, "teacher": teacher rollouts or None}``.
        max_new_tokens: the completion budget L the rollouts were sampled with.
    """
    shares = truncated_shares(rollouts)
    worst_role = max(shares, key=shares.get) if shares else None
    worst = shares[worst_role] if worst_role else float("nan")
    per_model = ", ".join(f"{r} {s:.0%}" for r, s in shares.items()) or "no rollouts"
    status = "CAUTION" if worst_role and worst > threshold else "GO"
    return dict(
        condition=CONDITION, metric="truncated_share", value=worst, status=status,
        rule=f"{worst:.0%} of rollouts truncated at {max_new_tokens} tokens ({per_model}); the "
             f"verdict is CAUTION, whatever the other rows say, when > {threshold:.0%} of either "
             "model's rollouts hit the cap",
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
    return {"max_new_tokens": int(max_new_tokens), "threshold": MAX_TRUNCATED,
            "truncated_share": truncated_shares(rollouts), "status": row["status"],
            "reason": row["rule"].split(" (")[0]}
