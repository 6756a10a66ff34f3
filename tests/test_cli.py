"""The CLI end to end, and every bad input of the capture path: exit 2, a specific message,
no run directory left behind."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from opd_diag.cli import main
from opd_diag.core.runs import load_run
from opd_diag.testing import make_model_dir, make_tokenizer


def _capture(pair, prompts, out, *extra):
    s, t = pair
    return main(["--quiet", "capture", "--student", str(s), "--teacher", str(t), "--prompts",
                 str(prompts), "--out", str(out), "--n-samples", "2", "--max-new-tokens", "6",
                 *extra])


def test_capture_probe_ls(tiny_pair, prompts_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert _capture(tiny_pair, prompts_file, out, "--top-k", "8") == 0
    assert main(["probe", "overlap", str(out)]) == 0
    text = capsys.readouterr().out
    assert "overlap_ratio" in text and "eq7_advantage" in text
    df = load_run(out).probe("overlap")
    assert set(df.level) == {"run", "rollout", "depth", "position"}
    assert (df.probe == "overlap").all() and (df.probe_version == 1).all()
    assert main(["ls"]) == 0
    assert "overlap" in capsys.readouterr().out
    # an existing run is not clobbered silently
    assert _capture(tiny_pair, prompts_file, out) == 2
    assert "already exists" in capsys.readouterr().err


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("capture", "probe", "ls", "demo"):
        assert cmd in out


def _expect_error(capsys, code, needle, out):
    assert code == 2
    err = capsys.readouterr().err
    assert needle in err, err
    assert not out.exists(), "a failed run must not leave a directory behind"


def test_missing_model_dir(tiny_pair, prompts_file, tmp_path, capsys):
    out = tmp_path / "run"
    code = _capture((tmp_path / "nope", tiny_pair[1]), prompts_file, out)
    _expect_error(capsys, code, "does not exist", out)


def test_non_hf_dir(tiny_pair, prompts_file, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "run"
    code = _capture((tmp_path / "empty", tiny_pair[1]), prompts_file, out)
    _expect_error(capsys, code, "no config.json", out)


def test_tokenizer_mismatch_names_tokens(tiny_pair, prompts_file, tmp_path, capsys):
    other = make_model_dir(tmp_path / "other", vocab_size=70, seed=5)
    out = tmp_path / "run"
    code = _capture((tiny_pair[0], other), prompts_file, out)
    _expect_error(capsys, code, "tokenizers differ", out)
    # a same-size vocabulary with swapped ids is named token by token
    tok = make_tokenizer(64)
    vocab = tok.get_vocab()
    vocab["w0"], vocab["w1"] = vocab["w1"], vocab["w0"]
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    swapped = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>",
                                      pad_token="<pad>", unk_token="<unk>")
    d = make_model_dir(tmp_path / "swapped", tokenizer=swapped, seed=6)
    code = _capture((tiny_pair[0], d), prompts_file, out)
    _expect_error(capsys, code, "'w0': student id 4 vs teacher id 5", out)


@pytest.mark.parametrize("content,needle", [
    ("", "no prompts"),
    ('{"prompt": "w1 w2"}\n{"prompt": \n', "not valid JSON"),
    ('{"text": "w1"}\n', "no 'prompt' column"),
    ('{"prompt": ""}\n', "row 1 has an empty"),
    ('{"prompt": 3}\n', "non-string prompt"),
    ('["w1"]\n', "expected a JSON object"),
])
def test_bad_prompt_files(tiny_pair, tmp_path, capsys, content, needle):
    p = tmp_path / "p.jsonl"
    p.write_text(content)
    out = tmp_path / "run"
    _expect_error(capsys, _capture(tiny_pair, p, out), needle, out)


def test_unsupported_prompt_format(tiny_pair, tmp_path, capsys):
    p = tmp_path / "p.txt"
    p.write_text("w1 w2\n")
    out = tmp_path / "run"
    _expect_error(capsys, _capture(tiny_pair, p, out), "unsupported format", out)


def test_csv_and_parquet_prompts(tiny_pair, tmp_path):
    import pandas as pd

    df = pd.DataFrame({"prompt": ["w1 w2", "w3 w4"], "answer": ["1", "2"]})
    df.to_csv(tmp_path / "p.csv", index=False)
    df.to_parquet(tmp_path / "p.parquet")
    for name in ("p.csv", "p.parquet"):
        assert _capture(tiny_pair, tmp_path / name, tmp_path / f"run-{name}") == 0
        assert list(load_run(tmp_path / f"run-{name}").prompts.answer) == ["1", "2"]


def test_prompt_longer_than_context(tiny_pair, tmp_path, capsys):
    s = make_model_dir(tmp_path / "short", vocab_size=64, max_positions=16, seed=2)
    p = tmp_path / "p.jsonl"
    p.write_text(json.dumps({"prompt": " ".join(["w1"] * 14)}) + "\n")
    out = tmp_path / "run"
    _expect_error(capsys, _capture((s, s), p, out), "exceeds the context window", out)


@pytest.mark.parametrize("flags,needle", [
    (["--n-samples", "0"], "n_samples must be a positive integer"),
    (["--top-k", "65"], "exceeds the vocabulary"),
    (["--top-k", "0"], "top_k must be a positive integer"),
    (["--temperature", "-0.5"], "--temperature: -0.5 is outside [0, inf)"),
    (["--temperature", "nan"], "--temperature: 'nan' is not a finite number"),
    (["--top-p", "0"], "--top-p: 0 is outside (0, 1]"),
    (["--student-dtype", "int3"], "unknown dtype"),
])
def test_bad_numbers(tiny_pair, prompts_file, tmp_path, capsys, flags, needle):
    out = tmp_path / "run"
    s, t = tiny_pair
    try:
        code = main(["--quiet", "capture", "--student", str(s), "--teacher", str(t), "--prompts",
                     str(prompts_file), "--out", str(out), *flags])
    except SystemExit as exc:  # a flag argparse rejects (its type checks range and finiteness)
        code = exc.code
    _expect_error(capsys, code, needle, out)


def test_nan_logits(tiny_pair, prompts_file, tmp_path, capsys):
    bad = make_model_dir(tmp_path / "nan", vocab_size=64, seed=0)
    weights = load_file(bad / "model.safetensors")
    weights["lm_head.weight"][3, 0] = float("nan")
    save_file(weights, bad / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "run"
    code = _capture((tiny_pair[0], bad), prompts_file, out)
    _expect_error(capsys, code, "teacher produced NaN/inf logits", out)


def test_probe_on_non_run(tmp_path, capsys):
    assert main(["probe", "overlap", str(tmp_path)]) == 2
    assert "not an opd-diag run" in capsys.readouterr().err
    assert main(["probe", "nosuch", str(tmp_path)]) == 2


def test_resume_with_different_config_is_refused(tiny_pair, prompts_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert _capture(tiny_pair, prompts_file, out) == 0
    assert _capture(tiny_pair, prompts_file, out, "--resume", "--top-k", "4") == 2
    assert "different config" in capsys.readouterr().err
    assert out.exists()
    assert _capture(tiny_pair, prompts_file, out, "--resume") == 0


def test_torch_untouched_dtype_bf16_teacher(tiny_pair, prompts_file, tmp_path):
    out = tmp_path / "run"
    assert _capture(tiny_pair, prompts_file, out, "--teacher-dtype", "bfloat16") == 0
    assert load_run(out).meta["models"]["teacher"]["dtype"] == "bfloat16"
    assert torch.get_default_dtype() == torch.float32


def _subparsers(parser, prefix=""):
    """``{"capture": parser, "zoo list": parser, ...}``: every (sub)command's parser."""
    import argparse

    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out[f"{prefix}{name}"] = sub
                out.update(_subparsers(sub, f"{prefix}{name} "))
    return out


def _flags(parser):
    import argparse

    return {s: a for a in parser._actions if not isinstance(a, (argparse._HelpAction,
                                                                argparse._SubParsersAction))
            for s in a.option_strings or [a.dest]}


def test_every_flag_has_help_and_its_default():
    """Issue 16.5: each flag says what it does and, when it has a value default, what it is."""
    import argparse

    from opd_diag.cli import build_parser

    missing, no_default = [], []
    for cmd, parser in _subparsers(build_parser()).items():
        for flag, action in _flags(parser).items():
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{cmd} {flag}")
            elif (action.default not in (None, False, [], argparse.SUPPRESS)
                  and not action.option_strings == [] and "default" not in action.help
                  and not isinstance(action, argparse._StoreTrueAction)):
                no_default.append(f"{cmd} {flag} (default {action.default!r})")
    assert not missing, f"flags without help: {missing}"
    assert not no_default, f"help does not name the default: {no_default}"


def test_shared_flags_mean_the_same_everywhere():
    """Issue 16.5: a flag several subcommands share has one help text, type and default;
    every writer of a directory has --overwrite; every command that loads models takes a
    device and dtype per model."""
    import re
    from dataclasses import fields

    from opd_diag.cli import build_parser
    from opd_diag.cli.common import HELP
    from opd_diag.train.config import TrainConfig

    config_fields = {f.name for f in fields(TrainConfig)}
    parsers = _subparsers(build_parser())
    seen: dict[str, set] = {}
    train_defaults: dict[str, str] = {}
    for cmd, parser in parsers.items():
        for flag, action in _flags(parser).items():
            name = flag.lstrip("-")
            if name not in HELP or (cmd == "train" and flag == "--top-k") or \
                    (cmd == "rank-teachers" and name in ("student", "teacher")):
                continue  # rank-teachers also takes zoo names, and --teacher repeatedly
            if name.endswith(("-device", "-dtype")):
                # per-model device / dtype: the same documented default everywhere (train's
                # config flags default to None = "from --preset / --config", documented the same)
                # or, beside --device / --dtype (preflight, rank-teachers), that one
                documented = re.search(r"\(default ([^)]*)\)", action.help)[1]
                allowed = {"cpu", "--device"} if name.endswith("device") else \
                    {"float32", "--dtype"}
                assert documented in allowed, (cmd, flag, action.help)
                continue
            if cmd == "train" and action.dest in config_fields:
                # a config flag (default None = "from --preset / --config"): same default
                train_defaults[flag] = re.search(r"\(default ([^)]*)\)", action.help)[1]
                continue
            key = (action.help, repr(action.default), getattr(action.type, "__name__", None),
                   type(action).__name__)
            seen.setdefault(flag, set()).add(key)
    assert len(seen) >= 7, seen.keys()
    differing = {f: v for f, v in seen.items() if len(v) > 1}
    assert not differing, differing
    assert train_defaults == {"--seed": "0", "--raw-prompt": "False"}, train_defaults
    for flag, documented in train_defaults.items():
        (_, default, _, _), = seen[flag]
        assert documented == default, (flag, documented, default)
    assert parsers["capture"].parse_args(["--student", "s", "--teacher", "t", "--out", "o"]
                                         ).top_k == 16
    for cmd in ("capture", "ingest", "preflight", "train", "coldstart", "rank-teachers"):
        assert "--overwrite" in _flags(parsers[cmd]), cmd
    for cmd in ("capture", "ingest", "preflight", "train", "coldstart", "select-prompts",
                "rank-teachers"):
        flags = _flags(parsers[cmd])
        for flag in ("--student-device", "--teacher-device", "--student-dtype",
                     "--teacher-dtype", "--trust-remote-code"):
            assert flag in flags, (cmd, flag)
    # --top-k is the captured list size everywhere; train's loss support has its own flag
    train = _flags(parsers["train"])
    assert train["--loss-top-k"].dest == "top_k" and train["--capture-top-k"].dest == \
        "capture_top_k"
    assert train["--student-device"].dest == train["--device"].dest == "device"
