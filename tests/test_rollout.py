import pandas as pd
import pytest
import torch

from opd_diag.core.errors import OpdDiagError
from opd_diag.core.models import load_model, load_pair
from opd_diag.core.prompts import load_prompts
from opd_diag.states.collect import generate_rollouts, render_prompts
from opd_diag.states.rollout import SamplingConfig, render_prompt


def _prompts(pair, prompts_file, cfg):
    return render_prompts(pair, load_prompts(prompts_file), cfg)


def test_greedy_matches_hf_generate(tiny_pair, prompts_file):
    pair = load_pair(*tiny_pair)
    cfg = SamplingConfig(n_samples=1, temperature=0.0, max_new_tokens=8)
    prompts = _prompts(pair, prompts_file, cfg)
    # different prompt lengths so left padding matters
    prompts.at[0, "input_ids"] = prompts.input_ids.iat[0][:3]
    rows = [(r, 0) for r in range(len(prompts))]
    ours = generate_rollouts(pair, prompts, rows, cfg)
    model, tok = pair.student.model, pair.tokenizer
    for r in range(len(prompts)):
        ids = torch.tensor([prompts.input_ids.iat[r]])
        ref = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=8, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id)[0, ids.shape[1]:].tolist()
        if tok.eos_token_id in ref:
            ref = ref[: ref.index(tok.eos_token_id) + 1]
        assert ours.completion_ids.iat[r] == ref


def test_rows_do_not_depend_on_batching(tiny_pair, prompts_file):
    pair = load_pair(*tiny_pair)
    prompts = _prompts(pair, prompts_file, SamplingConfig())
    rows = [(r, s) for r in range(len(prompts)) for s in range(2)]
    big = generate_rollouts(pair, prompts, rows, SamplingConfig(max_new_tokens=10, seed=3))
    small = pd.concat([generate_rollouts(pair, prompts, [row],
                                         SamplingConfig(max_new_tokens=10, seed=3))
                       for row in rows], ignore_index=True)
    assert list(big.completion_ids) == list(small.completion_ids)
    assert set(big.stop_reason) <= {"eos", "length"}
    assert all(n == len(c) for n, c in zip(big.n_tokens, big.completion_ids))


def test_tiny_top_p_is_greedy(tiny_pair, prompts_file):
    pair = load_pair(*tiny_pair)
    prompts = _prompts(pair, prompts_file, SamplingConfig())
    rows = [(r, 0) for r in range(len(prompts))]
    greedy = generate_rollouts(pair, prompts, rows, SamplingConfig(temperature=0, max_new_tokens=6))
    nucleus = generate_rollouts(pair, prompts, rows, SamplingConfig(top_p=1e-6, max_new_tokens=6))
    assert list(greedy.completion_ids) == list(nucleus.completion_ids)


def test_chat_template_used_unless_raw(tiny_pair):
    tok = load_model(tiny_pair[0]).tokenizer
    tok.chat_template = "{% for m in messages %}w1 {{ m['content'] }} w2{% endfor %}"
    text, ids, how = render_prompt(tok, "w5 w6")
    assert how == "chat_template" and text == "w1 w5 w6 w2"
    assert ids == tok("w1 w5 w6 w2", add_special_tokens=False)["input_ids"]
    text, ids, how = render_prompt(tok, "w5 w6", raw=True)
    assert how == "raw" and ids[0] == tok.bos_token_id


@pytest.mark.parametrize("kw", [dict(n_samples=0), dict(temperature=-1), dict(top_p=0),
                                dict(max_new_tokens=0), dict(batch_size=0)])
def test_bad_sampling_config(kw):
    with pytest.raises(OpdDiagError):
        SamplingConfig(**kw)


# --- issue 12: base vs instruct pairs ------------------------------------------------------


def test_base_instruct_special_tokens_warn_and_stop_on_both_eos(tiny_pair, prompts_file, tmp_path,
                                                               capsys):
    """Same token→id map, different EOS declaration: a warning (stderr and run.json), and the
    student stops on the teacher's EOS too."""
    import json

    from opd_diag.states.capture import CaptureConfig
    from opd_diag.states.collect import run_capture
    from opd_diag.testing import make_model_dir, make_tokenizer

    greedy = SamplingConfig(n_samples=1, temperature=0.0, max_new_tokens=6)
    pair = load_pair(*tiny_pair)
    first = generate_rollouts(pair, _prompts(pair, prompts_file, greedy), [(0, 0)], greedy)
    tok0 = int(first.completion_ids.iat[0][0])  # the student's greedy first token on prompt 0
    assert tok0 not in pair.stop_token_ids
    name = pair.tokenizer.convert_ids_to_tokens(tok0)
    teacher = make_model_dir(tmp_path / "instruct", base=tiny_pair[1],
                             tokenizer=make_tokenizer(64, eos_token=name))
    capsys.readouterr()
    pair = load_pair(tiny_pair[0], teacher)
    assert "different eos_token" in capsys.readouterr().err
    assert tok0 in pair.stop_token_ids
    out = run_capture(pair, load_prompts(prompts_file), tmp_path / "run", sampling=greedy,
                      capture=CaptureConfig(top_k=4), progress=False)
    roll = pd.read_parquet(out / "rollouts.parquet")
    row = roll[roll.prompt_id == roll.prompt_id.min()].iloc[0]
    assert list(row.completion_ids) == [tok0] and row.stop_reason == "eos"
    meta = json.loads((out / "run.json").read_text())["models"]
    assert tok0 in meta["stop_token_ids"]["used"]
    assert tok0 in meta["stop_token_ids"]["teacher"]
    assert tok0 not in meta["stop_token_ids"]["student"]
    assert any("eos_token" in w for w in meta["tokenizer_warnings"])
