"""Ingest of TRL / verl / generic JSONL logs: exact re-tokenisation, same tables as a capture."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from opd_diag.cli import main as cli_main
from opd_diag.core.errors import OpdDiagError
from opd_diag.core.models import load_pair
from opd_diag.core.prompts import load_prompts
from opd_diag.core.runs import load_run
from opd_diag.integrations.ingest import ingest, read_log
from opd_diag.probes import run_probe
from opd_diag.states.capture import CaptureConfig
from opd_diag.states.collect import run_capture
from opd_diag.states.rollout import SamplingConfig
from opd_diag.testing import make_model_dir, make_tokenizer, write_prompts

torch.set_num_threads(1)
CHAT = ("{% for m in messages %}<bos> w0 {{ m['content'] }} <eos>{% endfor %}"
        "{% if add_generation_prompt %} w1{% endif %}")


@pytest.fixture(scope="module")
def chat_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("chat")
    tok = make_tokenizer(64)
    tok.chat_template = CHAT
    teacher = make_model_dir(root / "teacher", tokenizer=tok, seed=0)
    student = make_model_dir(root / "student", tokenizer=tok, base=teacher, noise=0.02, seed=1)
    return student, teacher


@pytest.fixture(scope="module")
def captured(chat_pair, tmp_path_factory):
    """An offline capture whose rollouts we re-log in each trainer's format."""
    tmp = tmp_path_factory.mktemp("cap")
    pair = load_pair(*chat_pair)
    prompts = load_prompts(write_prompts(tmp / "p.jsonl", n=3, vocab_size=64))
    run_capture(pair, prompts, tmp / "run", progress=False, capture=CaptureConfig(top_k=8),
                sampling=SamplingConfig(n_samples=2, max_new_tokens=6, seed=3))
    return pair, load_run(tmp / "run")


def _trl_dump(run, out_dir, tok):
    """What TRL's log_completions writes: skip_special_tokens=True text, one file per step."""
    (out_dir / "completions").mkdir(parents=True)
    prompts = run.prompts.set_index("prompt_id")
    for step, part in ((10, run.rollouts.iloc[:3]), (20, run.rollouts.iloc[3:])):
        pd.DataFrame({
            "step": step,
            "prompt": [tok.decode(prompts.input_ids[p], skip_special_tokens=True)
                       for p in part.prompt_id],
            "completion": [tok.decode(c, skip_special_tokens=True) for c in part.completion_ids],
        }).to_parquet(out_dir / "completions" / f"completions_{step:05d}.parquet")
    return out_dir


def _strip_eos(ids, eos):
    return list(ids[:-1]) if len(ids) and ids[-1] == eos else list(ids)


def test_trl_log_reproduces_the_capture(captured, tmp_path):
    pair, run = captured
    tok = pair.tokenizer
    log = _trl_dump(run, tmp_path / "trl_out", tok)
    ingest(pair, "trl", log, tmp_path / "ing", capture=CaptureConfig(top_k=8), progress=False)
    got = load_run(tmp_path / "ing")
    assert got.meta["kind"] == "ingest" and got.meta["steps"] == [10, 20]
    # The prompt was recovered from the stripped rendering and re-rendered to the same ids.
    assert (got.prompts["render"] == "chat_template").all()
    assert sorted(map(list, got.prompts.input_ids)) == sorted(map(list, run.prompts.input_ids))
    assert got.rollouts.step.tolist() == [10] * 3 + [20] * 3
    eos = tok.eos_token_id
    for a, b in zip(run.rollouts.itertuples(), got.rollouts.itertuples()):
        assert list(b.completion_ids) == _strip_eos(a.completion_ids, eos)  # TRL drops EOS text
        sa = run.states[run.states.rollout_id == a.rollout_id].iloc[: b.n_tokens]
        sb = got.states[got.states.rollout_id == b.rollout_id]
        assert (sb.step == b.step).all() and len(sa) == len(sb)
        for col in ("logp_s", "logp_t", "H_s", "H_t", "rkl"):
            np.testing.assert_allclose(sa[col], sb[col], atol=1e-5)
        assert np.array_equal(np.stack(sa.topk_ids_s), np.stack(sb.topk_ids_s))
    overlap = run_probe("overlap", got)
    assert sorted(overlap[overlap.level == "run"].step) == [10, 20]


def test_verl_and_generic_jsonl(captured, tmp_path):
    pair, run = captured
    tok = pair.tokenizer
    prompts = run.prompts.set_index("prompt_id")
    vdir = tmp_path / "verl"
    vdir.mkdir()
    rows = [{"input": tok.decode(prompts.input_ids[r.prompt_id], skip_special_tokens=True),
             "output": tok.decode(r.completion_ids, skip_special_tokens=True),
             "gts": "w3", "score": float(i), "acc": i % 2 == 0, "step": 5}
            for i, r in enumerate(run.rollouts.itertuples())]
    (vdir / "5.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ingest(pair, "verl", vdir, tmp_path / "v", capture=CaptureConfig(top_k=8), progress=False)
    v = load_run(tmp_path / "v")
    assert v.rollouts.reward.tolist() == [float(i) for i in range(6)]
    assert v.rollouts.correct.tolist() == [i % 2 == 0 for i in range(6)]
    assert (v.prompts.answer == "w3").all() and (v.rollouts.step == 5).all()

    # Generic JSONL with token ids is exact, EOS included: the states equal the capture's.
    gen = tmp_path / "gen.jsonl"
    gen.write_text("".join(json.dumps({"prompt_ids": list(map(int, prompts.input_ids[r.prompt_id])),
                                       "completion_ids": list(map(int, r.completion_ids))}) + "\n"
                           for r in run.rollouts.itertuples()))
    ingest(pair, "jsonl", gen, tmp_path / "g", capture=CaptureConfig(top_k=8), progress=False)
    g = load_run(tmp_path / "g")
    assert g.rollouts.rollout_id.tolist() == run.rollouts.rollout_id.tolist()  # step -1, same ids
    for col in ("token", "t", "T"):
        assert g.states[col].tolist() == run.states[col].tolist()
    np.testing.assert_allclose(g.states.logp_t, run.states.logp_t, atol=1e-5)


def test_text_that_does_not_retokenise_names_the_row(captured, tmp_path):
    pair, _ = captured
    log = tmp_path / "out" / "completions"
    log.mkdir(parents=True)
    pd.DataFrame({"step": [2, 2], "prompt": ["w0 w5 w1", "w0 w6 w1"],
                  "completion": ["w3 w4", "w3  w4"]}).to_parquet(log / "completions_00002.parquet")
    with pytest.raises(OpdDiagError, match=r"completions_00002.parquet:1: completion does not "
                       "re-tokenise exactly"):
        ingest(pair, "trl", log.parent, tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "hello there", "completion": "w3"}) + "\n")
    with pytest.raises(OpdDiagError, match=r"bad.jsonl:1: prompt does not re-tokenise"):
        ingest(pair, "jsonl", bad, tmp_path / "r", progress=False)


@pytest.mark.parametrize("fmt,content,message", [
    ("trl", {"step": [1], "prompt": ["w5"]}, r"missing column\(s\) \['completion'\]"),
    ("verl", [{"inputs": "w5", "output": "w6"}], r"missing column\(s\) \['input'\]"),
    ("jsonl", [{"prompt": "w5", "response": "w6"}], r"need 'completion' or 'completion_ids'"),
    ("jsonl", [{"prompt": "w5", "completion": "w6", "step": "late"}], r"'step' must be an integer"),
    ("csv", [], r"unknown log format 'csv'"),
])
def test_bad_schemas(tmp_path, fmt, content, message):
    if fmt == "trl":
        path = tmp_path / "completions_00001.parquet"
        pd.DataFrame(content).to_parquet(path)
    else:
        path = tmp_path / "log.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in content))
    with pytest.raises(OpdDiagError, match=message):
        read_log(fmt, path)


def test_cli_ingest_and_capture_from(chat_pair, tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps({"prompt": "w5 w6", "completion": "w7 w8 w9", "step": 3}) + "\n")
    base = ["--quiet", "--student", str(chat_pair[0]), "--teacher", str(chat_pair[1]), "--top-k", "4"]
    assert cli_main(["ingest", "--from", "jsonl", str(log), "--out", str(tmp_path / "a"),
                     "--prompt-format", "chat", *base[1:]]) == 0
    a = load_run(tmp_path / "a")
    assert a.prompts.rendered.iat[0] == "<bos> w0 w5 w6 <eos> w1" and len(a.states) == 3
    assert cli_main(["--quiet", "capture", "--from", "jsonl", str(log), "--out",
                     str(tmp_path / "b"), *base[1:]]) == 0
    assert load_run(tmp_path / "b").prompts.render.iat[0] == "raw"  # auto: not a rendering
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "w5", "completion": "nope"}) + "\n")
    assert cli_main(["capture", "--from", "jsonl", str(bad), "--out", str(tmp_path / "c"),
                     *base[1:]]) == 2
    assert cli_main(["capture", "--from", "yaml", str(bad), "--out", str(tmp_path / "c"),
                     *base[1:]]) == 2
    assert not (tmp_path / "c").exists()
