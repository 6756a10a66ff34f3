"""Keep transformers' own progress bars ("Loading weights", "Writing model shards") out of our
output: the library reports progress through its own tqdm bars, which callers switch off with
``progress=False``; a load or a save inside it should not print a bar of its own."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def hf_progress_bars_off():
    """Disable transformers' tqdm bars for the duration; restore the caller's setting after."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    if was_on:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
