"""Zoo: tokenizer round trips, committed checkpoints, pairs, and a builder smoke run."""

from __future__ import annotations

import json
import os
import random

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from opd_diag.tasks import get_task  # noqa: E402
from opd_diag.zoo import (  # noqa: E402
    ZOO_DIR,
    build_zoo,
    eval_set,
    evaluate,
    get_pair,
    list_models,
    list_pairs,
    model_dir,
)
from opd_diag.zoo.tokenizer import VOCAB, build_tokenizer, encode_fast  # noqa: E402

TASK = get_task("addition")
BUILT = [m for m in list_models() if (ZOO_DIR / m / "config.json").exists()]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one thread is fastest, and avoids oversubscription on a busy 2-core box."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("tok")
    build_tokenizer().save_pretrained(str(path))
    return AutoTokenizer.from_pretrained(str(path))


def task_strings(n: int = 200):
    rng = random.Random(0)
    for i in range(n):
        p = TASK.sample(rng, TASK.difficulties[i % len(TASK.difficulties)])
        for template in TASK.templates:
            yield TASK.render_prompt(p, template)
        for style in TASK.styles:
            yield TASK.render_reasoning(p, style, rng)


def test_vocabulary_is_a_few_hundred_tokens_and_covers_the_task() -> None:
    assert 200 <= len(VOCAB) <= 1000
    assert TASK.words() <= set(VOCAB)


def test_tokenizer_round_trips_every_task_string(hf_tokenizer) -> None:
    assert type(hf_tokenizer).__name__ in ("TokenizersBackend", "PreTrainedTokenizerFast")
    for text in task_strings():
        ids = hf_tokenizer(text)["input_ids"]
        assert ids[0] == hf_tokenizer.bos_token_id and hf_tokenizer.unk_token_id not in ids
        assert ids[1:] == encode_fast(text)
        assert hf_tokenizer.decode(ids, skip_special_tokens=True) == text


def test_prompt_and_completion_tokenize_independently(hf_tokenizer) -> None:
    p = TASK.sample(random.Random(1), 4)
    prompt, completion = (
        TASK.render_prompt(p, "plain"),
        TASK.render_reasoning(p, "lsd", random.Random(1)),
    )
    joint = hf_tokenizer(prompt + " " + completion)["input_ids"]
    assert joint == hf_tokenizer(prompt)["input_ids"] + encode_fast(completion)


def test_unknown_token_is_an_error() -> None:
    with pytest.raises(ValueError, match="vocabulary"):
        encode_fast("3 + banana =")


@pytest.mark.parametrize("name", BUILT)
def test_committed_checkpoint_loads_and_matches_its_card(name: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = model_dir(name)
    card = json.loads((path / "card.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(str(path))
    tok = AutoTokenizer.from_pretrained(str(path))
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32
    assert tok.get_vocab() == {t: i for i, t in enumerate(VOCAB)}
    template = card["spec"]["templates"][0]
    expected = card["card_eval"]["accuracy"][template]
    got = evaluate((model, tok), eval_set("addition", template, card["card_eval"]["n_per_subset"]))
    for subset, acc in expected.items():
        assert abs(got[subset] - acc) <= 0.02, (name, subset, got, expected)


def test_zoo_is_small() -> None:
    total = sum(f.stat().st_size for f in ZOO_DIR.rglob("*") if f.is_file())
    assert total <= 25 * 2**20


def test_pairs_are_well_formed() -> None:
    names = [p.name for p in list_pairs()]
    assert {
        "success",
        "out-of-reach",
        "incompatible",
        "no-novelty",
        "reverse",
        "template",
        "long-horizon",
    } <= set(names)
    for pair in list_pairs():
        assert set(pair.models) <= set(list_models())
        prompts = pair.prompts(16)
        assert list(prompts.columns[:2]) == ["prompt", "answer"] and len(prompts) == 16
        evals = pair.eval_sets(4)
        assert {"prompt", "answer", "subset"} <= set(evals.columns)
        assert set(evals["subset"]) == set(pair.subsets)
        assert pair.hyper.top_k >= 4 and pair.demonstrates and pair.expected


def test_prompt_sets_are_deterministic() -> None:
    pair = get_pair("success")
    assert pair.prompts(32, seed=3).equals(pair.prompts(32, seed=3))
    assert not pair.prompts(32, seed=3).equals(pair.prompts(32, seed=4))


@pytest.mark.parametrize(
    "call",
    [
        lambda: get_pair("nope"),
        lambda: model_dir("nope"),
        lambda: build_zoo(only="nope", quick=True),
    ],
)
def test_unknown_names_raise_value_error_with_options(call) -> None:
    with pytest.raises(ValueError, match="valid"):
        call()


def test_quick_build_writes_a_loadable_model(tmp_path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    (card,) = build_zoo(only="teacher-a", out_dir=tmp_path, quick=True, progress=False)
    path = tmp_path / "teacher-a"
    assert card["training"]["steps_done"] == 8 and len(card["sha256"]) == 64
    model = AutoModelForCausalLM.from_pretrained(str(path))
    tok = AutoTokenizer.from_pretrained(str(path))
    out = model(**tok(["1 2 + 3 ="], return_tensors="pt"))
    assert out.logits.shape[-1] == len(VOCAB)
    assert (path / "README.md").read_text().startswith("# teacher-a")


def test_content_pools():
    import pandas as pd

    from opd_diag.core.errors import OpdDiagError
    from opd_diag.zoo import get_pair
    from opd_diag.zoo.data import content_prompt_set

    aligned = content_prompt_set("teacher", "plain", 64, seed=0)
    # teacher-a's own content is exactly the success pair's default OPD prompt pool
    pd.testing.assert_frame_equal(aligned, get_pair("success").prompts(64, seed=0))
    unaligned = content_prompt_set("three-operand", "plain", 64, seed=0)
    assert all(p.count("+") == 2 for p in unaligned.prompt)
    assert all(str(sum(int(x.replace(" ", "")) for x in p.removesuffix(" =").split(" + "))) == a
               for p, a in zip(unaligned.prompt, unaligned.answer))
    with pytest.raises(OpdDiagError, match="unknown content pool 'dapo'.*three-operand"):
        content_prompt_set("dapo", "plain", 4, seed=0)
