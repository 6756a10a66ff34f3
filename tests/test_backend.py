"""The sampling backend switch: every sampler goes through the active backend, the HF backend
is the old path unchanged, training syncs weights every step, and --backend vllm without vLLM
is a clear exit-2 error (the vLLM runs themselves are in test_vllm.py, skipped without a GPU)."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from opd_diag.cli.main import main
from opd_diag.core.errors import OpdDiagError
from opd_diag.core.models import load_pair
from opd_diag.core.prompts import load_prompts
from opd_diag.core.runs import load_run
from opd_diag.states import vllm as vb
from opd_diag.states.backend import HFBackend, current_backend, make_backend, use_backend
from opd_diag.states.collect import run_capture
from opd_diag.states.rollout import SamplingConfig


class Recorder(HFBackend):
    """HF sampling that notes which model sampled how many rows, and every weight sync."""

    name = "recorder"

    def __init__(self):
        self.calls: list[tuple[int, int]] = []
        self.syncs: list[int] = []

    def sample(self, model, prompt_ids, seeds, cfg, **kw):
        self.calls.append((id(model), len(prompt_ids)))
        return super().sample(model, prompt_ids, seeds, cfg, **kw)

    def sync_weights(self, model):
        self.syncs.append(id(model))


def test_names_and_errors():
    assert make_backend("hf").name == "hf" and make_backend(None).name == "hf"
    compiled = make_backend("hf-compile")
    assert compiled.name == "hf-compile" and compiled.compile and not make_backend("hf").compile
    assert compiled.describe() == {"name": "hf-compile"}
    assert current_backend().name == "hf"
    with pytest.raises(OpdDiagError, match="unknown sampling backend 'tgi'"):
        make_backend("tgi")
    with pytest.raises(OpdDiagError, match="needs a .sample"):
        make_backend(object())
    rec = Recorder()
    with use_backend(rec) as b:
        assert b is rec and current_backend() is rec
    assert current_backend().name == "hf"


@pytest.mark.skipif(vb.available(), reason="vLLM is installed")
@pytest.mark.parametrize("cmd", [
    ["capture", "--prompts", "P"], ["preflight", "--prompts", "P"],
    ["train", "--prompts", "P"], ["coldstart", "--prompts", "P"],
    ["rank-teachers", "--prompts", "P", "--max-new-tokens", "8"]])
def test_vllm_without_vllm_exits_2(cmd, tiny_pair, prompts_file, tmp_path, capsys):
    s, t = map(str, tiny_pair)
    argv = [c if c != "P" else str(prompts_file) for c in cmd]
    code = main([*argv, "--student", s, "--teacher", t, "--out", str(tmp_path / "o"),
                 "--backend", "vllm"])
    assert code == 2
    assert "pip install 'opd-diag[vllm]'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_capture_through_a_backend_equals_the_default(tiny_pair, prompts_file, tmp_path):
    pair = load_pair(*tiny_pair)
    prompts = load_prompts(prompts_file)
    sampling = SamplingConfig(n_samples=2, max_new_tokens=8, batch_size=3, seed=5)
    run_capture(pair, prompts, tmp_path / "hf", sampling=sampling, progress=False)
    rec = Recorder()
    run_capture(pair, prompts, tmp_path / "rec", sampling=sampling, progress=False, backend=rec)
    a, b = load_run(tmp_path / "hf"), load_run(tmp_path / "rec")
    cols = ["rollout_id", "completion", "n_tokens", "stop_reason"]
    pd.testing.assert_frame_equal(a.rollouts[cols], b.rollouts[cols])
    assert sum(n for _, n in rec.calls) == len(prompts) * 2
    assert {m for m, _ in rec.calls} == {id(pair.student.model)}
    assert b.meta["backend"]["name"] == "recorder" and a.meta["backend"]["name"] == "hf"


def test_preflight_samples_every_generation_through_the_backend(tiny_pair, tmp_path):
    import json

    from opd_diag.preflight import PreflightConfig, run_preflight

    pair = load_pair(*tiny_pair)
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"w{i} w{i + 1}", "answer": f"w{i + 2}"}) + "\n"
                            for i in range(4)))
    prompts = load_prompts(path)
    cfg = PreflightConfig(n_prompts=4, n_samples=2, max_new_tokens=6, n_frontier=2,
                          max_continuation_rollouts=2, batch_size=8)
    rec = Recorder()
    run_preflight(pair, prompts, tmp_path / "pf", config=cfg,
                  verifier=lambda text, answer: len(text) % 2 == 0, backend=rec)
    by_model = {}
    for m, n in rec.calls:
        by_model[m] = by_model.get(m, 0) + n
    s, t = id(pair.student.model), id(pair.teacher.model)
    # student rollouts + continuations + frontier; teacher rollouts + continuations + frontier
    assert set(by_model) == {s, t}
    n_cont = 2 * len(cfg.depths) * cfg.n_continue
    assert by_model[s] >= 4 * 2 + n_cont and by_model[t] >= 4 * 2 + n_cont


def test_train_syncs_weights_every_step(tiny_pair, prompts_file, tmp_path):
    from opd_diag.train import resolve_config, train

    pair = load_pair(*tiny_pair)
    cfg = resolve_config("tiny", overrides={"steps": 3})
    rec = Recorder()
    train(pair, load_prompts(prompts_file), tmp_path / "t", cfg, progress=False, backend=rec)
    assert rec.syncs == [id(pair.student.model)] * 3
    assert len(rec.calls) >= 3


@pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
                    reason="torch.compile on CPU needs a C++ compiler (none on PATH)")
def test_train_with_hf_compile_equals_hf(tiny_pair, prompts_file, tmp_path, capsys):
    """``--backend hf-compile`` in the loop: the same rollouts and losses as ``hf`` over two steps
    (the second step samples from the updated student), from the CLI as from the API."""
    from opd_diag.train import resolve_config, train

    cfg = resolve_config("tiny", overrides={"steps": 2, "objective": "reverse_kl"})
    train(load_pair(*tiny_pair), load_prompts(prompts_file), tmp_path / "hf", cfg,
          progress=False)
    s, t = map(str, tiny_pair)
    assert main(["--quiet", "train", "--student", s, "--teacher", t, "--prompts", str(prompts_file),
                 "--preset", "tiny", "--steps", "2", "--objective", "reverse_kl",
                 "--out", str(tmp_path / "hfc"), "--backend", "hf-compile"]) == 0
    a, b = load_run(tmp_path / "hf"), load_run(tmp_path / "hfc")
    cols = ["step", "prompt_id", "completion_ids"]
    pd.testing.assert_frame_equal(a.rollouts[cols].reset_index(drop=True),
                                  b.rollouts[cols].reset_index(drop=True))
    assert b.metrics.loss.tolist() == pytest.approx(a.metrics.loss.tolist(), rel=1e-5)
    assert "hf-compile" in main_help(capsys, "train")


def main_help(capsys, command: str) -> str:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    return capsys.readouterr().out


def test_cli_says_hf_compile_compiles_first(capsys):
    """The CLI tells a user why the first batch of --backend hf-compile takes a minute (not in a
    --dry-run, whose plan says it), and says nothing for hf."""
    import argparse

    from opd_diag.cli.common import backend_from_args

    ns = dict(gpu_memory_utilization=0.9, dry_run=False)
    assert backend_from_args(argparse.Namespace(backend="hf-compile", **ns)).compile
    assert "first batch compiles the decode" in capsys.readouterr().err
    backend_from_args(argparse.Namespace(backend="hf", **ns))
    backend_from_args(argparse.Namespace(backend="hf-compile", gpu_memory_utilization=0.9,
                                         dry_run=True))
    assert capsys.readouterr().err == ""
