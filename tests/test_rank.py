"""`rank-teachers`: one pre-flight per candidate on the same student rollouts, ordered by
verdict then expected gain; validated on the zoo against the measured OPD outcomes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from opd_diag.cli import main
from opd_diag.core.errors import OpdDiagError
from opd_diag.core.runs import load_run
from opd_diag.preflight.rank import order, rank_surprisal_ratio

ROOT = Path(__file__).resolve().parents[1]


def test_order_is_verdict_then_gain_then_overlap():
    t = pd.DataFrame({"teacher": list("abcde"),
                      "verdict": ["NO-GO", "GO", "CAUTION", "GO", "GO"],
                      "expected_gain": [0.9, 0.1, 0.5, 0.3, 0.3],
                      "overlap_ratio": [0.9, 0.9, 0.9, 0.4, 0.6]})
    ranked = order(t)
    assert ranked.teacher.tolist() == ["e", "d", "b", "c", "a"]
    assert ranked["rank"].tolist() == [1, 2, 3, 4, 5]
    # an undefined gain ranks after any measured one within its verdict
    t.loc[1, "expected_gain"] = np.nan
    assert order(t).teacher.tolist()[:3] == ["e", "d", "b"]


@pytest.fixture(scope="module")
def zoo_ranking(tmp_path_factory):
    out = tmp_path_factory.mktemp("rank") / "rank"
    code = main(["--quiet", "rank-teachers", "--pair", "success", "--teacher", "teacher-a",
                 "--teacher", "teacher-b", "--teacher", "student-partial-long",
                 "--budget", "small", "--out", str(out)])
    assert code == 0
    return out


def test_zoo_ranking_orders_teachers_by_their_measured_opd_outcome(zoo_ranking):
    ranking = pd.read_csv(zoo_ranking / "ranking.csv")
    outcomes = pd.read_csv(ROOT / "reports" / "zoo-validation.csv")
    # the three zoo OPD runs from student-partial itself (reverse KL, plain template; not the
    # cold-started student), by teacher
    runs = outcomes[outcomes.run.isin(["opd-success", "opd-incompatible", "opd-no-novelty"])]
    assert len(runs) == 3
    measured = runs.set_index("teacher")["acc_after/5d"].sort_values(ascending=False)
    assert list(measured.index) == ranking.teacher.tolist(), (measured, ranking)
    for col in ("teacher", "rank", "verdict", "expected_gain", "novelty_score", "overlap_ratio",
                "rsr"):
        assert col in ranking
    assert (zoo_ranking / "report.html").stat().st_size > 10_000


def test_the_student_is_sampled_once(zoo_ranking):
    first = load_run(zoo_ranking / "teacher-a")
    assert "student_rollouts_from" not in first.meta
    cols = ["rollout_id", "completion", "n_tokens"]
    for name in ("teacher-b", "student-partial-long"):
        run = load_run(zoo_ranking / name)
        assert run.meta["student_rollouts_from"] == str(first.path)
        pd.testing.assert_frame_equal(run.rollouts[cols], first.rollouts[cols])
        assert run.meta["models"]["teacher"]["path"].endswith(name)  # re-scored by its teacher
        assert not np.allclose(run.states.logp_t, first.states.logp_t)


def test_rsr_matches_its_definition(zoo_ranking):
    run = load_run(zoo_ranking / "teacher-a")
    st = run.aux("teacher").states  # roles swapped: _t is the student
    ranks = []
    for tok, ids in zip(st.token, st.topk_ids_t, strict=True):
        ids = list(ids)
        ranks.append(ids.index(tok) + 1 if tok in ids else len(ids) + 1)
    expected = np.mean(ranks) / np.mean(-st.logp_t)
    assert rank_surprisal_ratio(run) == pytest.approx(expected)
    ranking = pd.read_csv(zoo_ranking / "ranking.csv").set_index("teacher")
    assert ranking.loc["teacher-a", "rsr"] == pytest.approx(expected)


@pytest.mark.parametrize("argv, phrase", [
    (["--pair", "success"], "at least one --teacher"),
    (["--pair", "success", "--teacher", "teacher-a", "--name", "a", "--name", "b"],
     "one name per teacher"),
    (["--pair", "success", "--teacher", "no-such-model"], "neither a model directory"),
    (["--pair", "success", "--teacher", "teacher-a", "--teacher", "teacher-a"], "unique"),
    (["--teacher", "teacher-a"], "needs --pair or all of"),
])
def test_bad_input_exits_2(argv, phrase, tmp_path, capsys):
    assert main(["--quiet", "rank-teachers", *argv, "--out", str(tmp_path / "r")]) == 2
    assert phrase in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_model_names_of_both_zoo_families_resolve():
    from opd_diag.cli.rank import _model_path
    from opd_diag.zoo import model_dir

    assert _model_path("teacher-a") == model_dir("teacher-a")
    assert _model_path("v2-teacher-a") == model_dir("v2-teacher-a")  # zoo v2 names too
    with pytest.raises(OpdDiagError, match="neither a model directory"):
        _model_path("v3-teacher")


REPORTS = Path(__file__).resolve().parent.parent / "reports"


def _outcomes(accs: dict[str, float], n: int = 200, seeds=(0, 1)) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.concat([pd.DataFrame({"teacher": t, "seed": s, "item": np.arange(n),
                                    "correct": (rng.random(n) < a).astype(int)})
                      for t, a in accs.items() for s in seeds], ignore_index=True)


def test_check_ranking_agree_wrong_undetermined():
    from opd_diag import check_ranking
    from opd_diag.preflight.rank_check import summarize_check

    ranking = pd.DataFrame({"teacher": ["a", "b", "c"], "rank": [1, 2, 3]})
    check = check_ranking(ranking, _outcomes({"a": 0.8, "b": 0.4, "c": 0.41}))
    res = dict(zip(zip(check.higher, check.lower), check.result))
    assert res == {("a", "b"): "agree", ("a", "c"): "agree", ("b", "c"): "undetermined"}
    assert summarize_check(check).endswith("the ranking holds")
    wrong = check_ranking(ranking, _outcomes({"a": 0.2, "b": 0.7}))  # c has no outcomes
    assert list(wrong.result) == ["wrong"]
    assert "is contradicted" in summarize_check(wrong)
    # seeds are averaged per item before the paired bootstrap; bools are accepted
    bools = _outcomes({"a": 0.8, "b": 0.4}).assign(correct=lambda d: d.correct.astype(bool))
    assert list(check_ranking(ranking, bools).result) == ["agree"]


@pytest.mark.parametrize("outcomes, phrase", [
    (pd.DataFrame({"teacher": ["a"], "item": [0]}), "missing column"),
    (pd.DataFrame({"teacher": ["a", "b"], "item": [0, 0], "correct": [1, 2]}), "row 2 has correct=.2."),
    (pd.DataFrame({"teacher": ["a", "b", "b"], "item": [0, 0, 1], "correct": [1, 0, 1]}),
     "lack some eval items"),
    (pd.DataFrame({"teacher": ["a", "z"], "item": [0, 0], "correct": [1, 0]}), "not in the ranking"),
    (pd.DataFrame({"teacher": ["a"], "item": [0], "correct": [1]}), "at least two ranked"),
])
def test_check_ranking_bad_outcomes(outcomes, phrase):
    from opd_diag import check_ranking

    ranking = pd.DataFrame({"teacher": ["a", "b"], "rank": [1, 2]})
    with pytest.raises(OpdDiagError, match=phrase):
        check_ranking(ranking, outcomes)


def test_rank_check_cli(tmp_path, capsys):
    ranking, outcomes = tmp_path / "rk", tmp_path / "outcomes.parquet"
    ranking.mkdir()
    pd.DataFrame({"teacher": ["a", "b"], "rank": [1, 2]}).to_csv(ranking / "ranking.csv", index=False)
    _outcomes({"a": 0.8, "b": 0.3}).to_parquet(outcomes)
    out = tmp_path / "check.csv"
    assert main(["rank-check", "--ranking", str(ranking), "--outcomes", str(outcomes),
                 "--out", str(out)]) == 0
    assert "1 agree, 0 wrong, 0 undetermined of 1 pairs: the ranking holds" in capsys.readouterr().out
    assert pd.read_csv(out).result.tolist() == ["agree"]
    assert main(["rank-check", "--ranking", str(ranking), "--outcomes",
                 str(tmp_path / "nope.csv")]) == 2
    assert "outcomes" in capsys.readouterr().err and not (tmp_path / "nope.csv").exists()
    (tmp_path / "bad.csv").write_text("teacher,item\na,0\n")
    assert main(["rank-check", "--ranking", str(ranking), "--outcomes",
                 str(tmp_path / "bad.csv")]) == 2
    assert "missing column" in capsys.readouterr().err


def test_heldout_v2_ranking_check_rederived_from_committed_items():
    """The held-out check of the v2 ranking: outcomes from the protocol's per-item table, the
    pairwise check from those outcomes and the committed ranking (rank-check's own code)."""
    from opd_diag import check_ranking
    from opd_diag.zoo.v2.validate import rank_outcomes

    items = pd.read_csv(REPORTS / "zoo-v2-eval-items.csv")
    outcomes = pd.read_csv(REPORTS / "rank-v2-outcomes.csv")
    pd.testing.assert_frame_equal(rank_outcomes(items), outcomes, check_dtype=False)
    check = check_ranking(REPORTS / "rank-v2-ranking.csv", outcomes)
    pd.testing.assert_frame_equal(check, pd.read_csv(REPORTS / "rank-v2-check.csv"),
                                  check_dtype=False)
    res = dict(zip(zip(check.higher, check.lower), check.result))
    assert res[("v2-teacher-a", "v2-teacher-b")] == "agree"
    assert res[("v2-student-partial-long", "v2-teacher-b")] == "agree"
    assert res[("v2-teacher-a", "v2-student-partial-long")] == "undetermined"


def test_heldout_ranking_check_where_opd_works():
    """The v2-long-horizon ranking check (recorded before its candidates' OPD outcomes): the
    pair's own teacher's outcome is the protocol's committed items, the pairwise check comes
    from the committed ranking and outcomes; a swapped outcome turns a decided pair wrong."""
    from opd_diag import check_ranking

    items = pd.read_csv(REPORTS / "zoo-v2-eval-items.csv")
    outcomes = pd.read_csv(REPORTS / "rank-v2-long-outcomes.csv")
    own = items[(items.pair == "v2-long-horizon") & (items.role == "after")
                & (items.subset == "hard")]
    mine = outcomes[outcomes.teacher == "v2-teacher-a"]
    assert mine.correct.tolist() == own.correct.tolist() and len(mine) == 300
    check = check_ranking(REPORTS / "rank-v2-long-ranking.csv", outcomes)
    pd.testing.assert_frame_equal(check, pd.read_csv(REPORTS / "rank-v2-long-check.csv"),
                                  check_dtype=False)
    assert set(check.result) == {"agree"} and len(check) == 3
    swapped = outcomes.assign(teacher=outcomes.teacher.replace(
        {"v2-teacher-a": "v2-student-partial-long", "v2-student-partial-long": "v2-teacher-a"}))
    res = check_ranking(REPORTS / "rank-v2-long-ranking.csv", swapped)
    wrong = res[(res.higher == "v2-teacher-a") & (res.lower == "v2-student-partial-long")]
    assert wrong.result.tolist() == ["wrong"]
