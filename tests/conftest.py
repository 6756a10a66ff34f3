import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from opd_diag.testing import make_model_dir, make_pair_dirs, write_prompts  # noqa: E402


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory):
    """(student_dir, teacher_dir): a 64-token teacher and a noisy copy as student."""
    return make_pair_dirs(tmp_path_factory.mktemp("pair"), vocab_size=64, noise=0.02)


@pytest.fixture(scope="session")
def same_pair(tmp_path_factory):
    """One model used as both student and teacher."""
    d = make_model_dir(tmp_path_factory.mktemp("same") / "m", vocab_size=64, seed=3)
    return d, d


@pytest.fixture(scope="session")
def big_vocab_pair(tmp_path_factory):
    """Random 50k-vocabulary models (exercises chunking) with a padded teacher head."""
    root = tmp_path_factory.mktemp("big")
    teacher = make_model_dir(root / "teacher", vocab_size=50_000, logit_rows=50_048, hidden=16,
                             layers=1, heads=2, seed=0)
    student = make_model_dir(root / "student", vocab_size=50_000, hidden=16, layers=1, heads=2,
                             seed=1)
    return student, teacher


@pytest.fixture()
def prompts_file(tmp_path):
    return write_prompts(tmp_path / "prompts.jsonl", n=4, vocab_size=64)
