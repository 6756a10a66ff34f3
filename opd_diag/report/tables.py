"""Structure: a run's tables reshaped into the tables a report (or a notebook) lays out.

Nothing here computes a metric. Every function selects, pivots or renames cells of a table the run
already holds — a probe table (``run.probe``), ``run.metrics``, ``run.rollouts``/``run.states`` —
so a notebook that calls the same function sees exactly the numbers the report shows.

The one exception is :func:`ensure_probe`: when a kind of report needs a probe table the run does
not hold yet (a loop run never ran the ``horizon`` probe), it runs the *registered* probe, which
writes ``probes/<name>.parquet`` into the run like ``opd-diag probe`` would.

Context: the per-token reward coloured in trajectories is ``log q(ŷ_t) − log p(ŷ_t)`` =
``logp_t − logp_s``, the OPD reward the paper's sampled-token objective uses (minus the overlap
probe's ``sampled_rkl``): negative where the teacher finds the student's token unlikely.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import pandas as pd

from ..core.errors import OpdDiagError
from ..core.runs import Run

# Loop scalars the training report plots, grouped into panels: (panel title, metrics.jsonl keys).
CURVE_PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Top-k overlap ratio", ("overlap_ratio",)),
    ("Overlap mass (student / teacher side)", ("overlap_mass_s", "overlap_mass_t")),
    ("Eq. 7 overlap-token advantage", ("eq7_advantage",)),
    ("Entropy (student / teacher)", ("H_s", "H_t")),
    ("Entropy gap |H(q) − H(p)|", ("entropy_gap",)),
    ("Reverse KL (exact)", ("rkl",)),
    ("Loss", ("loss",)),
    ("Gradient norm", ("grad_norm",)),
)
FINAL_COLUMNS = ("overlap_ratio", "overlap_mass_s", "overlap_mass_t", "eq7_advantage",
                 "entropy_gap", "H_s", "H_t", "rkl", "loss", "grad_norm")
EVAL_PREFIX = "eval/"


def ensure_probe(run: Run, name: str) -> pd.DataFrame:
    """The run's ``name`` probe table; runs the registered probe when the run lacks it."""
    if name in run.probes():
        return run.probe(name)
    from ..probes import run_probe

    try:
        return run_probe(name, run)
    except OpdDiagError as exc:
        if "cannot write" not in str(exc):
            raise
        return run_probe(name, run, write=False)  # a read-only run: show it, leave no file


def run_label(run: Run) -> str:
    return str(run.meta.get("run_id") or run.path.name)


def run_info(run: Run) -> dict:
    """Provenance shown in the report header: id, kind, models, status, git SHA, created."""
    models = run.meta.get("models") or {}
    cfg = run.config
    return {
        "run": run_label(run), "path": str(run.path), "kind": run.meta.get("kind_detail")
        or run.meta.get("kind"), "status": run.meta.get("status"),
        "student": (models.get("student") or {}).get("path") or cfg.get("student"),
        "teacher": (models.get("teacher") or {}).get("path") or cfg.get("teacher"),
        "created": run.meta.get("created_at"), "git_sha": run.meta.get("git_sha"),
    }


# --- pre-flight -------------------------------------------------------------------------------


def verdict(run: Run) -> tuple[str, pd.DataFrame]:
    """The overall verdict and the condition table (condition, metric, value, status, rule,
    recovery) of a pre-flight run."""
    df = run.probe("verdict")
    cols = ["condition", "metric", "value", "status", "rule", "recovery"]
    table = df[cols].reset_index(drop=True)
    # as the CLI and Verdict.render(): every condition, recovery only under failing rows
    table["recovery"] = table.recovery.where(table.status.isin(["CAUTION", "NO-GO"]), "")
    return str(df["verdict"].iat[0]) if len(df) else "CAUTION", table


def thinking_components(run: Run) -> pd.DataFrame:
    return run.probe("thinking")[["component", "value", "note"]].reset_index(drop=True)


def _long(df: pd.DataFrame, section: str, key_name: str) -> pd.DataFrame:
    """A ``(section, key, metric, value)`` probe table's section as a wide frame."""
    sel = df[df.section == section]
    if sel.empty:
        return pd.DataFrame()
    wide = sel.pivot_table(index="key", columns="metric", values="value", aggfunc="first",
                           dropna=False)
    wide.columns.name = None
    wide = wide.reset_index().rename(columns={"key": key_name})
    try:
        wide[key_name] = pd.to_numeric(wide[key_name])
    except (TypeError, ValueError):
        pass  # a non-numeric key (e.g. a reference model's name) stays a string
    return wide.sort_values(key_name).reset_index(drop=True)


def overlap_by_depth(run: Run, step: int | None = None) -> pd.DataFrame:
    """Overlap probe, ``level == "depth"``: one row per (step, relative-depth bin)."""
    df = ensure_probe(run, "overlap")
    d = df[df.level == "depth"]
    if step is not None:
        d = d[d.step == step]
    cols = ["step", "depth_bin", "overlap_ratio", "overlap_mass_s", "overlap_mass_t",
            "eq7_advantage", "entropy_gap", "H_s", "H_t", "rkl", "n_states"]
    out = d[cols].copy()
    out["depth_bin"] = out["depth_bin"].astype(int)
    return out.sort_values(["step", "depth_bin"]).reset_index(drop=True)


def overlap_summary(run: Run) -> pd.DataFrame:
    """Overlap probe, ``level == "run"``: the run-level means per step."""
    df = ensure_probe(run, "overlap")
    cols = ["step", "n_rollouts", "n_states", "overlap_ratio", "overlap_mass_s", "overlap_mass_t",
            "eq7_advantage", "thunlp_adv_intersection", "entropy_gap", "H_s", "H_t", "rkl", "k"]
    return df[df.level == "run"][[c for c in cols if c in df]].reset_index(drop=True)


def glossary(columns: Sequence[str]) -> pd.DataFrame:
    """What each of ``columns`` means and how to read it (``opd_diag.core.glossary``)."""
    from ..core.glossary import GLOSSARY

    rows = [{"column": c, "what it is": GLOSSARY[c][0], "how to read it": GLOSSARY[c][1]}
            for c in columns if c in GLOSSARY]
    return pd.DataFrame(rows, columns=["column", "what it is", "how to read it"])


def continuation_by_depth(run: Run) -> pd.DataFrame:
    """Novelty probe, ``section == "continuation"``: teacher vs student continuation accuracy
    from the student's prefixes, with the advantage's bootstrap 95% CI (empty without answers)."""
    if "novelty" not in run.probes():
        return pd.DataFrame()
    return _long(run.probe("novelty"), "continuation", "depth")


def novelty_evidence(run: Run) -> pd.DataFrame:
    """Novelty probe rows other than continuations: exclusive solves, reference distances."""
    if "novelty" not in run.probes():
        return pd.DataFrame()
    df = run.probe("novelty")
    return df[df.section != "continuation"][["section", "key", "metric", "value"]].reset_index(
        drop=True)


def auroc_by_depth(run: Run) -> pd.DataFrame:
    """Horizon probe, per depth bin (never cumulative): AUROC of r̄ over the bin's positions with
    its 95% CI by prompt; rows of ``section == "auroc"`` (fractions of each rollout, ``scale`` =
    "fraction") and ``"auroc_tokens"`` (absolute token depths, ``scale`` = "tokens")."""
    h = ensure_probe(run, "horizon")
    parts = [_long(h, sec, "bin").assign(scale=scale)
             for sec, scale in (("auroc", "fraction"), ("auroc_tokens", "tokens"))]
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame()
    df = pd.concat(parts, ignore_index=True)
    df["bin"] = df["bin"].astype(str)
    return df


def reachability(run: Run) -> pd.DataFrame:
    """Reachability probe: per step, where the teacher's corrections sit for the student."""
    df = run.probe("reachability")
    return df.drop(columns=["probe", "probe_version"]).reset_index(drop=True)


def tip_quadrants(run: Run, step: int | None = None) -> pd.DataFrame:
    """Token-level probe, TIP group: per quadrant, share of states and share of total KL."""
    df = run.probe("token_level")
    tip = df[df.group == "tip"]
    step = tip.step.min() if step is None else step
    tip = tip[tip.step == step]
    rows = []
    for q in ("Q1_high_H_high_D", "Q2_high_H_low_D", "Q3_low_H_high_D", "Q4_low_H_low_D"):
        vals = tip.set_index("metric").value
        rows.append({"quadrant": q, "entropy": "high" if "high_H" in q else "low",
                     "divergence": "high" if "high_D" in q else "low",
                     "share": vals.get(f"{q}_share", np.nan),
                     "kl_share": vals.get(f"{q}_kl_share", np.nan), "step": step})
    return pd.DataFrame(rows)


def token_level_other(run: Run) -> pd.DataFrame:
    df = run.probe("token_level")
    return df[df.group != "tip"][["step", "group", "metric", "value"]].reset_index(drop=True)


# --- training ---------------------------------------------------------------------------------


def curves(run: Run) -> pd.DataFrame:
    """``metrics.jsonl`` columns the training report plots (missing keys are left out)."""
    m = run.metrics
    if m.empty or "step" not in m:
        return pd.DataFrame()
    keep = ["step"] + [c for _, cols in CURVE_PANELS for c in cols if c in m]
    return m[keep].sort_values("step").reset_index(drop=True)


def eval_curve(run: Run) -> pd.DataFrame:
    """Rows of ``metrics.jsonl`` with evaluation (``eval/*`` keys, prefix stripped)."""
    m = run.metrics
    cols = [c for c in m if c.startswith(EVAL_PREFIX)]
    if not cols:
        return pd.DataFrame()
    ev = m[["step", *cols]].dropna(subset=cols, how="all")
    return ev.rename(columns=lambda c: c.removeprefix(EVAL_PREFIX)).reset_index(drop=True)


def eval_baselines(run: Run) -> pd.DataFrame:
    """The teacher's and the initial student's accuracy, measured once (``run.json``)."""
    rows = [{"model": who, **run.meta[f"eval_{who}"]} for who in ("teacher", "initial")
            if isinstance(run.meta.get(f"eval_{who}"), dict)]
    return pd.DataFrame(rows)


def entropy_by_position(run: Run) -> pd.DataFrame:
    """Student entropy per (step, absolute position bin): horizon probe's
    ``entropy_by_position`` section (needs states at ≥ 3 steps), else the overlap probe's
    ``position`` level."""
    hz = ensure_probe(run, "horizon")
    sel = hz[hz.section == "entropy_by_position"]
    if len(sel):
        key = sel.key.str.split(":", expand=True).astype(int)
        return pd.DataFrame({"step": key[0].to_numpy(), "position_bin": key[1].to_numpy(),
                             "H_s": sel.value.to_numpy()})
    ov = ensure_probe(run, "overlap")
    pos = ov[ov.level == "position"]
    return pos[["step", "position_bin", "H_s"]].astype({"position_bin": int}).reset_index(drop=True)


def back_to_front(run: Run) -> pd.DataFrame:
    """Horizon probe's back-to-front destabilisation detector (paper Fig. 13), if it ran."""
    hz = ensure_probe(run, "horizon")
    return hz[hz.section == "back_to_front"][["metric", "value"]].reset_index(drop=True)


def final_numbers(runs: Sequence[Run], labels: Sequence[str]) -> pd.DataFrame:
    """One row per run: the last logged value of each loop scalar, the last eval row, the
    baselines and — for pre-flight runs — the verdict (compare runs side by side)."""
    rows = []
    for run, label in zip(runs, labels, strict=True):
        row: dict = {"run": label}
        m = run.metrics
        if len(m) and "step" in m:
            last = m.sort_values("step").iloc[-1]
            row["step"] = int(last["step"])
            row.update({c: last[c] for c in FINAL_COLUMNS if c in m})
            ev = eval_curve(run)
            if len(ev):
                row.update({k: v for k, v in ev.iloc[-1].items() if k != "step" and "/" not in k})
            for _, b in eval_baselines(run).iterrows():
                for k, v in b.items():
                    if k != "model" and "/" not in k:
                        row[f"{b['model']}_{k}"] = v
        elif "overlap" in run.probes() or len(run.states):
            s = overlap_summary(run).iloc[-1]
            row.update({c: s[c] for c in FINAL_COLUMNS if c in s})
        if "verdict" in run.probes():
            row["verdict"] = verdict(run)[0]
        rows.append(row)
    return pd.DataFrame(rows)


# --- trajectories -----------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def token_texts(run: Run, ids: Sequence[int]) -> list[str]:
    """Token strings from the student's tokenizer (a local HF directory named in run.json);
    ``#<id>`` when it cannot be loaded. Loads a tokenizer, never a model."""
    path = run_info(run)["student"]
    try:
        tok = _tokenizer(str(path))
        return [tok.decode([int(i)]) for i in ids]
    except Exception:  # noqa: BLE001 - any failure falls back to ids
        return [f"#{int(i)}" for i in ids]


def trajectories(run: Run, n: int = 6, step: int | None = None) -> list[dict]:
    """A deterministic sample of ``n`` rollouts (incorrect first, then correct, by id) at
    ``step`` (default: the last step with states) with their per-token rewards.

    Each item: ``rollout_id, step, prompt, completion, correct, n_tokens, mean_reward`` and
    ``tokens``: a frame ``t, token, text, logp_s, logp_t, reward`` (``reward = logp_t − logp_s``).
    """
    states = run.states
    if states.empty or n <= 0:
        return []
    step = int(states.step.max()) if step is None else step
    st = states[states.step == step]
    roll = run.rollouts
    roll = roll[roll.rollout_id.isin(st.rollout_id.unique())].sort_values("rollout_id")
    order = roll.correct.map({False: 0, True: 1}).fillna(0.5)
    wrong, right = roll[order < 1], roll[order >= 1]
    pick = pd.concat([wrong.head(n - min(len(right), n // 2)), right]).head(n)
    prompts = run.prompts.set_index("prompt_id")["prompt"]
    out = []
    for _, r in pick.iterrows():
        s = st[st.rollout_id == r.rollout_id].sort_values("t")
        tokens = pd.DataFrame({"t": s.t.to_numpy(), "token": s.token.to_numpy(),
                               "text": token_texts(run, s.token.tolist()),
                               "logp_s": s.logp_s.to_numpy(), "logp_t": s.logp_t.to_numpy()})
        tokens["reward"] = tokens.logp_t - tokens.logp_s
        out.append({"rollout_id": r.rollout_id, "step": step, "prompt": prompts.get(r.prompt_id),
                    "completion": r.completion, "correct": None if pd.isna(r.correct)
                    else bool(r.correct), "n_tokens": int(r.n_tokens),
                    "mean_reward": float(tokens.reward.mean()) if len(tokens) else np.nan,
                    "tokens": tokens})
    return out
