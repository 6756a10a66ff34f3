import json

import pytest

from opd_diag.cli import main
from opd_diag.core.errors import OpdDiagError


@pytest.fixture()
def answered_prompts(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text("".join(json.dumps({"prompt": f"w{i} w{i + 1}", "answer": f"w{i + 2}"}) + "\n"
                         for i in range(4)))
    return p


def test_preflight_cli_writes_verdict_and_exit_code(tiny_pair, answered_prompts, tmp_path, capsys):
    s, t = tiny_pair
    out = tmp_path / "pf"
    code = main(["--quiet", "preflight", "--student", str(s), "--teacher", str(t), "--prompts",
                 str(answered_prompts), "--budget", "small", "--max-new-tokens", "8",
                 "--checker", r"regex:(w\d+)$", "--reference", str(s), "--out", str(out)])
    text = capsys.readouterr().out
    verdict = json.loads((out / "verdict.json").read_text())
    assert code == verdict["exit_code"] and code in (0, 3, 4)
    assert f"VERDICT: {verdict['verdict']}" in text
    conditions = {c["condition"] for c in verdict["conditions"]}
    assert {"thinking compatibility", "reachability", "teacher novelty"} <= conditions
    assert verdict["thresholds"]["provenance"]


@pytest.mark.parametrize("argv,needle", [
    (["--pair", "success", "--student", "x"], "either --pair or"),
    (["--student", "x"], "needs --pair or all of"),
])
def test_preflight_cli_bad_args(argv, needle, tmp_path, capsys):
    assert main(["preflight", *argv, "--out", str(tmp_path / "o")]) == 2
    assert needle in capsys.readouterr().err


def test_preflight_cli_bad_template_and_checker(tiny_pair, answered_prompts, tmp_path, capsys):
    s, t = tiny_pair
    base = ["preflight", "--student", str(s), "--teacher", str(t), "--prompts",
            str(answered_prompts), "--out", str(tmp_path / "o")]
    assert main([*base, "--teacher-template", "no placeholder"]) == 2
    assert "{prompt}" in capsys.readouterr().err
    assert main([*base, "--checker", "regex:("]) == 2
    assert "invalid regular expression" in capsys.readouterr().err
    for flag in ("--n-frontier", "--n-samples", "--n-prompts"):
        assert main([*base, flag, "0"]) == 2  # 0 is an error, not "use the budget's value"
        assert "must be positive" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_budgets_are_one_source_of_truth():
    import argparse

    from opd_diag.cli.preflight import register
    from opd_diag.preflight import BUDGETS, PreflightConfig

    assert PreflightConfig() == PreflightConfig.budget("default")
    small = PreflightConfig.budget("small", n_frontier=3, seed=None)
    assert (small.n_prompts, small.n_frontier, small.seed) == (16, 3, 0)
    sub = argparse.ArgumentParser().add_subparsers()
    register(sub)
    budget = next(a for a in sub.choices["preflight"]._actions if a.dest == "budget")
    assert budget.choices == list(BUDGETS)
    with pytest.raises(OpdDiagError, match="valid budgets"):
        PreflightConfig.budget("huge")


def test_preflight_teacher_prompt_column(tiny_pair, tmp_path, capsys):
    from opd_diag.core.runs import load_run

    s, t = tiny_pair
    rows = [{"prompt": f"w{i} w{i + 1}", "answer": f"w{i + 2}", "teacher_prompt": f"w9 w{i} w{i + 1}"}
            for i in range(4)]
    p = tmp_path / "p.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = ["--quiet", "preflight", "--student", str(s), "--teacher", str(t), "--prompts", str(p),
            "--budget", "small", "--max-new-tokens", "4", "--checker", r"regex:(w\d+)$"]
    assert main([*base, "--out", str(tmp_path / "run")]) in (0, 3, 4)
    run = load_run(tmp_path / "run")
    assert run.aux("teacher").prompts.prompt.tolist() == [r["teacher_prompt"] for r in rows]
    assert len(run.table("template")) > 0  # the template check ran on the teacher's rendering
    assert "template_top1_agreement" in set(run.probe("thinking").component)
    capsys.readouterr()
    assert main([*base, "--teacher-template", "x {prompt}", "--out", str(tmp_path / "a")]) == 2
    assert "use one of them" in capsys.readouterr().err
    rows[2]["teacher_prompt"] = " "
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main([*base, "--out", str(tmp_path / "b")]) == 2
    assert "rows [3]" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_preflight_python_api_as_in_the_readme(tiny_pair, answered_prompts, tmp_path):
    import opd_diag as od

    pair = od.load_pair(*tiny_pair)
    v = od.run_preflight(pair, od.load_prompts(answered_prompts), tmp_path / "pf",
                         config=od.PreflightConfig.budget("small", max_new_tokens=4),
                         verifier=od.make_verifier(r"regex:(w\d+)$").check,
                         references={"base": od.load_model(tiny_pair[0], role="reference")})
    assert isinstance(v, od.Verdict) and v.verdict in od.preflight.VERDICTS
    assert v.render().startswith(f"VERDICT: {v.verdict}")
    assert {"condition", "metric", "value", "status", "rule", "recovery"} <= set(v.table.columns)
    nov = od.load_run(v.run).probe("novelty")
    assert {"frontier", "score"} <= set(nov.section)
    data = json.loads((tmp_path / "pf" / "verdict.json").read_text())
    assert {"student_capture", "teacher_capture", "frontier_samples", "probes"} <= set(
        data["stage_seconds"])


@pytest.mark.slow
def test_checker_that_parses_nothing_stops_with_exit_2(tmp_path, capsys):
    """Issue 16 (1), the README snippet's checker on a zoo pair: make_verifier("boxed") parses
    none of the addition task's answers; instead of a confident NO-GO the pre-flight stops,
    names the checker that would parse them, and leaves no half-written run behind."""
    import opd_diag as od
    from opd_diag.core.errors import OpdDiagError

    zp = od.zoo.get_pair("success")
    pair = od.load_pair(od.zoo.model_dir(zp.student), od.zoo.model_dir(zp.teacher))
    from opd_diag.core.prompts import validate_prompts

    prompts = validate_prompts(zp.prompts(8))
    cfg = od.PreflightConfig.budget("small", n_prompts=8, max_new_tokens=zp.hyper.max_new_tokens)
    with pytest.raises(OpdDiagError, match=r"task:addition \(\d+%\)") as err:
        od.run_preflight(pair, prompts, tmp_path / "pf", config=cfg,
                         verifier=od.make_verifier("boxed").check)
    assert "'boxed' found an answer in only 0/16" in str(err.value)
    assert not (tmp_path / "pf").exists()
    code = main(["--quiet", "preflight", "--pair", "success", "--checker", "boxed",
                 "--n-prompts", "8", "--budget", "small", "--out", str(tmp_path / "cli")])
    assert code == 2 and "task:addition" in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()
    # the zoo pair's own checker parses them: the answer-checking row reports it, with examples
    code = main(["--quiet", "preflight", "--pair", "success", "--n-prompts", "8", "--budget",
                 "small", "--out", str(tmp_path / "ok")])
    data = json.loads((tmp_path / "ok" / "verdict.json").read_text())
    ex = data["answer_extraction"]
    assert ex["checker"] == "task:addition" and ex["share"] >= 0.5 and len(ex["examples"]) == 3
    rows = {c["condition"]: c for c in data["conditions"]}
    assert rows["answer checking"]["status"] == "GO"
    assert {"answer checking", "thinking compatibility", "template alignment", "reachability",
            "teacher novelty", "distinct teacher", "horizon", "truncation"} == set(rows)


def test_long_stages_show_progress_unless_quiet(tiny_pair, answered_prompts, tmp_path, capsys):
    s, t = tiny_pair
    argv = ["preflight", "--student", str(s), "--teacher", str(t), "--prompts",
            str(answered_prompts), "--budget", "small", "--max-new-tokens", "8",
            "--checker", r"regex:(w\d+)$", "--reference", str(s)]
    assert main([*argv, "--out", str(tmp_path / "a")]) in (0, 3, 4)
    err = capsys.readouterr().err
    for stage in ("capture", "continuations (teacher)", "continuations (student)",
                  f"reference {s}"):
        assert stage in err, f"no progress for {stage!r}"
    assert main(["--quiet", *argv, "--out", str(tmp_path / "b")]) in (0, 3, 4)
    err = capsys.readouterr().err
    assert "continuations" not in err and "it/s" not in err


def test_a_reference_that_is_the_teacher_is_refused(tiny_pair, answered_prompts, tmp_path, capsys):
    import opd_diag as od

    pair = od.load_pair(*tiny_pair)
    with pytest.raises(od.OpdDiagError, match="is the teacher itself"):
        od.run_preflight(pair, od.load_prompts(answered_prompts), tmp_path / "pf",
                         config=od.PreflightConfig.budget("small", max_new_tokens=4),
                         references={"t": od.load_model(tiny_pair[1], role="reference")})
    assert not (tmp_path / "pf").exists() or not any((tmp_path / "pf").iterdir())
    code = main(["preflight", "--student", str(tiny_pair[0]), "--teacher", str(tiny_pair[1]),
                 "--prompts", str(answered_prompts), "--checker", r"regex:(w\d+)$",
                 "--reference", str(tiny_pair[1]), "--budget", "small", "--max-new-tokens", "4",
                 "--out", str(tmp_path / "cli")])
    assert code == 2 and "is the teacher itself" in capsys.readouterr().err
