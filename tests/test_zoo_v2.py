"""Zoo v2 (held-out testbed): the sort task, the BPE tokenizer, committed checkpoints, pairs."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from opd_diag.core.errors import OpdDiagError  # noqa: E402
from opd_diag.tasks import get_task  # noqa: E402
from opd_diag.zoo import ZOO_DIR, get_pair, get_spec, list_pairs, model_dir, pairs_table  # noqa: E402
from opd_diag.zoo.outcomes import bootstrap_recovery, classify  # noqa: E402
from opd_diag.zoo.v2 import SUBSETS2, ZOO2_DIR, list_models  # noqa: E402
from opd_diag.zoo.v2 import list_pairs as list_pairs_v2  # noqa: E402
from opd_diag.zoo.v2.tokenizer import (  # noqa: E402
    EOS,
    build_tokenizer,
    decode_fast,
    encode_fast,
    token_id,
    vocab_size,
)

TASK = get_task("sort")
BUILT = [m for m in list_models() if (ZOO2_DIR / m / "config.json").exists()]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _examples(n: int = 60, seed: int = 3):
    rng = random.Random(seed)
    for i in range(n):
        p = TASK.sample(rng, TASK.difficulties[i % len(TASK.difficulties)])
        for style in TASK.styles:
            yield p, style, TASK.render_reasoning(p, style, rng)


# --- the task --------------------------------------------------------------------------------


def test_sort_task_generator_and_checker_round_trip() -> None:
    for p, style, text in _examples():
        assert p.answer == " ".join(map(str, sorted(p.inputs)))
        assert len(set(p.inputs)) == p.difficulty
        assert TASK.check(text, p.answer), (style, text)
        assert TASK.extract_answer(text) == p.answer
        # one number out of place (or missing) must fail
        wrong = list(reversed(sorted(p.inputs)))
        if p.difficulty > 1:
            assert not TASK.check(text, " ".join(map(str, wrong)))
        assert not TASK.check(text.rsplit(" answer is", 1)[0], p.answer)
    # the two styles are different texts for the same problem (what makes a teacher incompatible)
    rng = random.Random(0)
    p = TASK.sample(rng, 8)
    a, b = (TASK.render_reasoning(p, s, random.Random(1)) for s in TASK.styles)
    assert a != b and len(set(a.split()) ^ set(b.split())) >= 4


def test_sort_task_is_deterministic_and_validates_input() -> None:
    assert TASK.sample(random.Random(5), 7) == TASK.sample(random.Random(5), 7)
    p = TASK.sample(random.Random(5), 7)
    assert TASK.render_prompt(p, "plain") != TASK.render_prompt(p, "question")
    for call in (lambda: TASK.sample(random.Random(0), 13),
                 lambda: TASK.render_prompt(p, "chat"),
                 lambda: TASK.render_reasoning(p, "bubble", random.Random(0))):
        with pytest.raises(OpdDiagError, match="valid"):
            call()


def test_long_lists_give_traces_of_two_to_three_hundred_tokens() -> None:
    rng = random.Random(11)
    lengths = [len(encode_fast(TASK.render_reasoning(TASK.sample(rng, n), s, rng)))
               for n in (11, 12) for s in TASK.styles for _ in range(10)]
    assert 180 <= min(lengths) and max(lengths) <= 320, (min(lengths), max(lengths))


# --- the tokenizer ---------------------------------------------------------------------------


def test_tokenizer_round_trips_prompts_and_traces() -> None:
    tok = build_tokenizer()
    bos = tok.bos_token_id
    for p, _, text in _examples(30):
        for template in TASK.templates:
            prompt = TASK.render_prompt(p, template)
            ids = tok(prompt + " " + text)["input_ids"]
            assert ids[0] == bos
            assert tok.decode(ids, skip_special_tokens=True) == prompt + " " + text
            # no boundary effects: prompt and completion encode separately to the same ids
            assert ids[1:] == encode_fast(prompt) + encode_fast(text)
            assert decode_fast(encode_fast(text)) == text
    assert tok.unk_token_id not in tok(" ".join(sorted(TASK.words())))["input_ids"]


def test_tokenizer_is_learned_bpe_and_committed_copies_match() -> None:
    from tokenizers import Tokenizer

    tok = build_tokenizer()
    assert len(tok) == vocab_size() and 200 < vocab_size() <= 4096
    assert tok.backend_tokenizer.model.__class__.__name__ == "BPE"
    with pytest.raises(OpdDiagError, match="not in the zoo-v2 vocabulary"):
        token_id("definitely-not-a-token")
    assert token_id(EOS) == tok.eos_token_id
    fresh = json.loads(tok.backend_tokenizer.to_str())["model"]["vocab"]
    for name in BUILT:
        committed = Tokenizer.from_file(str(ZOO2_DIR / name / "tokenizer.json"))
        assert json.loads(committed.to_str())["model"]["vocab"] == fresh, name


# --- committed checkpoints -------------------------------------------------------------------


def test_committed_v2_models_fit_and_missing_ones_say_how_to_build() -> None:
    assert {"v2-teacher-a", "v2-student-partial"} <= set(BUILT)
    for name in set(list_models()) - set(BUILT):
        with pytest.raises(OpdDiagError, match=f"--family v2 --only {name}"):
            model_dir(name)
    total = sum(f.stat().st_size for d in (ZOO_DIR, ZOO2_DIR) for f in d.rglob("*") if f.is_file())
    assert total <= 30 * 2**20, total / 2**20
    readme = (ZOO2_DIR / "README.md").read_text()
    assert all(name in readme for name in BUILT)
    assert all(p.name in readme for p in list_pairs_v2())


@pytest.mark.parametrize("name", BUILT)
def test_v2_checkpoint_loads_through_hf_and_reproduces_its_card(name: str) -> None:
    from opd_diag.core.models import load_model
    from opd_diag.zoo.build import sha256
    from opd_diag.zoo.data import eval_set
    from opd_diag.zoo.evaluate import evaluate, load

    path = model_dir(name)
    card = json.loads((path / "card.json").read_text())
    assert card["sha256"] == sha256(path / "model.safetensors")
    model, tok = load(path)  # AutoModelForCausalLM + AutoTokenizer
    assert model.config.vocab_size == len(tok) == card["vocab_size"]
    assert load_model(path, role="student").model.config.vocab_size == len(tok)
    ce = card["card_eval"]
    template = card["spec"]["templates"][0]
    # a quick greedy eval on the card's items: the committed accuracies reproduce
    got = evaluate((model, tok), eval_set("sort", template, ce["n_per_subset"], subsets=SUBSETS2),
                   task="sort", max_new_tokens=ce["max_new_tokens"])
    for subset, acc in ce["accuracy"][template].items():
        assert abs(got[subset] - acc) <= 1.0 / ce["n_per_subset"] + 1e-9, (name, subset, got)


def test_v2_models_have_the_skills_they_were_built_for() -> None:
    acc = {m: json.loads((ZOO2_DIR / m / "card.json").read_text())["accuracy"] for m in BUILT}
    for teacher in {"v2-teacher-a", "v2-teacher-b"} & set(acc):
        assert acc[teacher]["easy"] >= 0.5, (teacher, acc[teacher])
    # the exposure dial: the teacher (every length) beats the partly exposed student on long lists
    assert acc["v2-teacher-a"]["hard"] >= acc["v2-student-partial"]["hard"] + 0.3
    # never seeing long lists is worse there than seeing a few; post-training adds the skill
    if "v2-student-0" in acc:
        assert acc["v2-student-0"]["hard"] <= acc["v2-student-partial"]["hard"]
    if {"v2-student-rl", "v2-student-0"} <= set(acc):
        assert acc["v2-student-rl"]["hard"] >= acc["v2-student-0"]["hard"]


# --- pairs, registry, CLI --------------------------------------------------------------------


def test_v2_pairs_resolve_through_the_zoo_and_do_not_collide_with_v1() -> None:
    v1 = {p.name for p in list_pairs()}
    v2 = [p.name for p in list_pairs_v2()]
    assert len(v2) == 7 and all(n.startswith("v2-") for n in v2) and not v1 & set(v2)
    assert {n.removeprefix("v2-") for n in v2} == v1
    for name in v2:
        pair = get_pair(name)
        assert pair.task == "sort" and pair.name == name
        assert set(pair.models) <= set(list_models())
        if set(pair.models) <= set(BUILT):
            assert all(d.parent == ZOO2_DIR for d in pair.model_dirs().values())
        evals = pair.eval_sets(3)
        assert set(evals.subset) == set(pair.subsets)
        for sub, lengths in SUBSETS2.items():
            assert set(evals.difficulty[evals.subset == sub]) <= set(lengths)
        assert set(pair.prompts(8).difficulty) <= {d for d, _ in pair.opd_mix}
        assert get_spec(pair.teacher).task == "sort"
    table = pairs_table("all")
    assert list(table.family.value_counts().sort_index()) == [7, 7]
    with pytest.raises(OpdDiagError, match="valid"):
        get_pair("v2-nope")
    with pytest.raises(OpdDiagError, match="valid"):
        model_dir("v2-nope")
    with pytest.raises(OpdDiagError, match="valid"):
        pairs_table("v3")


def test_cli_lists_both_families_and_preflight_resolves_a_v2_pair(capsys) -> None:
    from opd_diag.cli.main import build_parser, main
    from opd_diag.cli.preflight import _pair_inputs

    assert main(["zoo", "list"]) == 0
    out = capsys.readouterr().out
    assert "v2-success" in out and "out-of-reach" in out
    assert main(["zoo", "list", "--models", "--family", "v2"]) == 0
    assert capsys.readouterr().out.split() == list_models()
    # the inputs `opd-diag preflight --pair v2-success` runs on (the pre-flight itself is held out)
    args = build_parser().parse_args(["preflight", "--pair", "v2-success", "--out", "x"])
    student, teacher, prompts, teacher_prompts, refs, checker, max_new = _pair_inputs(args)
    assert (student, teacher) == (model_dir("v2-student-partial"), model_dir("v2-teacher-a"))
    assert checker == "task:sort" and max_new == 320 and teacher_prompts is None
    assert refs == [str(model_dir("v2-student-partial-long"))]
    assert prompts.prompt.iat[0].startswith("sort :")
    args = build_parser().parse_args(["preflight", "--pair", "v2-template", "--out", "x"])
    teacher_prompts = _pair_inputs(args)[3]
    assert teacher_prompts and teacher_prompts[0].startswith("sort :")


def test_quick_build_smoke(tmp_path) -> None:
    from opd_diag.zoo.evaluate import load
    from opd_diag.zoo.v2.build import build_one

    card = build_one("v2-student-0", tmp_path, quick=True)
    assert card["training"]["steps_done"] == 6 and card["family"] == "v2"
    model, tok = load(tmp_path / "v2-student-0")
    assert model.config.vocab_size == len(tok)
    with pytest.raises(OpdDiagError, match="build that first"):
        build_one("v2-student-rl", tmp_path / "empty", quick=True)


# --- the outcome statistics ------------------------------------------------------------------


def outcome(lo: float, hi: float, gap: float = 0.7, n_seeds: int = 3) -> str:
    return classify(lo, hi, gap, n_seeds)["outcome"]


def test_bootstrap_recovery_and_outcome() -> None:
    rng = np.random.default_rng(0)
    before = (rng.random(200) < 0.2).astype(float)
    teacher = np.maximum(before, rng.random(200) < 0.9)
    full = np.stack([teacher, teacher, teacher])
    point, lo, hi = bootstrap_recovery(before, full, teacher, n_boot=300)
    assert point == pytest.approx(1.0) and lo <= 1.0 <= hi and outcome(lo, hi) == "worked"
    point, lo, hi = bootstrap_recovery(before, np.stack([before] * 3), teacher, n_boot=300)
    assert point == pytest.approx(0.0) and outcome(lo, hi) == "failed"
    # half the seeds recover everything, half nothing: the CI straddles 0.5
    point, lo, hi = bootstrap_recovery(before, np.stack([before, teacher]), teacher, n_boot=300)
    assert point == pytest.approx(0.5) and outcome(lo, hi) == "undetermined"
    point, lo, hi = bootstrap_recovery(before, np.stack([before]), before, n_boot=50)
    assert np.isnan(point) and outcome(lo, hi) == "undetermined"
    assert outcome(lo, hi, gap=0.0) == "failed"  # the teacher is not ahead: nothing to recover


def test_zoo_list_fits_100_columns(capsys):
    from opd_diag.cli import main

    assert main(["zoo", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and max(len(ln) for ln in lines) <= 100
    assert any(ln.startswith("success (v1)") for ln in lines)


def test_zoo_sweep_bad_input(tmp_path, capsys, monkeypatch):
    from opd_diag.cli import main
    from opd_diag.zoo.v2.sweep import sweep
    from opd_diag.zoo.v2.validate import run_one

    with pytest.raises(SystemExit) as exc:
        main(["zoo", "sweep", "--variants", "no-such-variant"])
    assert exc.value.code == 2 and "no-such-variant" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown variant"):
        sweep(tmp_path, variants=["no-such-variant"])
    with pytest.raises(ValueError, match="needs a tag"):  # never mistaken for a protocol run
        run_one(tmp_path, "v2-long-horizon", 0, 10, overrides={"lr": 1e-4})
    capsys.readouterr()
    assert main(["zoo", "validate", "--extra-runs", "--runs", str(tmp_path / "r")]) == 2
    assert "--family v2" in capsys.readouterr().err
    assert main(["zoo", "validate", "--content", "--runs", str(tmp_path / "r")]) == 2
    assert "--content" in capsys.readouterr().err
    assert main(["zoo", "validate", "--rank-runs", "--runs", str(tmp_path / "r")]) == 2
    assert "--rank-runs: these runs are zoo-v2 runs" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)  # no protocol item table here: a clear error before any run
    assert main(["zoo", "validate", "--family", "v2", "--rank-runs", "--runs", "r"]) == 2
    assert "per-item table reports/zoo-v2-eval-items.csv" in capsys.readouterr().err
    with pytest.raises(ValueError, match="needs a tag"):
        run_one(tmp_path, "v2-long-horizon", 0, 10, content="unaligned")
    assert not any(tmp_path.iterdir())  # nothing written


def test_extra_runs_are_named_apart_and_tabled(tmp_path):
    """#10's second teacher and #15's cold start: a run with a twist needs a tag, is never globbed
    as a protocol run of its pair, and its items (its teacher's, and for a cold start the
    cold-started student's) form their own table."""
    import pandas as pd

    from opd_diag.zoo.v2.validate import EXTRA_COLUMNS, EXTRA_RUNS, eval_items, extra_items, run_one

    for kw in ({"teacher": "v2-student-0-long"}, {"coldstart": True}):
        with pytest.raises(ValueError, match="needs a tag"):
            run_one(tmp_path, "v2-reverse", 0, 10, **kw)
    assert not any(tmp_path.iterdir())
    assert extra_items(tmp_path).empty  # no runs: an empty table with its columns
    assert list(extra_items(tmp_path).columns) == EXTRA_COLUMNS
    (tmp_path / "baselines").mkdir()
    for x in EXTRA_RUNS:
        pair = get_pair(x.pair)
        evals = pair.eval_sets(2)
        for seed, ok in ((0, 1), (1, 0)):
            d = tmp_path / f"{x.pair}-{x.tag}-seed{seed}"
            d.mkdir()
            evals.assign(correct=bool(ok)).to_parquet(d / "v2_eval.parquet")
        # scores cached where the table looks, so nothing is generated here
        stem = f"{pair.template}-{'-'.join(pair.subsets)}-2.parquet"
        evals.assign(correct=True).to_parquet(
            tmp_path / "baselines" / f"{x.teacher or pair.teacher}-{stem}")
        if x.coldstart:
            evals.assign(correct=False).to_parquet(
                tmp_path / "baselines" / f"{x.pair}-coldstart-{stem}")
    items = extra_items(tmp_path, n_eval=2)
    for x in EXTRA_RUNS:
        mine = items[(items.pair == x.pair) & (items.run == x.tag)]
        after = mine[mine.role == "after"]
        assert after.groupby("seed").correct.mean().to_dict() == {0: 1.0, 1: 0.0}
        assert (mine[mine.role == "teacher"].correct == 1).all()
        assert (mine.teacher == (x.teacher or get_pair(x.pair).teacher)).all()
        before = mine[mine.role == "before"]
        assert len(before) == (len(after) // 2 if x.coldstart else 0)
        assert (before.correct == 0).all() and (mine[mine.role != "after"].seed == -1).all()
    assert eval_items(tmp_path, 2).empty  # none is a protocol run of its pair
    pd.testing.assert_frame_equal(items, extra_items(tmp_path, n_eval=2))


def test_cold_start_outcome_is_scored_against_the_cold_started_student():
    """The cold start's OPD outcome: recovery of the gap between the *cold-started* student
    (its ``before``) and the pair's teacher, by the protocol's rule; a run with the pair's own
    student (the second-teacher run) has no outcome of its own here."""
    import pandas as pd

    from opd_diag.zoo.v2.validate import extra_outcomes

    n = 40
    rows = []
    for role, seed, acc in (("before", -1, 0.25), ("teacher", -1, 0.75), ("after", 0, 0.75),
                            ("after", 1, 0.75), ("after", 2, 0.75)):
        k = int(acc * n)
        rows += [{"pair": "v2-incompatible", "run": "coldstart", "teacher": "v2-teacher-b",
                  "role": role, "seed": seed, "subset": "hard", "item": i,
                  "correct": int(i < k)} for i in range(n)]
    rows += [{"pair": "v2-reverse", "run": "teacher-v2-student-0-long", "teacher": "x",
              "role": "after", "seed": 0, "subset": "mid", "item": 0, "correct": 1}]
    out = extra_outcomes(pd.DataFrame(rows))
    assert out.pair.tolist() == ["v2-incompatible+coldstart"]
    r = out.iloc[0]
    assert r["acc_before/hard"] == 0.25 and r["acc_after/hard"] == 0.75
    assert r.recovery == pytest.approx(1.0) and r.n_seeds == 3
    assert r.outcome == "worked"  # every resample recovers the whole gap
    worse = pd.DataFrame(rows)
    worse.loc[(worse.role == "after"), "correct"] = 0  # OPD lost everything the cold start had
    assert extra_outcomes(worse).iloc[0].outcome == "failed"


def test_rank_long_outcomes_join_the_protocol_runs_and_the_other_teachers(tmp_path):
    """The v2-long-horizon ranking check's outcomes: the pair's own teacher from the protocol's
    committed items, the other candidates from their tagged runs, hard items only."""
    import pandas as pd

    from opd_diag.zoo.v2.validate import RANK_LONG_PAIR, rank_long_outcomes

    items = pd.DataFrame({"pair": RANK_LONG_PAIR, "role": ["before", "after", "after", "after"],
                          "seed": [-1, 0, 0, 1], "subset": "hard", "item": [0, 0, 1, 0],
                          "correct": [0, 1, 0, 1]})
    for teacher, seed, correct in (("v2-teacher-b", 0, [0, 0]), ("v2-teacher-b", 2, [1, 0]),
                                   ("v2-student-partial-long", 1, [1, 1])):
        run = tmp_path / f"{RANK_LONG_PAIR}-teacher-{teacher}-seed{seed}"
        run.mkdir()
        pd.DataFrame({"subset": ["hard", "hard", "easy"], "correct": [*map(bool, correct), True]}
                     ).to_parquet(run / "v2_eval.parquet")
    (tmp_path / f"{RANK_LONG_PAIR}-seed0").mkdir()  # a protocol run dir is not a candidate's
    out = rank_long_outcomes(items, tmp_path)
    assert list(out.columns) == ["teacher", "seed", "item", "correct"]
    got = {(t, s): list(g.correct) for (t, s), g in out.groupby(["teacher", "seed"])}
    assert got == {("v2-teacher-a", 0): [1, 0], ("v2-teacher-a", 1): [1],
                   ("v2-teacher-b", 0): [0, 0], ("v2-teacher-b", 2): [1, 0],
                   ("v2-student-partial-long", 1): [1, 1]}
    assert np.array_equal(out[out.teacher == "v2-teacher-b"].item.unique(), [0, 1])
