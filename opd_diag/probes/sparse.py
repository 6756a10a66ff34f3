"""The sparse-teacher probe: every metric a ``--teacher-topk-only K`` run can still report, each
with its status — a value where it is exact, an interval ``[lo, hi]`` where it is only bounded
(``hi = inf`` when no finite upper bound exists), NaN where undefined. The statuses and the
bounds are those of :mod:`opd_diag.core.sparse`. On a full capture every row is exact
(``lo = hi = value``), so the two tables can be compared row by row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.runs import Run
from ..core.sparse import METRIC_STATUS
from .overlap import state_metrics
from .registry import register_probe


def _abs_interval(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``{|x| : x ∈ [lo, hi]}`` per element."""
    a, b = np.abs(lo), np.abs(hi)
    low = np.where((lo <= 0) & (hi >= 0), 0.0, np.minimum(a, b))
    return low, np.maximum(a, b)


@register_probe("sparse_teacher", 1)
def sparse_teacher(run: Run) -> pd.DataFrame:
    """Metrics of a sparse-teacher run with their status (exact value or bounded interval)."""
    st = run.states
    sparse = bool(run.meta.get("teacher_topk_only"))
    per = state_metrics(st)
    k = len(st["topk_ids_s"].iat[0]) if len(st) else 0
    rows = []

    def add(metric, value, lo=None, hi=None, status=None):
        status = status or (METRIC_STATUS.get(metric, "exact") if sparse else "exact")
        lo = value if lo is None else lo
        hi = value if hi is None else hi
        rows.append(dict(metric=metric, status=status, value=value, lo=lo, hi=hi))

    for m in ("overlap_ratio", "overlap_mass_s", "overlap_mass_t", "eq7_advantage",
              "topk_mass_t", "H_s"):
        add(m, float(per[m].mean()))
    add("sampled_reward", float((st.logp_t - st.logp_s).mean()))
    rank = st.rank_s_of_top1_t.to_numpy()
    add("reachability_top1_rank", float(np.mean(rank)))
    add("reach_top1_in_topk_s", float(np.mean(rank < k)), status="exact")
    hs = st.H_s.to_numpy(np.float64)
    for m in ("H_t", "rkl", "fkl"):
        if sparse:
            lo, hi = st[f"{m}_lo"].to_numpy(np.float64), st[f"{m}_hi"].to_numpy(np.float64)
            add(m, float("nan"), float(lo.mean()), float(hi.mean()))
        else:
            add(m, float(st[m].mean()))
    if sparse:
        lo, hi = _abs_interval(st.H_t_lo.to_numpy(np.float64) - hs,
                               st.H_t_hi.to_numpy(np.float64) - hs)
        add("entropy_gap", float("nan"), float(lo.mean()), float(hi.mean()))
        add("tail_mass_t", float(st.tail_mass_t.mean()), status="exact")
    else:
        add("entropy_gap", float(per["entropy_gap"].mean()))
    out = pd.DataFrame(rows)
    out.insert(0, "teacher_topk_only", (run.meta.get("teacher_topk_only") or {}).get("k", 0))
    return out
