"""Probes on hand-built tables with known answers, and end to end on tiny models."""

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from opd_diag.core.errors import OpdDiagError
from opd_diag.core.models import load_pair
from opd_diag.core.prompts import validate_prompts
from opd_diag.core.runs import load_run
from opd_diag.preflight import (
    PreflightConfig,
    Thresholds,
    Verdict,
    decide,
    overall,
    run_preflight,
)
from opd_diag.probes import get_probe, run_probe
from opd_diag.probes.horizon import auroc, back_to_front
from opd_diag.probes.novelty import (
    continuation_advantage,
    exclusive_solves,
    frontier_gap,
    frontier_prompts,
    second_stage_prompts,
)
from opd_diag.probes.tokens import reachability_frame


def test_auroc_matches_brute_force():
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=60), 1)  # ties on purpose
    labels = rng.random(60) < 0.4
    pos, neg = scores[labels], scores[~labels]
    brute = np.mean([1.0 if p > n else 0.5 if p == n else 0.0
                     for p, n in itertools.product(pos, neg)])
    assert auroc(scores, labels) == pytest.approx(brute)
    assert np.isnan(auroc(scores, np.ones(60, bool)))


def test_continuation_advantage_known_answer():
    rows = []
    for rid in range(6):
        for who in ("teacher", "student"):
            for s in range(2):
                rows.append(dict(rollout_id=str(rid), depth=0.0, prefix_len=0, continuer=who,
                                 sample=s, correct=(who == "teacher")))
                rows.append(dict(rollout_id=str(rid), depth=0.5, prefix_len=5, continuer=who,
                                 sample=s, correct=True))
    adv = continuation_advantage(pd.DataFrame(rows)).set_index("depth")
    assert adv.loc[0.0, "advantage"] == 1.0 and adv.loc[0.0, "ci_low"] == 1.0
    assert adv.loc[0.5, "advantage"] == 0.0 and adv.loc[0.5, "ci_high"] == 0.0


def test_exclusive_solves_known_answer():
    s = pd.DataFrame(dict(prompt_id=[0, 0, 1, 1, 2, 2], correct=[True, False, False, False,
                                                                 False, False]))
    t = pd.DataFrame(dict(prompt_id=[0, 1, 2], correct=[True, True, False]))
    ex = exclusive_solves(s, t)
    assert ex["teacher_exclusive_rate"] == pytest.approx(1 / 3)
    assert ex["student_exclusive_rate"] == 0.0
    assert ex["teacher_pass_at_n"] == pytest.approx(2 / 3)


def test_frontier_prompts_skip_only_settled_prompts():
    first = pd.DataFrame(dict(prompt_id=[0, 1, 2, 3], acc_student=[1.0, 0.0, 0.5, 1.0],
                              acc_teacher=[1.0, 0.0, 1.0, 0.75]))
    assert frontier_prompts(first, teacher_same_rendering=True) == [2, 3]
    # teacher rollouts under another rendering say nothing about the run's prompts: sample all
    assert frontier_prompts(first, teacher_same_rendering=False) == [0, 1, 2, 3]
    assert frontier_prompts(first.drop(columns="acc_teacher"), True) == [0, 1, 2, 3]


def test_frontier_gap_known_answer():
    first = pd.DataFrame(dict(prompt_id=range(8)))
    rows = [dict(prompt_id=p, model=m, sample=s, correct=(m == "teacher") or s % 2 == 0)
            for p in (2, 5) for m in ("teacher", "student") for s in range(4)]
    fg = frontier_gap(first, pd.DataFrame(rows))
    # two frontier prompts with gap 0.5 each, six settled prompts at 0: 1.0 / 8
    assert fg["score"] == pytest.approx(0.125)
    assert fg["gap_on_frontier"] == pytest.approx(0.5)
    assert fg["n_prompts"] == 8 and fg["n_frontier_prompts"] == 2
    assert fg["samples_per_prompt"] == 4
    assert fg["ci_low"] <= fg["score"] <= fg["ci_high"]
    none = frontier_gap(first, pd.DataFrame(columns=["prompt_id", "model", "sample", "correct"]))
    assert none["score"] == 0.0 and none["ci_high"] == 0.0 and none["n_frontier_prompts"] == 0
    with pytest.raises(OpdDiagError, match="student"):
        frontier_gap(first, pd.DataFrame(rows).query("model == 'teacher'"))


def _simulate_two_phase(rng, p_s, p_t, reps=300, settled_share=0.0, n1=4, n2=8):
    """Per replicate: the two-phase score, and on the frontier prompts the mean error (estimate
    minus true gap) of the two-phase gap and of the stage-1 + stage-2 pooled gap."""
    n = len(p_s)
    score, err_two, err_pooled = [], [], []
    for rep in range(reps):
        s1, t1 = rng.random((n, n1)) < p_s[:, None], rng.random((n, n1)) < p_t[:, None]
        first = pd.DataFrame(dict(prompt_id=range(n), acc_student=s1.mean(1),
                                  acc_teacher=t1.mean(1)))
        front = frontier_prompts(first, True)
        chosen = second_stage_prompts(first, True, settled_share=settled_share,
                                      min_settled=0 if settled_share == 0 else 4, seed=rep)
        s2, t2 = rng.random((n, n2)) < p_s[:, None], rng.random((n, n2)) < p_t[:, None]
        c = np.asarray(chosen, int)
        rows = pd.DataFrame(dict(prompt_id=np.tile(np.repeat(c, n2), 2),
                                 model=np.repeat(["teacher", "student"], len(c) * n2),
                                 sample=np.tile(np.arange(n2), 2 * len(c)),
                                 correct=np.r_[t2[c].ravel(), s2[c].ravel()]))
        score.append(frontier_gap(first, rows)["score"])
        truth = p_t[front] - p_s[front]
        err_two.append(np.mean(t2[front].mean(1) - s2[front].mean(1) - truth))
        pooled = (np.c_[t1[front], t2[front]].mean(1) - np.c_[s1[front], s2[front]].mean(1))
        err_pooled.append(np.mean(pooled - truth))
    return np.mean(score), np.mean(err_two), np.mean(err_pooled)


def test_two_phase_gap_is_unbiased_where_pooling_is_not():
    """Frontier prompts are chosen *because* a first-stage sample failed; re-using those samples
    inflates a better teacher's gap there, fresh second-stage samples do not."""
    rng = np.random.default_rng(0)
    p_s = rng.uniform(0.3, 1.0, 40)
    score, err_two, err_pooled = _simulate_two_phase(rng, p_s, p_s)  # teacher = student
    assert abs(score) < 0.01 and abs(err_two) < 0.01
    p_t = np.ones(40)  # a teacher that always solves
    score, err_two, err_pooled = _simulate_two_phase(rng, p_s, p_t)
    assert abs(err_two) < 0.01
    assert err_pooled > 0.015  # the selection bias the design avoids (measured: 0.023)


@pytest.mark.slow
def test_resampling_settled_prompts_removes_the_settled_as_zero_bias():
    """The issue's case: teacher at 10%, student at 2%, 4 + 4 first-stage samples: ~60% of the
    prompts are "settled" (all wrong) although their true gap is 0.08. Counting them as 0 (the
    old estimator) understates the gap; re-sampling a random share of them and weighting by the
    inverse inclusion probability is unbiased."""
    rng = np.random.default_rng(1)
    n, truth = 64, 0.08
    p_s, p_t = np.full(n, 0.02), np.full(n, 0.10)
    old, _, _ = _simulate_two_phase(rng, p_s, p_t, reps=400, settled_share=0.0)
    new, _, _ = _simulate_two_phase(rng, p_s, p_t, reps=400, settled_share=0.25)
    # Monte-Carlo s.e. of the mean over 400 replicates is ~0.002 (per-replicate s.d. ~0.04)
    assert old < truth - 0.03, old  # measured 0.034: less than half the true gap
    assert abs(new - truth) < 0.008, new
    # heterogeneous prompts (some easy for both, some not), the same comparison
    p_s = rng.uniform(0.0, 0.3, n)
    p_t = np.clip(p_s + rng.uniform(0.0, 0.2, n), 0, 1)
    old, _, _ = _simulate_two_phase(rng, p_s, p_t, reps=400, settled_share=0.0)
    new, _, _ = _simulate_two_phase(rng, p_s, p_t, reps=400, settled_share=0.25)
    gap = float(np.mean(p_t - p_s))
    assert old < gap - 0.012 and abs(new - gap) < 0.008, (old, new, gap)  # 0.084, 0.102, 0.103


def test_second_stage_prompts_and_weights():
    first = pd.DataFrame(dict(prompt_id=range(10), acc_student=[0.0] * 8 + [0.5, 1.0],
                              acc_teacher=[0.0] * 8 + [1.0, 1.0]))
    chosen = second_stage_prompts(first, True, settled_share=0.2, min_settled=2, seed=3)
    assert 8 in chosen and len(chosen) == 1 + 2  # the frontier prompt + 2 of 9 settled
    rows = [dict(prompt_id=p, model=m, sample=0, correct=(m == "teacher")) for p in chosen
            for m in ("teacher", "student")]
    fg = frontier_gap(first, pd.DataFrame(rows))
    # gap 1 everywhere it was measured: 1 (frontier) + 2 * 9/2 (settled, weight S/m) over 10
    assert fg["score"] == pytest.approx((1 + 9) / 10)
    assert fg["settled_resampled"] == 2 and fg["n_settled_prompts"] == 9
    with pytest.raises(OpdDiagError, match="settled_share"):
        second_stage_prompts(first, True, settled_share=2)


def _states(ids_s, lp_s, lq_on_s, ids_t, lq_t, lp_on_t, token):
    n = len(token)
    return pd.DataFrame(dict(
        rollout_id=["r"] * n, step=-1, t=range(n), T=n, token=token,
        topk_ids_s=list(np.array(ids_s)), topk_logp_s=list(np.log(lp_s)),
        logp_t_on_topk_s=list(np.log(lq_on_s)), topk_ids_t=list(np.array(ids_t)),
        topk_logp_t=list(np.log(lq_t)), logp_s_on_topk_t=list(np.log(lp_on_t)),
        rkl=np.ones(n)))


def test_reachability_known_answer():
    # state 0: teacher's top-1 (id 9) has student prob 1e-5 and is outside the student's top-2
    # state 1: teacher's top-1 (id 1) is the student's sampled token: no disagreement
    st = _states(ids_s=[[1, 2], [1, 2]], lp_s=[[0.9, 0.09], [0.6, 0.3]],
                 lq_on_s=[[0.05, 0.05], [0.7, 0.2]], ids_t=[[9, 1], [1, 2]],
                 lq_t=[[0.9, 0.05], [0.7, 0.2]], lp_on_t=[[1e-5, 0.9], [0.6, 0.3]],
                 token=[1, 1])
    r = reachability_frame(st)
    assert r.disagree.tolist() == [True, False]
    assert r.unreachable.tolist() == [True, False]
    assert not r.teacher_top1_in_student_topk.iloc[0]
    assert r.corrective_mass.iloc[0] == pytest.approx(0.9 - 1e-5)
    assert r.corrective_mass_outside_s.iloc[0] == pytest.approx(0.9 - 1e-5)


def test_back_to_front_detector():
    rows = []
    for step in range(6):
        for pos in range(5):
            # late positions blow up first: onset step = 5 - pos
            h = 1.0 if step < 5 - pos or pos == 0 else 3.0
            rows.append(dict(step=step, position_bin=pos, H_s=h))
    assert back_to_front(pd.DataFrame(rows))["detected"]
    flipped = pd.DataFrame(rows).assign(position_bin=lambda d: 4 - d.position_bin)
    assert not back_to_front(flipped)["detected"]


def _answer_verifier(text, answer):
    return answer in text.split()


@pytest.fixture(scope="module")
def identical_preflight(same_pair, tmp_path_factory):
    import shutil

    pair = load_pair(*same_pair)
    # the same weights in another directory: a reference at the teacher's own path is refused
    # (tests/test_preflight_cli.py); a copy keeps every distance 0 and the ratio undefined
    copy = shutil.copytree(same_pair[0], tmp_path_factory.mktemp("ref") / "m")
    prompts = validate_prompts(pd.DataFrame({"prompt": [f"w{i} w{i + 1} w{i + 2}" for i in range(6)],
                                             "answer": [f"w{i + 3}" for i in range(6)]}))
    cfg = PreflightConfig(n_prompts=6, n_samples=2, max_new_tokens=10, depths=(0.0, 0.5),
                          max_continuation_rollouts=6)
    return run_preflight(pair, prompts, tmp_path_factory.mktemp("pf") / "run", config=cfg,
                         verifier=_answer_verifier,
                         references={"copy": load_pair(copy, copy).student})


def test_identical_models_compatible_and_not_novel(identical_preflight):
    v = identical_preflight
    run = load_run(v.run)
    thinking = run.probe("thinking").set_index("component").value
    assert thinking["compatibility_score"] == pytest.approx(1.0)
    assert thinking["cross_likelihood_gap"] == pytest.approx(
        -run.states.logp_t.mean() + run.aux("teacher").states.logp_s.mean())
    nov = run.probe("novelty")
    cont = nov[nov.section == "continuation"]
    assert (cont[cont.metric == "advantage"].value == 0).all()  # same model, same seeds
    assert nov[nov.metric == "novelty_score"].value.iloc[0] == 0.0
    ref = nov[nov.section == "reference"].set_index("metric").value
    assert ref["kl_teacher_ref"] == pytest.approx(0.0, abs=1e-5)
    table = v.table.set_index("condition")
    assert table.loc["thinking compatibility", "status"] == "GO"
    assert table.loc["teacher novelty", "status"] == "NO-GO"
    # the tiny models run to the 10-token cap: the truncation row turns the NO-GO into CAUTION
    assert v.verdict == "CAUTION" and v.exit_code == 3 and "truncation" in v.because
    assert "post-trained" in v.render()  # the failing novelty row still shows its recovery
    # teacher == student: KL(student‖teacher) = 0, the distance ratio is undefined -> CAUTION
    assert table.loc["distinct teacher", "status"] == "CAUTION"
    assert "could not measure" in table.loc["distinct teacher", "rule"]


def test_probe_tables_are_versioned(identical_preflight):
    run = load_run(identical_preflight.run)
    for name in ("overlap", "thinking", "reachability", "horizon", "token_level", "novelty"):
        df = run.probe(name)
        assert (df.probe == name).all() and (df.probe_version == get_probe(name).version).all()
    tl = run.probe("token_level")
    tip = tl[(tl.group == "tip") & tl.metric.str.endswith("_share") & ~tl.metric.str.contains("kl")]
    assert tip.value.sum() == pytest.approx(1.0)


def _probe_tables(compat=0.3, template=0.5, unreach=0.5, nov=(0.2, 0.1, 0.3), max_len=40.0,
                  reason="the reward's AUROC falls below 0.6 from ~40 tokens", estimand="two_phase_ipw",
                  refs=None):
    thinking = pd.DataFrame(dict(component=["compatibility_score", "forking_share",
                                            "teacher_topk_mass_covered", "template_top1_agreement"],
                                 value=[compat, 0.2, 0.99, template]))
    reach = pd.DataFrame({"grad_share_unreachable": [unreach], "grad_ratio": [1e-2],
                          "measured_on": ["failed_rollouts"],
                          "grad_share_unreachable@1e-02": [unreach],
                          "grad_share_unreachable@1e-06": [unreach / 2]})
    novelty = pd.DataFrame(dict(section="score", key=estimand,
                                metric=["novelty_score", "novelty_ci_low", "novelty_ci_high"],
                                value=list(nov)))
    if refs is not None:
        novelty = pd.concat([novelty, pd.DataFrame(dict(
            section="reference", key="base", metric=["relative_distance", "reward_correlation"],
            value=list(refs)))], ignore_index=True)
    horizon = pd.DataFrame(dict(section=["summary"], key=[reason], metric=["recommended_max_len"],
                                value=[max_len]))
    return thinking, reach, novelty, horizon


ALL_CONDITIONS = ["answer checking", "thinking compatibility", "template alignment",
                  "reachability", "teacher novelty", "distinct teacher", "horizon"]


def test_decide_rules():
    t = decide(*_probe_tables(), Thresholds(), max_new_tokens=100)
    assert t.condition.tolist() == ALL_CONDITIONS  # every condition, always
    status = t.set_index("condition").status
    assert status["thinking compatibility"] == "NO-GO"
    assert status["template alignment"] == "CAUTION"  # its own row, not multiplied in
    assert status["reachability"] == "NO-GO"
    assert status["teacher novelty"] == "GO"
    assert status["horizon"] == "CAUTION"
    assert status["distinct teacher"] == status["answer checking"] == "not checked"
    assert overall(t) == "NO-GO"
    v = Verdict(overall(t), t, Path("r"), 1.0)
    assert v.headline() == "NO-GO because: thinking compatibility, reachability"
    text = v.render()
    assert all(c in text for c in ALL_CONDITIONS)
    # recovery only under failing rows: the GO novelty row's advice is not printed
    assert "post-trained" not in text and "cold start" in text
    assert "render the teacher's prompts" in text  # the template's own recovery


def test_decide_nan_is_never_go_and_not_determined_horizon():
    t = decide(*_probe_tables(compat=0.99, template=np.nan, unreach=np.nan, nov=(0.2, 0.1, 0.3),
                              max_len=np.nan, reason="not determined: the reward's AUROC stays "
                              ">= 0.6 at every depth (no degradation with depth)"),
               Thresholds(), max_new_tokens=100)
    status = t.set_index("condition").status
    assert status["reachability"] == "CAUTION"
    assert "could not measure" in t.set_index("condition").rule["reachability"]
    assert status["horizon"] == "GO" and status["template alignment"] == "not checked"
    nan_nov = decide(*_probe_tables(compat=0.99, nov=(np.nan, np.nan, np.nan)), Thresholds(),
                     max_new_tokens=100).set_index("condition").status
    assert nan_nov["teacher novelty"] == "CAUTION"
    none = decide(*_probe_tables(compat=0.99, estimand="none"), Thresholds(),
                  max_new_tokens=100).set_index("condition").status
    assert none["teacher novelty"] == "CAUTION"
    biased = decide(*_probe_tables(compat=0.99, nov=(0.0, 0.0, 0.0),
                                   estimand="two_phase_settled_as_zero"), Thresholds(),
                    max_new_tokens=100).set_index("condition").status
    assert biased["teacher novelty"] == "CAUTION"  # a NO-GO on a biased-to-0 estimate is not one
    no_answers = decide(*_probe_tables(compat=0.99)[:2], None, _probe_tables()[3], Thresholds(),
                        max_new_tokens=100).set_index("condition").status
    assert no_answers["teacher novelty"] == "CAUTION"


def test_decide_distinct_teacher_with_references():
    close = decide(*_probe_tables(refs=(0.2, 0.95)), Thresholds(), max_new_tokens=100)
    row = close.set_index("condition").loc["distinct teacher"]
    assert row.status == "CAUTION" and "base" in row.rule and "0.95" in row.rule
    far = decide(*_probe_tables(refs=(3.0, 0.1)), Thresholds(), max_new_tokens=100)
    assert far.set_index("condition").status["distinct teacher"] == "GO"


def test_novelty_without_evidence_is_an_error(tiny_pair, tmp_path):
    from opd_diag.states.collect import run_capture
    from opd_diag.states.rollout import SamplingConfig

    pair = load_pair(*tiny_pair)
    prompts = validate_prompts(pd.DataFrame({"prompt": ["w1 w2"]}))
    run = load_run(run_capture(pair, prompts, tmp_path / "r", progress=False,
                               sampling=SamplingConfig(n_samples=1, max_new_tokens=4)))
    with pytest.raises(OpdDiagError, match="no novelty evidence"):
        run_probe("novelty", run)
    with pytest.raises(OpdDiagError, match="depths"):
        PreflightConfig(depths=(1.5,))


def test_compatibility_advice_names_the_template_when_the_template_fails():
    both = decide(*_probe_tables(compat=0.85, template=0.4), Thresholds(), max_new_tokens=100)
    row = both.set_index("condition").loc["thinking compatibility"]
    assert row.status == "CAUTION" and "render the prompts the teacher's way first" in row.recovery
    alone = decide(*_probe_tables(compat=0.85, template=np.nan), Thresholds(), max_new_tokens=100)
    row = alone.set_index("condition").loc["thinking compatibility"]
    assert row.recovery.startswith("off-policy cold start")  # no template problem: cold start


@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_a_fallback_novelty_without_an_interval_cannot_decide(rate):
    t = decide(*_probe_tables(compat=0.99, nov=(rate, rate, rate),
                              estimand="teacher_exclusive_solve_rate"), Thresholds(),
               max_new_tokens=100).set_index("condition")
    assert t.status["teacher novelty"] == "CAUTION"
    assert "no confidence interval" in t.rule["teacher novelty"]
    # the same numbers from the two-phase estimator are a real (zero-width) interval: it decides
    t = decide(*_probe_tables(compat=0.99, nov=(rate, rate, rate), estimand="two_phase_ipw"),
               Thresholds(), max_new_tokens=100).set_index("condition")
    assert t.status["teacher novelty"] == ("NO-GO" if rate == 0.0 else "GO")


def test_expected_effect_band_and_when_it_cannot_be_estimated():
    from opd_diag.preflight.rules import expected_effect

    tables = _probe_tables(compat=0.99, unreach=0.25, nov=(0.2, 0.1, 0.3))
    t = decide(*tables, Thresholds(), max_new_tokens=100)
    text = expected_effect(t, tables[2])
    assert "up to 75% of the gap" in text and "+0.075 to +0.225" in text
    neg = _probe_tables(compat=0.99, unreach=0.25, nov=(0.0, -0.05, 0.05))
    assert "cannot be estimated" in expected_effect(decide(*neg, Thresholds(), 100), neg[2])
    nan = _probe_tables(compat=0.99, unreach=np.nan)
    assert expected_effect(decide(*nan, Thresholds(), 100), nan[2]).startswith(
        "cannot be estimated (novelty or reachability not measured)")


def test_auroc_per_token_bin_with_prompt_cis():
    from opd_diag.probes.horizon import reward_auroc_by_depth, reward_auroc_by_tokens, token_edges

    rng = np.random.default_rng(0)
    rows, states = [], []
    for p in range(30):
        for n in range(4):
            rid, ok, T = f"p{p}/n{n}", bool(rng.random() < 0.5), int(rng.integers(40, 120))
            rows.append({"rollout_id": rid, "prompt_id": p, "correct": ok})
            for t in range(T):
                # informative before token 32, pure noise after
                signal = (1.0 if ok else -1.0) if t < 32 else 0.0
                states.append({"rollout_id": rid, "t": t, "T": T, "step": -1, "logp_s": -1.0,
                               "logp_t": -1.0 + signal + rng.normal(0, 1.0)})
    roll, st = pd.DataFrame(rows), pd.DataFrame(states)
    assert token_edges(100) == [0, 16, 32, 64, 128]
    tok = reward_auroc_by_tokens(st, roll, n_boot=200).set_index("tokens_from")
    assert tok.loc[0, "auroc_rbar"] > 0.9 and tok.loc[16, "auroc_rbar"] > 0.9
    assert 0.3 < tok.loc[64, "auroc_rbar"] < 0.7  # per bin: the early signal does not leak in
    assert tok.loc[64, "auroc_ci_low"] < 0.5 < tok.loc[64, "auroc_ci_high"]
    assert tok.loc[0, "auroc_ci_low"] > 0.8 and tok.loc[0, "n_prompts"] == 30
    frac = reward_auroc_by_depth(st, roll, n_bins=4, n_boot=200)
    assert frac.auroc_rbar.iloc[0] > frac.auroc_rbar.iloc[-1]
    assert frac.mean_position.is_monotonic_increasing


def test_teacher_noise_and_conflict_rates_by_hand():
    """OPSA's wrong-sign rate on answer tokens (all / correct / incorrect / signal-bearing), the
    near-zero-advantage share and RA-OPD's conflict rate, on a frame small enough to count."""
    from opd_diag.probes.tokens import NEAR_ZERO_ADVANTAGE, _outcome_rows

    # rollout 0: correct, 4 content tokens + EOS; rollout 1: incorrect, truncated at 3 tokens
    states = pd.DataFrame({"rollout_id": [0, 0, 0, 0, 0, 1, 1, 1],
                           "t": [0, 1, 2, 3, 4, 0, 1, 2], "T": [5] * 5 + [3] * 3})
    rollouts = pd.DataFrame({"rollout_id": [0, 1], "stop_reason": ["eos", "length"],
                             "correct": [True, False]})
    tiny = NEAR_ZERO_ADVANTAGE / 10
    # A = log q - log p per position; answer tokens = the last 2 content positions:
    # rollout 0 -> t 2, 3 (t 4 is the EOS), rollout 1 -> t 1, 2
    reward = np.array([5.0, 5.0, -0.5, -tiny, 0.0, -3.0, 0.2, tiny])
    rows = pd.DataFrame(_outcome_rows(0, states, rollouts, reward, n_answer_tokens=2))
    got = rows.set_index("metric").value
    # wrong sign: negative on the correct rollout (t 2: yes, t 3: yes, rounding-size),
    # positive on the incorrect one (t 1: yes, t 2: yes, rounding-size)
    assert got["wrong_sign_rate_all"] == pytest.approx(4 / 4)
    assert got["wrong_sign_rate_correct"] == pytest.approx(2 / 2)
    assert got["wrong_sign_rate_incorrect"] == pytest.approx(2 / 2)
    assert got["wrong_sign_rate_signal"] == pytest.approx(2 / 2)  # only t 2 / t 1 count
    assert got["near_zero_share_answer"] == pytest.approx(2 / 4)
    # r̄: rollout 0 mean (5 + 5 - 0.5 - tiny + 0) / 5 > 0, correct -> no conflict;
    # rollout 1 mean (-3 + 0.2 + tiny) / 3 < 0, incorrect -> no conflict
    assert got["conflict_rate"] == 0.0
    flipped = pd.DataFrame(_outcome_rows(0, states, rollouts, -reward, 2)).set_index("metric")
    assert flipped.value["conflict_rate"] == 1.0
    assert flipped.value["wrong_sign_rate_all"] == pytest.approx(0.0)
