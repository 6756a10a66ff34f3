"""The overlap probe: the paper's alignment metrics at student-visited states.

Per state (DESIGN.md "Metric definitions"): overlap ratio ``|I|/k``; overlap masses
``Σ_{v∈I} p(v)`` and ``Σ_{v∈I} q(v)``; the paper's Eq. 7 overlap-token advantage
(``−KL(p̄‖q̄)/|I|`` with p̄, q̄ renormalised over I); thunlp's code form of it (weights renormalised
over the student's top-k, full-vocabulary log-probs, token-pooled over I); entropy gap
``|H(q) − H(p)|``; the sampled-token reverse KL estimate ``log p(ŷ) − log q(ŷ)`` (k1, the OPD
reward with its sign flipped); and the exact full-vocabulary reverse KL captured by the engine.

Aggregation levels (column ``level``):

* ``run``: each metric averaged over positions (``E_t``, the paper's form) — and, where the
  difference matters, a ``_pooled`` variant that weights every token equally across rollouts
  (thunlp's logged form) versus ``_rollout_mean`` that weights every rollout equally;
* ``rollout``: per rollout (position mean);
* ``depth``: per relative-depth bin (``t / T`` in ``n_depth_bins`` equal bins);
* ``position``: per absolute position bin of ``position_bin`` tokens.

Every level is also split by ``step`` (−1 for offline captures), so a training run gives curves.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..core.divergences import (
    overlap_masses,
    overlap_token_advantage,
    thunlp_advantage_terms,
    topk_membership,
)
from ..core.errors import OpdDiagError
from ..core.runs import Run, stack_list_column
from .registry import register_probe

METRICS = ("overlap_ratio", "overlap_mass_s", "overlap_mass_t", "eq7_advantage",
           "entropy_gap", "H_s", "H_t", "sampled_rkl", "rkl", "fkl", "topk_mass_s", "topk_mass_t")


def state_metrics(states: pd.DataFrame, topk: dict[str, np.ndarray] | None = None
                  ) -> pd.DataFrame:
    """Per-state overlap metrics (one row per states row) from the captured top-k lists.

    ``topk`` may hold the five top-k columns as ``[N, k]`` arrays already (the OPD loop has them
    from the capture), which skips building and re-stacking list columns."""
    def col(name, dtype):
        arr = topk[name] if topk is not None else stack_list_column(states, name)
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=dtype))

    ids_s, ids_t = col("topk_ids_s", np.int64), col("topk_ids_t", np.int64)
    lp_s, lq_on_s = col("topk_logp_s", np.float32), col("logp_t_on_topk_s", np.float32)
    lq_t = col("topk_logp_t", np.float32)
    s_in_t, t_in_s = topk_membership(ids_s, ids_t)
    k = ids_s.shape[1]
    mass_s, mass_t = overlap_masses(lp_s, s_in_t, lq_t, t_in_s)
    th_sum, th_n = thunlp_advantage_terms(lp_s, lq_on_s, s_in_t)
    cols = {name: states[name].to_numpy() for name in ("rollout_id", "step", "t", "T")}
    count = s_in_t.sum(-1).numpy()
    h_s, h_t = states["H_s"].to_numpy(), states["H_t"].to_numpy()
    cols.update({
        "overlap_count": count,
        "overlap_ratio": count / k,
        "overlap_mass_s": mass_s.numpy(),
        "overlap_mass_t": mass_t.numpy(),
        "eq7_advantage": overlap_token_advantage(lp_s, lq_on_s, s_in_t).numpy(),
        "thunlp_adv_sum": th_sum.numpy(),
        "entropy_gap": np.abs(h_t - h_s),
        "H_s": h_s, "H_t": h_t,
        "sampled_rkl": states["logp_s"].to_numpy() - states["logp_t"].to_numpy(),
        "rkl": states["rkl"].to_numpy(), "fkl": states["fkl"].to_numpy(),
        "topk_mass_s": lp_s.exp().sum(-1).numpy(),
        "topk_mass_t": lq_t.exp().sum(-1).numpy(),
    })
    del th_n
    # one frame from the columns (assigning them one by one costs more than the metrics)
    return pd.DataFrame(cols, index=states.index)


def _aggregate(per_state: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    g = per_state.groupby(keys, sort=True)
    agg = g[list(METRICS)].mean()
    agg["n_states"] = g.size()
    agg["n_rollouts"] = g["rollout_id"].nunique()
    # thunlp's adv_intersection: pooled over (position, token) pairs in I.
    pooled = g[["thunlp_adv_sum", "overlap_count"]].sum()
    agg["thunlp_adv_intersection"] = pooled["thunlp_adv_sum"] / pooled["overlap_count"].where(
        pooled["overlap_count"] > 0)
    agg["eq7_defined_share"] = g["eq7_advantage"].apply(lambda s: float(s.notna().mean()))
    return agg.reset_index()


@register_probe("overlap", version=1, summary="top-k overlap, overlap mass, Eq. 7 advantage, "
                "entropy gap, KL — per run, rollout, depth bin and position bin")
def overlap_probe(run: Run, n_depth_bins: int = 8, position_bin: int = 64) -> pd.DataFrame:
    """Overlap metrics of a run at every aggregation level (see the module docstring)."""
    if n_depth_bins <= 0 or position_bin <= 0:
        raise OpdDiagError("n_depth_bins and position_bin must be positive")
    states = run.states
    if len(states) == 0:
        raise OpdDiagError(f"{run.path} has no states; run `opd-diag capture` first")
    per_state = state_metrics(states)
    per_state["depth_bin"] = np.minimum(
        (per_state["t"] / per_state["T"] * n_depth_bins).astype(int), n_depth_bins - 1)
    per_state["position_bin"] = per_state["t"] // position_bin * position_bin

    per_rollout = _aggregate(per_state, ["step", "rollout_id"])
    run_level = _aggregate(per_state, ["step"])
    # Pooled = every token weighs the same (thunlp); rollout-mean = every rollout weighs the same.
    means = per_rollout.groupby("step")[list(METRICS)].mean().add_suffix("_rollout_mean")
    run_level = run_level.merge(means.reset_index(), on="step")
    frames = [
        run_level.assign(level="run"),
        per_rollout.assign(level="rollout"),
        _aggregate(per_state, ["step", "depth_bin"]).assign(level="depth"),
        _aggregate(per_state, ["step", "position_bin"]).assign(level="position"),
    ]
    out = pd.concat(frames, ignore_index=True, sort=False)
    out["k"] = len(states["topk_ids_s"].iat[0])
    lead = ["level", "step", "rollout_id", "depth_bin", "position_bin"]
    return out[[c for c in lead if c in out] + [c for c in out if c not in lead]]


def summary(run: Run) -> pd.Series:
    """The run-level row of the overlap probe (computing it if needed), latest step."""
    try:
        df = run.probe("overlap")
    except OpdDiagError:
        from .registry import run_probe

        df = run_probe("overlap", run)
    rows = df[df.level == "run"].sort_values("step")
    return rows.iloc[-1]
