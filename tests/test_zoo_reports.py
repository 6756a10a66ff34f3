"""The committed zoo reports are regenerated from their committed tables (no drift), and the
pre-flight verdicts agree with the measured OPD outcomes they are compared with."""

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from opd_diag.zoo.phenomena import render

REPORTS = Path(__file__).resolve().parent.parent / "reports"


def _load_benchmark():
    path = REPORTS.parent / "benchmarks" / "preflight_validation.py"
    spec = importlib.util.spec_from_file_location("preflight_validation", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(not (REPORTS / "zoo-phenomena.csv").exists(), reason="no committed report")
def test_phenomena_markdown_matches_its_tables():
    df = pd.read_csv(REPORTS / "zoo-phenomena.csv")
    val = pd.read_csv(REPORTS / "zoo-validation.csv")
    assert (REPORTS / "zoo-phenomena.md").read_text() == render(df, val)
    assert set(df.reproduced) <= {"yes", "no", "partial", "undetermined", "confounded", "not run"}
    assert list(df.id) == list(range(1, 19))
    # the success claim in the table is the number in the validation table
    success = val.set_index("run").loc["opd-success"]
    assert f"{success['gap_recovery/5d']:.3f}" in df.set_index("id").loc[11, "ours"]


@pytest.mark.skipif(not (REPORTS / "preflight-validation.csv").exists(),
                    reason="no committed report")
def test_preflight_validation_markdown_matches_its_table():
    df = pd.read_csv(REPORTS / "preflight-validation.csv")
    assert (REPORTS / "preflight-validation.md").read_text() == _load_benchmark().render(df)
    judged = df.dropna(subset=["opd_run"])  # pairs with a measured OPD outcome
    assert len(judged) >= 5
    val = pd.read_csv(REPORTS / "zoo-validation.csv").set_index("run")
    for _, row in judged.iterrows():
        assert row.gap_recovery == pytest.approx(val.loc[row.opd_run, "gap_recovery/5d"])


def test_partial_rerun_merges_into_the_committed_tables():
    from opd_diag.zoo.phenomena import NOT_RUN, merge_phenomena, merge_validation

    committed_val = pd.DataFrame({"run": ["opd-success", "opd-incompatible-coldstart",
                                          "opd-no-novelty"], "x": [1.0, 2.0, 3.0]})
    fresh_val = pd.DataFrame({"run": ["opd-incompatible-coldstart"], "x": [9.0]})
    val = merge_validation(committed_val, fresh_val)
    assert val.run.tolist() == ["opd-success", "opd-incompatible-coldstart", "opd-no-novelty"]
    assert val.x.tolist() == [1.0, 9.0, 3.0]
    cols = ["id", "phenomenon", "paper", "ours", "reproduced"]
    committed = pd.DataFrame([(1, "a", "p", "measured", "yes"), (2, "b", "p", "old", "no"),
                              (3, "c", "p", NOT_RUN, NOT_RUN)], columns=cols)
    fresh = pd.DataFrame([(1, "a", "p", NOT_RUN, NOT_RUN), (2, "b", "p", "new", "yes"),
                          (3, "c", "p", NOT_RUN, NOT_RUN)], columns=cols)
    merged = merge_phenomena(committed, fresh)
    assert merged.ours.tolist() == ["measured", "new", NOT_RUN]  # 1 was not re-run: kept
    assert merged.reproduced.tolist() == ["yes", "yes", NOT_RUN]
    assert list(merged.columns) == cols


@pytest.mark.skipif(not (REPORTS / "zoo-v2-dynamics.csv").exists(), reason="no committed report")
def test_phenomena_v2_columns_rederived_from_committed_tables():
    from opd_diag.zoo.phenomena import V2_COLUMNS, _with_v2_content, apply_v2, collect_v2

    df = pd.read_csv(REPORTS / "zoo-phenomena.csv")
    probes = pd.read_csv(REPORTS / "zoo-v2-preflight-probes.csv")
    extra = pd.read_csv(REPORTS / "zoo-v2-extra-items.csv")
    v2 = collect_v2(pd.read_csv(REPORTS / "zoo-v2-dynamics.csv"),
                    pd.read_csv(REPORTS / "zoo-v2-validation.csv"), probes, extra)
    again = _with_v2_content(apply_v2(df, v2), REPORTS, None)  # row 17: the v2 content tables
    pd.testing.assert_frame_equal(again[list(V2_COLUMNS)], df[list(V2_COLUMNS)])
    # row 10's second teacher: without its runs that half is "not run"; a distilled student
    # that kept its post-training skill fails it
    no_extra = collect_v2(pd.read_csv(REPORTS / "zoo-v2-dynamics.csv"),
                        pd.read_csv(REPORTS / "zoo-v2-validation.csv"), probes).set_index("id")
    assert "toward v2-student-0-long not run" in no_extra.loc[10, "zoo v2 (held out)"]
    kept = extra.copy()
    kept.loc[(kept.run == "teacher-v2-student-0-long") & (kept.role == "after"), "correct"] = 1
    edited = collect_v2(pd.read_csv(REPORTS / "zoo-v2-dynamics.csv"),
                        pd.read_csv(REPORTS / "zoo-v2-validation.csv"), probes, kept)
    row10 = edited.set_index("id").loc[10]
    assert "→ 1.000 toward v2-student-0-long" in row10["zoo v2 (held out)"]
    assert row10["v2 result"] == "partial"  # the first half (toward v2-student-0) still holds
    # row 15 (the cold start): yes as committed; a cold-started student that OPD left at 0 on
    # `hard` keeps only the overlap half
    assert v2.set_index("id").loc[15, "v2 result"] == "yes"
    lost = extra.copy()
    lost.loc[(lost.run == "coldstart") & (lost.role == "after"), "correct"] = 0
    row15 = collect_v2(pd.read_csv(REPORTS / "zoo-v2-dynamics.csv"),
                       pd.read_csv(REPORTS / "zoo-v2-validation.csv"), probes, lost)
    assert row15.set_index("id").loc[15, "v2 result"] == "partial"
    assert "0.000 → 0.000" in row15.set_index("id").loc[15, "zoo v2 (held out)"]
    # hand-edited pre-flight probe values change the rows derived from them
    edit = probes.copy()
    same = (edit.pair == "v2-reverse") & (edit.metric == "kl_teacher_ref")
    edit.loc[same, "value"] = 10.0  # the same-pipeline reference no longer looks identical
    bad = (edit.pair == "v2-out-of-reach") & (edit.metric == "auroc_rbar")
    edit.loc[bad, "value"] = 0.5  # r̄ no longer separates for the failed teacher
    cont = (edit.pair == "v2-long-horizon") & (edit.metric == "advantage")
    edit.loc[cont, "value"] = 0.2  # no decay with depth
    edited = collect_v2(pd.read_csv(REPORTS / "zoo-v2-dynamics.csv"),
                        pd.read_csv(REPORTS / "zoo-v2-validation.csv"), edit).set_index("id")
    assert edited.loc[9, "v2 result"] == "partial" and edited.loc[12, "v2 result"] == "partial"
    assert edited.loc[13, "v2 result"] == "no"
    tl = (edit.pair == "v2-long-horizon") & (edit.probe == "token_level")
    edit.loc[tl & (edit.metric == "wrong_sign_rate_all"), "value"] = 0.4  # inside both bands
    edit.loc[tl & (edit.metric == "conflict_rate"), "value"] = 0.6
    val = pd.read_csv(REPORTS / "zoo-v2-validation.csv")
    val.loc[val.pair == "v2-template", "acc_after/hard"] = 0.9  # misaligned ends ahead
    edited = collect_v2(pd.read_csv(REPORTS / "zoo-v2-dynamics.csv"), val, edit).set_index("id")
    assert edited.loc[18, "v2 result"] == "yes" and edited.loc[16, "v2 result"] == "no"
    # a hand-edited dynamics table changes the derived result
    dyn = pd.read_csv(REPORTS / "zoo-v2-dynamics.csv")
    dyn.loc[dyn.pair == "v2-long-horizon", "overlap_mass_min"] = 0.5
    edited = collect_v2(dyn, pd.read_csv(REPORTS / "zoo-v2-validation.csv")).set_index("id")
    assert edited.loc[1, "v2 result"] != "yes"


@pytest.mark.skipif(not (REPORTS / "zoo-v2-sweep.csv").exists(), reason="no committed report")
def test_sweep_claims_rederived_from_items():
    from opd_diag.zoo.phenomena import SWEEP_IDS, apply_sweep
    from opd_diag.zoo.v2.sweep import claims

    items = pd.read_csv(REPORTS / "zoo-v2-sweep-items.csv")
    committed = pd.read_csv(REPORTS / "zoo-v2-sweep.csv")
    blank = {"collapsed": ""}  # a CSV reads the empty "collapsed" back as NaN
    pd.testing.assert_frame_equal(claims(items).fillna(blank), committed.fillna(blank),
                                  check_dtype=False)
    df = pd.read_csv(REPORTS / "zoo-phenomena.csv")
    again = apply_sweep(df, committed)
    sel = df.id.isin(SWEEP_IDS)
    assert again[sel].reproduced.tolist() == df[sel].reproduced.tolist()
    # flipping a variant's answers changes the claims
    flipped = items.copy()
    mask = flipped.variant == "topk16-intersection"
    flipped.loc[mask, "correct"] = 1 - flipped.loc[mask, "correct"]
    assert not claims(flipped).equals(committed)


def test_sweep_judge_rules():
    from opd_diag.zoo.v2.sweep import EQUIV, judge, phenomenon_status

    assert judge("equal", 0.02, -0.08, 0.12, True) == "holds"
    assert judge("equal", 0.02, -0.08, 0.12, False) == "undetermined"  # reference never learned
    assert judge("equal", 0.3, 0.18, 0.42, True) == "fails"
    assert judge("equal", 0.1, -0.05, 0.25, True) == "undetermined"
    assert judge("worse", -0.2, -0.3, -0.1, True) == "holds"
    assert judge("worse", 0.0, -EQUIV + 0.01, 0.1, True) == "fails"
    assert judge("worse", -0.1, -0.25, 0.05, True) == "undetermined"
    with pytest.raises(ValueError, match="unknown relation"):
        judge("better", 0, 0, 0, True)
    assert phenomenon_status(["holds", "holds"]) == "yes"
    assert phenomenon_status(["holds", "fails"]) == "partial"
    assert phenomenon_status(["fails", "undetermined"]) == "no"
    assert phenomenon_status(["undetermined"]) == "undetermined"
    assert phenomenon_status(["not run", "not run"]) == "not run"
    assert phenomenon_status(["holds", "confounded"]) == "confounded"


def test_sweep_row_status_takes_the_first_family_that_did_not_collapse():
    from opd_diag.zoo.v2.sweep import row_status

    halves = pd.DataFrame({"family": ["lr3e-4", "lr3e-4", "low", "low"],
                           "result": ["confounded", "holds", "holds", "fails"]})
    assert row_status(halves) == ("partial", "low")
    assert row_status(halves.iloc[:2]) == ("confounded", "lr3e-4")
    clean = halves.assign(result=["holds", "holds", "fails", "fails"])
    assert row_status(clean) == ("yes", "lr3e-4")
    assert row_status(halves.assign(result="not run")) == ("not run", "lr3e-4")


def _content_tables(acc_aligned=0.8, acc_unaligned=0.5, sign=1.0, clipped=0.0, n=100):
    import numpy as np

    rng = np.random.default_rng(0)
    items = pd.concat([pd.DataFrame({
        "run": f"opd-content-{pool}-seed{s}", "pool": pool, "seed": s, "item": np.arange(n),
        "correct": (rng.random(n) < acc).astype(int)})
        for s in (0, 1, 2) for pool, acc in (("aligned", acc_aligned), ("unaligned", acc_unaligned))])
    windows = pd.DataFrame([{
        "run": f"opd-content-{pool}-seed{s}", "pool": pool, "seed": s, "window": w,
        "clipped_ratio": clipped if pool == "unaligned" else 0.0,
        # aligned: lower overlap ratio, higher overlap mass, lower entropy (when sign > 0)
        "overlap_ratio": 0.5 - sign * 0.05 * (pool == "aligned"),
        "overlap_mass_s": 0.9 + sign * 0.05 * (pool == "aligned"),
        "H_s": 0.3 - sign * 0.1 * (pool == "aligned")}
        for s in (0, 1, 2) for pool in ("aligned", "unaligned") for w in range(0, 100, 10)])
    return windows, items


def test_content_claim_rules_decide_both_ways():
    from opd_diag.zoo.content import accuracy_half, content_claims, dynamics_half

    windows, items = _content_tables()
    ours, status = content_claims(windows, items)
    assert status == "yes", ours
    assert accuracy_half(items)["result"] == "holds"
    windows, items = _content_tables(acc_aligned=0.3, acc_unaligned=0.7, sign=-1.0)
    assert accuracy_half(items)["result"] == "fails"
    assert dynamics_half(windows, "H_s", -1)["result"] == "fails"
    assert content_claims(windows, items)[1] == "no"
    windows, items = _content_tables(acc_aligned=0.5, acc_unaligned=0.5)
    assert accuracy_half(items)["result"] == "undetermined"
    assert content_claims(windows, items)[1] == "partial"
    # one window on the wrong side: "throughout" is not shown
    windows, items = _content_tables()
    i = windows.index[(windows.window == 50) & (windows.pool == "aligned")]
    windows.loc[i, "H_s"] = 0.5
    assert dynamics_half(windows, "H_s", -1)["result"] == "undetermined"
    # a collapsed run confounds the accuracy comparison
    windows, items = _content_tables(clipped=0.8)
    ours, status = content_claims(windows, items)
    assert status == "confounded" and "collapsed: opd-content-unaligned" in ours
    empty = pd.DataFrame(columns=["run", "pool", "seed", "item", "correct"])
    assert content_claims(pd.DataFrame(), empty)[1] == "not run"


@pytest.mark.skipif(not (REPORTS / "zoo-content.csv").exists(), reason="no committed content runs")
def test_content_row_rederived_from_committed_tables():
    from opd_diag.zoo.content import apply_content

    df = pd.read_csv(REPORTS / "zoo-phenomena.csv")
    windows = pd.read_csv(REPORTS / "zoo-content.csv")
    items = pd.read_csv(REPORTS / "zoo-content-items.csv")
    again = apply_content(df, windows, items)
    pd.testing.assert_frame_equal(again, df, check_dtype=False)
    assert set(items.seed) == {0, 1, 2} and set(items.pool) == {"aligned", "unaligned"}


def test_v2_content_row_rules_and_pools(tmp_path):
    """Row 17's held-out column: v1's rules unchanged on the v2 tables, a table edit flips it;
    the unaligned pool repeats exactly one number per list, the aligned one is the pair's own."""
    from opd_diag.core.errors import OpdDiagError
    from opd_diag.tasks import get_task
    from opd_diag.zoo.data import v2_content_prompts as content_prompts
    from opd_diag.zoo.phenomena import apply_v2_content
    from opd_diag.zoo.v2.content import content_claims_v2, write_tables
    from opd_diag.zoo.v2.registry import get_pair

    windows, items = _content_tables()
    text, status = content_claims_v2(windows, items)
    assert status == "yes" and text.startswith("v2-long-horizon, protocol budget, 3 OPD seeds")
    write_tables(windows, items, tmp_path / "w.csv", tmp_path / "i.csv")  # what the CLI writes
    assert content_claims_v2(pd.read_csv(tmp_path / "w.csv"),
                             pd.read_csv(tmp_path / "i.csv")) == (text, status)
    assert "hard accuracy aligned 0." in text
    worse = _content_tables(acc_aligned=0.3, acc_unaligned=0.7, sign=-1.0)
    assert content_claims_v2(*worse)[1] == "no"
    df = pd.DataFrame({"id": [16, 17], "zoo v2 (held out)": ["x", "not run"],
                       "v2 result": ["yes", "not run"]})
    out = apply_v2_content(df, *worse).set_index("id")
    assert out.loc[17, "v2 result"] == "no" and out.loc[16, "v2 result"] == "yes"
    empty = pd.DataFrame(columns=["run", "pool", "seed", "item", "correct"])
    assert apply_v2_content(df, pd.DataFrame(), empty).equals(df)  # no runs: unchanged

    pair = get_pair("v2-long-horizon")
    aligned = content_prompts(pair, "aligned", 200)
    pd.testing.assert_frame_equal(aligned, pair.prompts(200))
    unaligned = content_prompts(pair, "unaligned", 200)
    task = get_task("sort")
    for prompt, answer, n in zip(unaligned.prompt, unaligned.answer, unaligned.difficulty,
                                 strict=True):
        nums = prompt.removeprefix("sort : ").removesuffix(" =").split()
        assert len(nums) == n and 10 <= n <= 12 and len(set(nums)) == n - 1
        assert answer == " ".join(sorted(nums, key=int))
        assert task.check(f"so the answer is {answer} .", answer)
    pd.testing.assert_frame_equal(unaligned, content_prompts(pair, "unaligned", 200))
    with pytest.raises(OpdDiagError, match="unknown zoo-v2 content pool 'dapo'.*unaligned"):
        content_prompts(pair, "dapo")


def test_tables_only_rescoring_reproduces_the_committed_tables(tmp_path):
    """`python -m opd_diag.zoo.phenomena --tables-only` reads no run directory and re-derives
    the committed phenomena table from the committed tables, byte for byte."""
    import shutil

    from opd_diag.zoo.phenomena import main

    out = tmp_path / "reports"
    shutil.copytree(REPORTS, out)
    assert main(["--out", str(out), "--sweep", str(out / "zoo-v2-sweep.csv"),
                 "--tables-only"]) == 0
    for name in ("zoo-phenomena.csv", "zoo-phenomena.md"):
        assert (out / name).read_bytes() == (REPORTS / name).read_bytes(), name


def test_sweep_three_seed_family_averages_seeds_and_decides_row_14():
    import numpy as np

    from opd_diag.zoo.v2.sweep import FAMILY_3SEEDS, claims, row_status

    rng = np.random.default_rng(0)
    n = 200
    rows = []

    def add(variant, seed, p, clipped=0.0):
        rows.append(pd.DataFrame({"pair": "v2-long-horizon", "variant": variant, "seed": seed,
                                  "subset": "hard", "item": np.arange(n),
                                  "correct": (rng.random(n) < p).astype(int),
                                  "clipped_last10": clipped}))

    add("before", 0, 0.1, np.nan)
    add("teacher", 0, 0.8, np.nan)
    for seed in (0, 1, 2):
        add("reverse_kl", seed, 0.6)
        add("maxlen256", seed, 0.3)
        add("maxlen448", seed, 0.35 if seed == 0 else 0.2)
    c = claims(pd.concat(rows, ignore_index=True))
    x3 = c[c.family == FAMILY_3SEEDS].set_index("variant")
    items = pd.concat(rows)
    seed_mean = items[items.variant == "maxlen448"].groupby("item").correct.mean().mean()
    assert x3.loc["maxlen448", "acc_variant"] == pytest.approx(seed_mean)
    assert set(x3.result) == {"holds"}
    status, family = row_status(c[c.id == 14])
    assert (status, family) == ("yes", FAMILY_3SEEDS)
    # without seeds 1, 2 the 3-seed family is "not run" and the one-seed family decides
    one = claims(items[items.seed == 0])
    assert set(one[one.family == FAMILY_3SEEDS].result) == {"not run"}
    assert row_status(one[one.id == 14])[1] == "lr3e-4"


def test_v2_preflight_probes_read_from_runs(tmp_path):
    """The held-out rows' probe values come straight from the pre-flight runs' probe tables
    (reference keys reduced to the model's directory name); pairs without a run are skipped."""
    from opd_diag.core.runs import open_run
    from opd_diag.zoo.phenomena import V2_PREFLIGHTS, v2_preflight_probes

    with open_run(tmp_path / "preflight-v2-reverse", "preflight", {}) as run:
        run.write_probe("novelty", pd.DataFrame({
            "section": ["reference", "reference", "frontier"],
            "key": ["/x/models-v2/v2-student-0-long"] * 2 + ["a"],
            "metric": ["kl_teacher_ref", "kl_student_teacher", "n"], "value": [0.1, 0.4, 3.0]}))
        run.write_probe("horizon", pd.DataFrame({
            "section": ["auroc", "continuation", "depth"], "key": ["0", "0.5", "0"],
            "metric": ["auroc_rbar", "advantage", "H"], "value": [0.8, 0.2, 1.0]}))
    got = v2_preflight_probes(tmp_path)
    assert "v2-reverse" in V2_PREFLIGHTS and set(got.pair) == {"v2-reverse"}
    assert sorted(got.metric) == ["advantage", "auroc_rbar", "kl_student_teacher",
                                  "kl_teacher_ref"]
    assert set(got[got.section == "reference"].key) == {"v2-student-0-long"}
    assert v2_preflight_probes(tmp_path / "none").empty
