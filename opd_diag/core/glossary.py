"""What each number means, in words: one place the CLI, the reports and the notebooks read.

``GLOSSARY[column] = (what it is, how to read it)``. "How to read it" gives the good / bad range
the paper (arXiv 2604.13016) or our experiments support; it is guidance for a reader, never a
threshold (the verdict's thresholds live in ``opd_diag.preflight.rules.Thresholds``).
"""

from __future__ import annotations

GLOSSARY: dict[str, tuple[str, str]] = {
    "overlap_ratio": (
        "share of the student's top-k tokens that are also in the teacher's top-k (|S_p ∩ S_q|/k), "
        "per visited state, averaged",
        "0–1, higher is better; rises during OPD that works (paper: about 0.72 → above 0.91 "
        "over one epoch); a ratio that falls sharply mid-run is the late-stage collapse"),
    "overlap_ratio_rollout_mean": (
        "overlap_ratio averaged per rollout first, then over rollouts",
        "as overlap_ratio; differs from it when long rollouts behave differently"),
    "overlap_mass_s": (
        "student probability on the shared top-k tokens",
        "0–1; 0.97–0.99 in successful OPD (paper App. B.1); well below means the student's mass "
        "sits on tokens the teacher does not rank"),
    "overlap_mass_t": (
        "teacher probability on the shared top-k tokens",
        "0–1; 0.97–0.99 in successful OPD; low means the teacher's preferred tokens are outside the "
        "student's top-k"),
    "eq7_advantage": (
        "paper Eq. 7 overlap-token advantage, −KL(p̄‖q̄)/|I| on the shared tokens (nats)",
        "≤ 0; closer to 0 is better; rises toward 0 when OPD works"),
    "thunlp_adv_intersection": (
        "thunlp/OPD's logged form of the overlap advantage (weights over the student's top-k)",
        "≤ 0 typically; compare across steps of one run, not across codebases"),
    "entropy_gap": (
        "|H(teacher) − H(student)| at the same state, full vocabulary (nats)",
        "≥ 0; lower is better; shrinks when OPD works"),
    "H_s": ("student next-token entropy, full vocabulary (nats)",
            "≥ 0; a rise at late positions over training is the back-to-front destabilisation"),
    "H_t": ("teacher next-token entropy at the student's states (nats)", "≥ 0"),
    "rkl": ("exact reverse KL(student ‖ teacher) per state (nats) — what OPD minimises",
            "≥ 0; lower is closer; should fall during training"),
    "fkl": ("exact forward KL(teacher ‖ student) per state (nats)", "≥ 0; lower is closer"),
    "sampled_rkl": (
        "log p(ŷ) − log q(ŷ) on the sampled token (minus the OPD reward)",
        "its mean estimates rkl; large positive values mark tokens the teacher rejects"),
    "topk_mass_s": ("student probability on its own top-k", "0–1; near 1 means k covers the student"),
    "topk_mass_t": ("teacher probability on its own top-k", "0–1; near 1 means k covers the teacher"),
    "compatibility_score": (
        "pre-flight thinking-pattern compatibility: the teacher's mass on the shared top-k at the "
        "student's states (not the same as overlap_ratio, which counts shared tokens regardless "
        "of their probability)",
        "0–1, higher is better; see the verdict table for its decision line"),
    "n_rollouts": ("number of rollouts aggregated", "a count"),
    "n_states": ("number of visited states (completion positions) aggregated", "a count"),
    "step": ("training step the rows come from; −1 = an offline capture (no training)",
             "an index"),
}

COUNT_COLUMNS = frozenset({"n_rollouts", "n_states", "step", "k", "n_tokens", "T", "n_prompts"})


def meaning(column: str) -> str:
    """``what it is — how to read it`` for a known column, else an empty string."""
    what, how = GLOSSARY.get(column, ("", ""))
    return f"{what} — {how}" if what else ""
