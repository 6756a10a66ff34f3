"""Did the teacher ranking hold? A ranking against the OPD outcomes measured afterwards.

After ``rank-teachers`` a user distils with some or all candidates and scores each distilled
student on the same eval items. :func:`check_ranking` compares the ranking with those outcomes
pair by pair: for every two ranked teachers with outcomes, the paired 95 % bootstrap CI of the
accuracy difference (higher-ranked − lower-ranked, resampling eval items; seeds averaged per
item first) decides

* ``agree``: the CI lies above 0 (the measured order is the ranked order);
* ``wrong``: the CI lies below 0 (the measured order is the reverse);
* ``undetermined``: the CI contains 0 (the items cannot order the two).

Every student was distilled from the same starting point and scored on the same items, so
differences of final accuracy are differences of gains. A ranking *holds* when no pair is
``wrong`` and at least one is ``agree``.

Outcomes table (CSV or parquet): ``teacher`` (the ranking's names), ``item`` (eval item id,
the same set for every teacher), ``correct`` (0/1 or bool), optionally ``seed`` (OPD seed).
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import OpdDiagError

CHECK_COLUMNS = ["higher", "lower", "rank_higher", "rank_lower", "acc_higher", "acc_lower",
                 "diff", "ci_low", "ci_high", "n_items", "result"]


def _read(path_or_frame, what: str) -> pd.DataFrame:
    if isinstance(path_or_frame, pd.DataFrame):
        return path_or_frame
    path = Path(path_or_frame)
    if not path.is_file():
        raise OpdDiagError(f"{what} {path} does not exist")
    try:
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise OpdDiagError(f"{what} {path} is not a readable CSV/parquet table: {e}") from e


def _item_accuracy(outcomes: pd.DataFrame, where: str) -> pd.DataFrame:
    """items × teachers table of per-item accuracy (mean over seeds)."""
    missing = [c for c in ("teacher", "item", "correct") if c not in outcomes.columns]
    if missing:
        raise OpdDiagError(f"{where}: missing column(s) {missing}; an outcomes table needs "
                           "'teacher', 'item', 'correct' (and optionally 'seed')")
    correct = pd.to_numeric(outcomes["correct"].astype("object").replace({True: 1, False: 0}),
                            errors="coerce")
    bad = correct.isna() | ~correct.isin([0, 1])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        value = str(outcomes["correct"].iat[i])
        raise OpdDiagError(f"{where}: row {i + 1} has correct={value!r}; it must be 0/1 or "
                           "true/false")
    df = outcomes.assign(correct=correct.astype(float), teacher=outcomes.teacher.astype(str))
    wide = df.groupby(["item", "teacher"]).correct.mean().unstack("teacher")
    holes = wide.columns[wide.isna().any()].tolist()
    if holes:
        raise OpdDiagError(f"{where}: teacher(s) {holes} lack some eval items the others have; "
                           "every teacher must be scored on the same items (the comparison is "
                           "paired)")
    return wide


def check_ranking(ranking, outcomes, *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Pairwise check of a ranking against measured outcomes (see the module docstring).

    Args:
        ranking: ``ranking.csv`` of ``rank-teachers`` (path or frame; ``teacher`` and ``rank``).
        outcomes: per-item outcomes (path or frame).
    Returns:
        One row per pair of ranked teachers that both have outcomes (:data:`CHECK_COLUMNS`).
    """
    if n_boot < 100:
        raise OpdDiagError(f"n_boot must be at least 100, got {n_boot}")
    rk = _read(ranking, "ranking")
    if not {"teacher", "rank"} <= set(rk.columns):
        raise OpdDiagError("ranking: needs the 'teacher' and 'rank' columns of rank-teachers' "
                           "ranking.csv")
    wide = _item_accuracy(_read(outcomes, "outcomes"), "outcomes")
    unknown = sorted(set(wide.columns) - set(rk.teacher.astype(str)))
    if unknown:
        raise OpdDiagError(f"outcomes: teacher(s) {unknown} are not in the ranking "
                           f"({', '.join(map(str, rk.teacher))}); use the ranking's names")
    ranked = rk.assign(teacher=rk.teacher.astype(str)).sort_values("rank")
    ranked = ranked[ranked.teacher.isin(wide.columns)]
    if len(ranked) < 2:
        raise OpdDiagError("outcomes: need outcomes for at least two ranked teachers to check "
                           f"an order (found {list(wide.columns)})")
    rng = np.random.default_rng(seed)
    n = len(wide)
    idx = rng.integers(0, n, (n_boot, n))
    rows = []
    for (_, hi), (_, lo) in combinations(list(ranked.iterrows()), 2):
        d = (wide[hi.teacher] - wide[lo.teacher]).to_numpy()
        boots = d[idx].mean(axis=1)
        ci_low, ci_high = np.quantile(boots, [0.025, 0.975])
        result = "agree" if ci_low > 0 else ("wrong" if ci_high < 0 else "undetermined")
        rows.append({"higher": hi.teacher, "lower": lo.teacher, "rank_higher": int(hi["rank"]),
                     "rank_lower": int(lo["rank"]), "acc_higher": float(wide[hi.teacher].mean()),
                     "acc_lower": float(wide[lo.teacher].mean()), "diff": float(d.mean()),
                     "ci_low": float(ci_low), "ci_high": float(ci_high), "n_items": n,
                     "result": result})
    return pd.DataFrame(rows, columns=CHECK_COLUMNS)


def summarize_check(check: pd.DataFrame) -> str:
    """One line: how many pairs agree / are wrong / undetermined, and whether the ranking holds."""
    counts = {k: int((check.result == k).sum()) for k in ("agree", "wrong", "undetermined")}
    holds = counts["wrong"] == 0 and counts["agree"] > 0
    return (f"{counts['agree']} agree, {counts['wrong']} wrong, {counts['undetermined']} "
            f"undetermined of {len(check)} pairs: the ranking "
            f"{'holds' if holds else ('is contradicted' if counts['wrong'] else 'is not tested')}")
