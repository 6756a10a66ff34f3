"""Cold start (filtered teacher rollouts → completion-only SFT) and teacher-aligned prompt selection."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from opd_diag.cli import main
from opd_diag.core.errors import OpdDiagError
from opd_diag.core.models import load_model, load_pair
from opd_diag.core.prompts import load_prompts
from opd_diag.train.recovery import ColdStartConfig, coldstart, is_repetitive, select_prompts


def test_repetition_filter_matches_thunlp_thresholds():
    assert is_repetitive("\n".join(["this line is long enough to count"] * 5))
    assert not is_repetitive("\n".join(["this line is long enough to count"] * 4))
    assert is_repetitive("abcdefghij" * 40)  # a 100-char n-gram repeated ≥ 3 times
    assert not is_repetitive("a short, varied answer: 42")


def test_coldstart_filters_trains_and_writes_a_student(tiny_pair, prompts_file, tmp_path):
    out = tmp_path / "student-sft"
    # near-uniform sampling (T=3) so that some rollouts of the random teacher reach EOS
    cfg = ColdStartConfig(n_samples=2, temperature=3.0, max_new_tokens=64, checker="regex:(w\\d+)",
                          epochs=2, lr=1e-3, batch_size=4)
    report = coldstart(load_pair(*tiny_pair), load_prompts(prompts_file), out, cfg)
    assert report["n_rollouts"] == 8 and report["n_kept"] + sum(report["dropped"].values()) == 8
    assert report["sft_steps"] >= 2 and report["sft_loss_last"] < report["sft_loss_first"]
    assert (out / "README.md").is_file() and json.loads((out / "coldstart.json").read_text())
    student = load_model(out)  # a loadable HF directory (safetensors + tokenizer)
    before = load_model(tiny_pair[0])
    assert any((a != b).any() for a, b in zip(student.model.parameters(),
                                              before.model.parameters(), strict=True))
    with pytest.raises(OpdDiagError, match="exists"):
        coldstart(load_pair(*tiny_pair), load_prompts(prompts_file), out, cfg)


def test_coldstart_drops_wrong_answers_and_refuses_empty(tiny_pair, tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"w{i} w2", "answer": "never"}) for i in range(3)))
    cfg = ColdStartConfig(max_new_tokens=4, checker="regex:(w\\d+)", epochs=1)
    with pytest.raises(OpdDiagError, match="no teacher rollout survived"):
        coldstart(load_pair(*tiny_pair), load_prompts(path), tmp_path / "out", cfg)
    assert not (tmp_path / "out").exists()


def test_select_prompts_ranks_and_compares_templates(tiny_pair, prompts_file, tmp_path):
    out = tmp_path / "sel.jsonl"
    ranked = select_prompts(load_pair(*tiny_pair), load_prompts(prompts_file), out, keep=0.5,
                            templates=["{prompt}", "w1 w1 w1 {prompt}"], n_samples=2,
                            max_new_tokens=6, top_k=8)
    assert len(ranked) == 4 and ranked.selected.sum() == 2
    assert ranked.overlap_ratio.is_monotonic_decreasing
    chosen = pd.read_json(out, lines=True)
    assert len(chosen) == 2 and set(chosen.prompt_id) == set(ranked[ranked.selected].prompt_id)
    assert "<- best" in ranked.attrs["template_summary"]
    ranked = select_prompts(load_pair(*tiny_pair), load_prompts(prompts_file), out, by="rkl",
                            keep=3, n_samples=1, max_new_tokens=4, top_k=8)
    assert ranked.rkl.is_monotonic_increasing and ranked.selected.sum() == 3


def test_cli_recovery_commands(tiny_pair, prompts_file, tmp_path):
    base = ["--student", str(tiny_pair[0]), "--teacher", str(tiny_pair[1]), "--prompts", str(prompts_file)]
    assert main(["select-prompts", *base, "--out", str(tmp_path / "s.jsonl"), "--keep", "2",
                 "--max-new-tokens", "4", "--top-k", "8", "--n-samples", "1"]) == 0
    assert load_prompts(tmp_path / "s.jsonl").shape[0] == 2  # usable as --prompts for train
    assert main(["select-prompts", *base, "--out", str(tmp_path / "t.jsonl"),
                 "--template", "no placeholder"]) == 2
    assert main(["coldstart", *base, "--out", str(tmp_path / "cs"), "--max-new-tokens", "64",
                 "--temperature", "3", "--n-samples", "2",
                 "--checker", "regex:(w\\d+)", "--epochs", "1", "--lr", "1e-3"]) == 0
    assert main(["coldstart", *base, "--out", str(tmp_path / "cs2"), "--lr", "-1"]) == 2
