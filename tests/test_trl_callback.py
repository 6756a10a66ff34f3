"""OPDDiagCallback inside trl 1.16 DistillationTrainer and GKDTrainer on tiny CPU models."""

import os
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("trl")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
warnings.filterwarnings("ignore")

from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback  # noqa: E402

from opd_diag.core.errors import OpdDiagError  # noqa: E402
from opd_diag.core.runs import load_run  # noqa: E402
from opd_diag.integrations.trl import LOGGED, OPDDiagCallback  # noqa: E402
from opd_diag.probes import run_probe  # noqa: E402
from opd_diag.testing import make_model_dir, make_tokenizer  # noqa: E402

torch.set_num_threads(1)
CHAT = ("{% for m in messages %}{% if m['role'] == 'user' %}<bos> w0 {{ m['content'] }} <eos>"
        "{% else %} w1 {{ m['content'] }} <eos>{% endif %}{% endfor %}"
        "{% if add_generation_prompt %} w1{% endif %}")
CPU = dict(per_device_train_batch_size=2, gradient_accumulation_steps=1, max_steps=2,
           learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to="none",
           use_cpu=True, bf16=False, gradient_checkpointing=False, dataloader_num_workers=0, seed=0)
QUESTIONS = ["w5 w6", "w7 w8 w9", "w10", "w11 w12"]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("trl")
    tok = make_tokenizer(64)
    tok.chat_template = CHAT
    teacher = make_model_dir(root / "teacher", tokenizer=tok, seed=0)
    student = make_model_dir(root / "student", tokenizer=tok, base=teacher, noise=0.05, seed=1)
    return student, teacher


def _load(dirs):
    tok = AutoTokenizer.from_pretrained(str(dirs[0]))
    tok.chat_template = CHAT
    s, t = (AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32) for d in dirs)
    for m in (s, t):
        m.generation_config.eos_token_id = tok.eos_token_id
        m.generation_config.pad_token_id = tok.pad_token_id
    return s, t, tok


class Keep(TrainerCallback):
    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kw):
        self.logs.append(dict(logs or {}))


def _check_run(path, steps):
    run = load_run(path)
    assert run.meta["status"] == "complete"
    assert sorted(run.states.step.unique()) == steps
    assert sorted(run.rollouts.step.unique()) == steps
    assert run.metrics.step.tolist() == steps
    assert set(run.states.rollout_id) <= set(run.rollouts.rollout_id)
    overlap = run_probe("overlap", run)
    assert sorted(overlap[overlap.level == "run"].step) == steps
    return run


def test_distillation_trainer_uses_its_own_samples(dirs, tmp_path):
    from trl import DistillationConfig, DistillationTrainer

    student, teacher, tok = _load(dirs)
    data = Dataset.from_dict({"prompt": [[{"role": "user", "content": q}] for q in QUESTIONS]})
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, processing_class=tok, train_dataset=data,
        args=DistillationConfig(output_dir=str(tmp_path / "o"), beta=1.0, temperature=1.0,
                                max_completion_length=6, **CPU))
    keep = Keep()
    trainer.add_callback(keep)
    cb = OPDDiagCallback.attach(trainer, tmp_path / "run", every=1, top_k=8)
    assert trainer.callback_handler.callbacks[0] is cb
    trainer.train()
    logged = [row for row in keep.logs if "loss" in row]
    assert len(logged) == 2
    for row in logged:
        for m in LOGGED:
            assert np.isfinite(row[f"opd_diag/{m}"]) or m == "eq7_advantage"
        assert 0 <= row["opd_diag/overlap_ratio"] <= 1
    assert "opd_diag/overlap_ratio" in trainer.state.log_history[0]
    run = _check_run(tmp_path / "run", [1, 2])
    assert run.config["source"] == "trainer"
    # Exactly the trainer's own samples: prompts are the chat renderings TRL tokenised.
    rendered = {tuple(tok.apply_chat_template([{"role": "user", "content": q}], tokenize=True,
                                              add_generation_prompt=True, return_dict=False))
                for q in QUESTIONS}
    assert {tuple(ids) for ids in run.prompts.input_ids} <= rendered
    assert (run.rollouts.n_tokens <= 6).all()


def test_gkd_trainer_samples_fresh(dirs, tmp_path):
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    student, teacher, tok = _load(dirs)
    data = Dataset.from_dict({"messages": [[{"role": "user", "content": q},
                                            {"role": "assistant", "content": "w3 w4"}]
                                           for q in QUESTIONS]})
    trainer = GKDTrainer(
        model=student, teacher_model=teacher, processing_class=tok, train_dataset=data,
        args=GKDConfig(output_dir=str(tmp_path / "o"), lmbda=1.0, beta=0.5, temperature=0.9,
                       max_new_tokens=5, max_length=64, **CPU))
    with pytest.raises(OpdDiagError, match="pass prompts"):
        OPDDiagCallback.attach(trainer, tmp_path / "x")
    keep = Keep()
    trainer.add_callback(keep)
    OPDDiagCallback.attach(trainer, tmp_path / "run", every=2, prompts=QUESTIONS[:2],
                           n_samples=2, top_k=8)
    trainer.train()
    assert [("opd_diag/overlap_mass_t" in row) for row in keep.logs if "loss" in row] == [False, True]
    run = _check_run(tmp_path / "run", [2])
    assert run.config["source"] == "fresh" and run.config["temperature"] == pytest.approx(0.9)
    assert len(run.rollouts) == 4 and (run.rollouts.n_tokens <= 5).all()
