"""Thinking-pattern compatibility: would OPD's targets make sense to this student?

The paper operationalises "compatible thinking patterns" as a high initial top-k overlap at
student-visited states (§3.1); we add two views that do not depend on the top-k alone:

* (a) **alignment at the student's states** — step-0 overlap ratio, overlap masses, entropy gap
  (the overlap probe's numbers);
* (b) **template / first-token check** — the teacher's first completion tokens under its own
  prompt rendering vs the run's (catches renderer and ``<think>``-mode mismatches);
* (c) **structural signature** — each model's *own* reasoning on the same prompts compared side
  by side (length, marker/delimiter tokens, token-bigram distribution; Jensen–Shannon distance),
  and **cross-likelihood**: the teacher's per-token NLL on the student's text minus on its own.

The compatibility score is the rule written in :data:`SCORE_RULE`; every component is a row.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
from scipy.spatial.distance import jensenshannon

from ..core.errors import OpdDiagError
from ..core.runs import Run
from .overlap import state_metrics
from .registry import register_probe

SCORE_RULE = ("compatibility = share of the teacher's top-k mass that lies on the shared top-k "
              "set, Σ_{v∈I} q(v) / Σ_{v∈S_q} q(v) (1 for identical models), averaged over the "
              "student's first-step *forking* positions (either model's entropy > "
              "FORK_ENTROPY nats, or their top-1s differ); the all-position value and the "
              "forking share are reported beside it. The template check is its own condition")

FORK_ENTROPY = 0.5
"""A position is *forking* when either model's entropy exceeds this (nats), or the two models'
top-1 tokens differ: where the student could go more than one way, i.e. where OPD's targets
matter. Near-deterministic positions (formatting, copying) agree for almost any same-tokenizer
pair and would dilute the score towards 1."""


def forking_mask(states: pd.DataFrame, fork_entropy: float = FORK_ENTROPY) -> np.ndarray:
    """True at forking positions (see :data:`FORK_ENTROPY`)."""
    top1_s = np.array([ids[0] for ids in states.topk_ids_s])
    top1_t = np.array([ids[0] for ids in states.topk_ids_t])
    return ((states.H_s.to_numpy() > fork_entropy) | (states.H_t.to_numpy() > fork_entropy)
            | (top1_s != top1_t))


def _dist(counter: Counter, keys: list) -> np.ndarray:
    v = np.array([counter.get(k, 0) for k in keys], dtype=float)
    return v / v.sum() if v.sum() > 0 else v


def signature_distance(ids_a: list[list[int]], ids_b: list[list[int]], marker_ids: set[int]
                       ) -> dict[str, float]:
    """Jensen–Shannon distances (base 2, in [0, 1]) between two sets of token sequences."""
    uni_a = Counter(t for s in ids_a for t in s)
    uni_b = Counter(t for s in ids_b for t in s)
    bi_a = Counter(p for s in ids_a for p in zip(s, s[1:]))
    bi_b = Counter(p for s in ids_b for p in zip(s, s[1:]))
    mk_a = Counter(t for s in ids_a for t in s if t in marker_ids)
    mk_b = Counter(t for s in ids_b for t in s if t in marker_ids)
    out = {}
    for name, a, b in (("unigram", uni_a, uni_b), ("bigram", bi_a, bi_b), ("markers", mk_a, mk_b)):
        keys = sorted(set(a) | set(b))
        out[f"js_{name}"] = float(jensenshannon(_dist(a, keys), _dist(b, keys), base=2)) \
            if keys and sum(a.values()) and sum(b.values()) else np.nan
    la = np.array([len(s) for s in ids_a], float)
    lb = np.array([len(s) for s in ids_b], float)
    out["mean_len_student"], out["mean_len_teacher"] = float(la.mean()), float(lb.mean())
    out["len_ratio"] = float(lb.mean() / la.mean()) if la.mean() > 0 else np.nan
    out["markers_per_token_student"] = sum(mk_a.values()) / max(1, la.sum())
    out["markers_per_token_teacher"] = sum(mk_b.values()) / max(1, lb.sum())
    return out


def marker_token_ids(tokenizer, vocab: int) -> set[int]:
    """Tokens that are pure punctuation / whitespace / newline: the "delimiters" of reasoning."""
    ids = set()
    for tok, i in tokenizer.get_vocab().items():
        if i >= vocab:
            continue
        text = tokenizer.convert_tokens_to_string([tok]) if hasattr(
            tokenizer, "convert_tokens_to_string") else tok
        stripped = text.strip()
        if text and (not stripped or all(not c.isalnum() for c in stripped)):
            ids.add(i)
    return ids


@register_probe("thinking", version=2, summary="thinking-pattern compatibility at forking "
                "positions, template check, structural signature, cross-likelihood -> score")
def thinking_probe(run: Run, marker_ids: list[int] | None = None,
                   fork_entropy: float = FORK_ENTROPY) -> pd.DataFrame:
    """Component table (``component, value, note``) plus a ``compatibility_score`` row."""
    states = run.states
    if len(states) == 0:
        raise OpdDiagError(f"{run.path} has no states; run `opd-diag capture` first")
    step0 = states[states.step == states.step.min()]
    per = state_metrics(step0)
    rows = [dict(component=c, value=float(per[c].mean()), note="student states, first step")
            for c in ("overlap_ratio", "overlap_mass_s", "overlap_mass_t", "entropy_gap", "rkl")]
    first = per[per.t < 4]
    rows.append(dict(component="first_tokens_rkl", value=float(first.rkl.mean()),
                     note="KL(p‖q) over the first 4 completion tokens"))
    rows.append(dict(component="top1_agreement",
                     value=float((np.stack(step0.topk_ids_s.to_numpy())[:, 0]
                                  == np.stack(step0.topk_ids_t.to_numpy())[:, 0]).mean()),
                     note="student argmax == teacher argmax"))
    template = run.table("template")
    tmpl_agree = None
    if len(template) and not template.same_rendering.all():
        tmpl_agree = float(template.top1_agreement.mean())
        rows.append(dict(component="template_kl", value=float(template.kl_own_vs_run.mean()),
                         note="teacher, own rendering vs run rendering, first tokens"))
        rows.append(dict(component="template_top1_agreement", value=tmpl_agree, note=""))
    if run.has_aux("teacher"):
        rows += _own_text_rows(run, marker_ids)
    del tmpl_agree  # its own condition (template alignment), never multiplied in
    cov = (per.overlap_mass_t / per.topk_mass_t).to_numpy()
    fork = forking_mask(step0, fork_entropy)
    rows.append(dict(component="teacher_topk_mass_covered", value=float(cov.mean()),
                     note="Σ_{v∈I} q(v) / Σ_{v∈S_q} q(v), all positions"))
    rows.append(dict(component="forking_share", value=float(fork.mean()),
                     note=f"share of positions where an entropy > {fork_entropy} or the top-1s "
                     "differ"))
    rows.append(dict(component="n_forking_positions", value=float(fork.sum()), note="count"))
    score = float(cov[fork].mean()) if fork.any() else float(cov.mean())
    rows.append(dict(component="teacher_topk_mass_covered_forking", value=score,
                     note="at forking positions (all positions when none forks)"))
    rows.append(dict(component="compatibility_score", value=score, note=SCORE_RULE))
    return pd.DataFrame(rows)


def _own_text_rows(run: Run, marker_ids: list[int] | None) -> list[dict]:
    teacher = run.aux("teacher")
    s_roll, t_roll = run.rollouts, teacher.rollouts
    markers = set(marker_ids) if marker_ids is not None else set(run.meta.get("marker_ids", []))
    sig = signature_distance([list(c) for c in s_roll.completion_ids],
                             [list(c) for c in t_roll.completion_ids], markers)
    rows = [dict(component=k, value=v, note="own reasoning: student vs teacher")
            for k, v in sig.items()]
    nll_on_student = float(-run.states.logp_t.mean())
    nll_on_own = float(-teacher.states.logp_s.mean())  # aux run: _s is the teacher
    rows.append(dict(component="teacher_nll_on_student_text", value=nll_on_student, note="nats/token"))
    rows.append(dict(component="teacher_nll_on_own_text", value=nll_on_own, note="nats/token"))
    rows.append(dict(component="cross_likelihood_gap", value=nll_on_student - nll_on_own,
                     note="teacher NLL on student text minus on its own text"))
    acc_t = t_roll.correct.dropna()
    if len(acc_t):
        rows.append(dict(component="teacher_sample_accuracy", value=float(acc_t.mean()), note=""))
    return rows
