"""Real shapes, no downloads (issue 12): a Qwen2-architecture base student with a 151,936-row
head and an instruct teacher with a 152,064-row head, sharing a 151,643-token BPE tokenizer
(+ 22 specials) but declaring different EOS tokens and chat templates — random-init, tiny depth,
on CPU. Capture, pre-flight, train (bf16 autocast) and ingest run on them; plus the pure
truncation rule, the seeded pre-flight sample and reference scoring at the run's temperature.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from opd_diag.cli.main import main
from opd_diag.core.models import load_model, load_pair
from opd_diag.core.prompts import load_prompts
from opd_diag.core.runs import load_run
from opd_diag.preflight import PreflightConfig, run_preflight
from opd_diag.preflight.truncation import truncation_row, verdict_with_truncation
from opd_diag.states.capture import CaptureConfig
from opd_diag.states.collect import run_capture
from opd_diag.states.rollout import SamplingConfig
from opd_diag.testing import QWEN_HEADS, QWEN_REGULAR, make_qwen2_dir, make_qwen_pair_dirs

TEXTS = ["What is 12 + 30?", "Name a prime larger than 10.", "Compute 7 * 8.",
         "Is 91 prime?", "Sort 3, 1, 2.", "What is 2 to the power 10?"]


@pytest.fixture(scope="session")
def qwen_pair(tmp_path_factory):
    return make_qwen_pair_dirs(tmp_path_factory.mktemp("qwen"))


@pytest.fixture(scope="session")
def loaded(qwen_pair):
    return load_pair(*qwen_pair)


@pytest.fixture()
def qwen_prompts(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in TEXTS))
    return path


def test_shapes_and_base_instruct_pair(loaded):
    s, t = loaded.student, loaded.teacher
    assert (s.logit_width, t.logit_width) == (QWEN_HEADS["student"], QWEN_HEADS["teacher"])
    assert len(loaded.tokenizer) == QWEN_REGULAR + 22 == loaded.compare_vocab
    assert s.describe()["architecture"] == "Qwen2ForCausalLM"
    # base EOS <|endoftext|> (151643), instruct EOS <|im_end|> (151645): a warning, both stop
    assert any("eos_token" in w for w in loaded.warnings)
    assert {151643, 151645} <= set(loaded.stop_token_ids)
    assert s.tokenizer.chat_template is None and t.tokenizer.chat_template


def test_capture_cli_defaults_to_generation_config_budget(qwen_pair, qwen_prompts, tmp_path,
                                                          capsys):
    out = tmp_path / "cap"
    code = main(["--quiet", "capture", "--student", str(qwen_pair[0]), "--teacher",
                 str(qwen_pair[1]), "--prompts", str(qwen_prompts), "--out", str(out),
                 "--n-samples", "1", "--top-k", "4"])
    assert code == 0
    assert "different eos_token" in capsys.readouterr().err
    run = load_run(out)
    assert run.config["sampling"]["max_new_tokens"] == 16  # the student's generation_config
    assert run.states.topk_ids_s.map(max).max() < loaded_vocab(run)
    assert run.meta["models"]["stop_token_ids"]["used"] == [151643, 151645]
    assert run.meta["models"]["tokenizer_warnings"]
    # a model directory without generation_config max_new_tokens needs the flag
    bare = make_qwen2_dir(tmp_path / "bare", load_model(qwen_pair[0]).tokenizer,
                          max_new_tokens=None)
    code = main(["--quiet", "capture", "--student", str(bare), "--teacher", str(qwen_pair[1]),
                 "--prompts", str(qwen_prompts), "--out", str(tmp_path / "cap2")])
    assert code == 2 and "--max-new-tokens is required" in capsys.readouterr().err
    assert not (tmp_path / "cap2").exists()


def loaded_vocab(run) -> int:
    return int(run.meta["models"]["compare_vocab"])


def test_preflight_small_budget_truncation_and_seeded_sample(loaded, qwen_prompts, tmp_path):
    cfg = PreflightConfig(n_prompts=2, n_samples=2, max_new_tokens=6, top_k=4, seed=3)
    verdict = run_preflight(loaded, load_prompts(qwen_prompts), tmp_path / "pf", config=cfg)
    run = load_run(tmp_path / "pf")
    # a seeded random sample of the file, not its first n
    keep = sorted(np.random.default_rng(3).permutation(len(TEXTS))[:2])
    assert run.prompts.prompt.tolist() == [TEXTS[i] for i in keep] != TEXTS[:2]
    # a random-init 151,936-way head never says EOS: every rollout is cut at 6 tokens
    data = json.loads((tmp_path / "pf" / "verdict.json").read_text())
    assert data["truncation"]["truncated_share"]["student"] == 1.0
    assert data["truncation"]["reason"] == "100% of rollouts truncated at 6 tokens"
    assert verdict.verdict == data["verdict"] == "CAUTION"
    row = verdict.table[verdict.table.condition == "truncation"].iloc[0]
    assert row.status == "CAUTION" and set(verdict.table.columns) >= {
        "condition", "metric", "value", "status", "rule", "recovery"}


def test_truncation_rule_is_per_model_and_overrides():
    def rolls(n_cut, n=20):
        return pd.DataFrame({"stop_reason": ["length"] * n_cut + ["eos"] * (n - n_cut)})

    ok = truncation_row({"student": rolls(2), "teacher": rolls(1)}, 512)
    assert ok["status"] == "GO" and ok["value"] == pytest.approx(0.10)
    bad = truncation_row({"student": rolls(1), "teacher": rolls(5)}, 512)
    assert bad["status"] == "CAUTION" and bad["value"] == pytest.approx(0.25)
    assert bad["rule"].startswith("25% of rollouts truncated at 512 tokens (student 5%, teacher 25%)")
    table = pd.DataFrame([{"condition": "teacher novelty", "status": "NO-GO"}, bad])
    assert verdict_with_truncation(table, "NO-GO") == "CAUTION"
    table = pd.DataFrame([{"condition": "teacher novelty", "status": "NO-GO"}, ok])
    assert verdict_with_truncation(table, "NO-GO") == "NO-GO"
    assert truncation_row({"student": rolls(3), "teacher": None}, 64)["status"] == "CAUTION"


def test_truncation_guard_does_not_count_looping_rollouts():
    from opd_diag.preflight.truncation import is_looping, looping_shares

    rng = np.random.default_rng(0)
    loop = [5, 9] + [34] * 200  # "34 34 34 ..." to the cap: the model would never finish
    cycle = list(rng.integers(0, 300, 40)) + [7, 8, 9] * 60  # a short cycle also loops
    prose = list(rng.integers(0, 300, 202))  # cut off mid-text: the cap is too short
    assert is_looping(loop) and is_looping(cycle) and not is_looping(prose)
    assert not is_looping([34] * 10)  # shorter than the window: never called a loop

    def rolls(n_loop, n_cut, n=20):
        ids = [loop] * n_loop + [prose] * n_cut + [prose[:50]] * (n - n_loop - n_cut)
        stop = ["length"] * (n_loop + n_cut) + ["eos"] * (n - n_loop - n_cut)
        return pd.DataFrame({"stop_reason": stop, "completion_ids": ids})

    looping = truncation_row({"student": rolls(8, 1), "teacher": rolls(0, 0)}, 202)
    assert looping["status"] == "GO" and looping["value"] == pytest.approx(0.05)
    assert "looping to the cap, not counted" in looping["rule"] and "student 40%" in looping["rule"]
    assert looping_shares({"student": rolls(8, 1)}) == {"student": pytest.approx(0.4)}
    cut = truncation_row({"student": rolls(8, 3), "teacher": rolls(0, 0)}, 202)
    assert cut["status"] == "CAUTION" and cut["value"] == pytest.approx(0.15)
    # a table without token ids (guard version 1's input) counts every capped rollout
    no_ids = rolls(8, 1).drop(columns="completion_ids")
    assert truncation_row({"student": no_ids}, 202)["value"] == pytest.approx(0.45)


def test_train_two_steps_bf16_autocast(loaded, qwen_prompts, tmp_path):
    from opd_diag.train import resolve_config, train

    pair = load_pair(loaded.student.path, loaded.teacher.path, student_dtype="bfloat16")
    cfg = resolve_config(overrides={"steps": 2, "batch_prompts": 1, "n_samples": 2,
                                    "max_new_tokens": 4, "capture_top_k": 4, "top_k": 4,
                                    "dtype": "bfloat16", "lr": 1e-4, "ckpt_every": 0,
                                    "gradient_checkpointing": True, "states_sample": 0.5})
    train(pair, load_prompts(qwen_prompts), tmp_path / "tr", cfg, progress=False)
    run = load_run(tmp_path / "tr")
    assert len(run.metrics) == 2 and np.isfinite(run.metrics.loss).all()
    assert run.meta["precision"] == {**run.meta["precision"], "master_weights": "float32",
                                     "autocast": "bfloat16"}
    assert (run.states.topk_ids_s.map(max) < QWEN_HEADS["student"]).all()


def test_ingest_on_real_shapes(loaded, qwen_prompts, tmp_path):
    from opd_diag.integrations.ingest import ingest

    run = load_run(run_capture(loaded, load_prompts(qwen_prompts).head(2), tmp_path / "c",
                               sampling=SamplingConfig(n_samples=1, max_new_tokens=5),
                               capture=CaptureConfig(top_k=4), progress=False))
    ids = run.prompts.set_index("prompt_id").input_ids
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"prompt_ids": list(map(int, ids[r.prompt_id])),
                                       "completion_ids": list(map(int, r.completion_ids))}) + "\n"
                           for r in run.rollouts.itertuples()))
    ingest(loaded, "jsonl", log, tmp_path / "g", capture=CaptureConfig(top_k=4), progress=False)
    g = load_run(tmp_path / "g")
    assert g.states.token.tolist() == run.states.token.tolist()
    np.testing.assert_allclose(g.states.logp_t, run.states.logp_t, atol=1e-4)


def test_reference_scores_use_the_run_temperature(loaded, qwen_prompts, tmp_path):
    from opd_diag.states import generations

    out = run_capture(loaded, load_prompts(qwen_prompts).head(1), tmp_path / "c",
                      sampling=SamplingConfig(n_samples=1, max_new_tokens=3, temperature=0.5),
                      capture=CaptureConfig(top_k=4), progress=False)
    run = load_run(out)
    # the teacher as its own "reference" scored at T=0.5 reproduces the states' logp_t
    refs = generations.reference_scores(loaded, run, {"self": loaded.teacher})
    merged = refs.merge(run.states[["rollout_id", "t", "logp_t"]], on=["rollout_id", "t"])
    np.testing.assert_allclose(merged.logp_teacher, merged.logp_t, atol=1e-4)


def test_granite_capture_and_train(tmp_path):
    """Granite-style ``logits_scaling`` student and teacher: capture passes the head check and
    2 bf16-autocast steps train."""
    from opd_diag.testing import make_granite_dir, write_prompts
    from opd_diag.train import resolve_config, train

    t = make_granite_dir(tmp_path / "gt", logits_scaling=8.0, seed=0)
    s = make_granite_dir(tmp_path / "gs", logits_scaling=8.0, seed=1)
    pair = load_pair(s, t)
    prompts = load_prompts(write_prompts(tmp_path / "p.jsonl", n=2))
    run = load_run(run_capture(pair, prompts, tmp_path / "c", sampling=SamplingConfig(
        n_samples=1, max_new_tokens=4), capture=CaptureConfig(top_k=4), progress=False))
    assert len(run.states) and np.isfinite(run.states.rkl).all()
    cfg = resolve_config("tiny", overrides={"steps": 2, "dtype": "bfloat16", "ckpt_every": 0})
    train(pair, prompts, tmp_path / "tr", cfg, progress=False)
    assert np.isfinite(load_run(tmp_path / "tr").metrics.loss).all()


@pytest.mark.parametrize("command", ["preflight", "train"])
def test_cli_requires_a_budget_without_generation_config(command, tmp_path, capsys):
    from opd_diag.testing import make_model_dir, write_prompts

    bare = make_model_dir(tmp_path / "bare", max_new_tokens=None)
    prompts = write_prompts(tmp_path / "p.jsonl", n=2)
    out = tmp_path / "out"
    code = main(["--quiet", command, "--student", str(bare), "--teacher", str(bare), "--prompts",
                 str(prompts), "--out", str(out)])
    assert code == 2 and "--max-new-tokens is required" in capsys.readouterr().err
    assert not out.exists()
