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
