"""Sampling backends: every rollout, continuation and frontier sample goes through one of these.

``--backend hf`` (default) is :func:`opd_diag.states.rollout.sample_batch`; ``--backend
hf-compile`` is the same sampler with each decode iteration ``torch.compile``-d (small models,
where a decode step is per-op overhead, not arithmetic; the first batch pays the compile);
``--backend vllm`` samples with vLLM (:mod:`.vllm`). Scoring never goes through a backend: the
states table is always computed by the HF capture engine (exact full-vocabulary statistics).

Both backends take the same arguments and return the same ``(completion_ids, stop_reason)`` per
row, so the rollouts table is identical in shape and meaning. Seeds: each row gets the same
per-row seed (:func:`opd_diag.states.rollout.row_seed`) in both, so either backend reproduces
its own rows independently of batching and sharding; but vLLM draws from a different random
stream (its per-request ``torch.Generator`` on the GPU, through its own top-p / softmax kernels),
so **vLLM completions are not bit-identical to HF completions** for the same seed (greedy
decoding, ``temperature 0``, agrees up to floating-point ties and kernel differences).

The active backend is a context variable: :func:`use_backend` sets it for a block (what
``run_capture``, ``run_preflight``, ``train`` and ``coldstart`` do with their ``backend=``
argument), and the samplers call :func:`current_backend`.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

from ..core.errors import OpdDiagError
from .rollout import SamplingConfig, sample_batch

BACKENDS = ("hf", "hf-compile", "vllm")


class HFBackend:
    """HF sampling: left-padded, KV-cached, one generator per row (:func:`sample_batch`).

    Args:
        compile: ``torch.compile`` each decode iteration (``--backend hf-compile``); same
            samples as the uncompiled lean decode up to floating-point summation order.
    """

    name = "hf"
    compile = False

    def __init__(self, compile: bool = False) -> None:
        if compile:
            self.compile, self.name = True, "hf-compile"

    def sample(self, model, prompt_ids: list[list[int]], seeds: list[int], cfg: SamplingConfig,
               *, eos_ids: list[int], pad_id: int, vocab_limit: int | None = None
               ) -> list[tuple[list[int], str]]:
        return sample_batch(model, prompt_ids, seeds, cfg, eos_ids=eos_ids, pad_id=pad_id,
                            vocab_limit=vocab_limit, compile=self.compile)

    def sync_weights(self, model) -> None:
        """Nothing to do: HF samples from the training model itself."""

    def describe(self) -> dict:
        return {"name": self.name}


class VLLMBackend:
    """vLLM sampling; one ``vllm.LLM`` per model directory, created on first use.

    Args:
        gpu_memory_utilization: the fraction of GPU memory *each* engine may take for weights
            plus KV cache. vLLM pre-allocates it; the HF models (scoring, training with its
            optimizer state) need the rest, so with a student and a teacher engine on one GPU
            keep ``2 × gpu_memory_utilization + HF share < ~0.95`` (default 0.3 each).
        dtype: engine dtype ("auto" = the checkpoint's).
        max_model_len: engine context length (default: the model's).
    """

    name = "vllm"

    def __init__(self, gpu_memory_utilization: float = 0.3, dtype: str = "auto",
                 max_model_len: int | None = None) -> None:
        from . import vllm as vb

        if not 0 < gpu_memory_utilization < 1:
            raise OpdDiagError(f"gpu_memory_utilization must lie in (0, 1), got "
                               f"{gpu_memory_utilization}")
        vb.require()
        self.gpu_memory_utilization = gpu_memory_utilization
        self.dtype = dtype
        self.max_model_len = max_model_len
        self._engines: dict[str, object] = {}

    def engine(self, model):
        """The ``vllm.LLM`` serving this HF model's directory."""
        from . import vllm as vb

        path = str(getattr(model, "name_or_path", "") or "")
        if not path:
            raise OpdDiagError("the vLLM backend needs models loaded from a local directory "
                               "(model.name_or_path is empty)")
        if path not in self._engines:
            kw = {} if self.max_model_len is None else {"max_model_len": self.max_model_len}
            self._engines[path] = vb.load_llm(
                path, dtype=self.dtype, gpu_memory_utilization=self.gpu_memory_utilization, **kw)
        return self._engines[path]

    def sample(self, model, prompt_ids: list[list[int]], seeds: list[int], cfg: SamplingConfig,
               *, eos_ids: list[int], pad_id: int, vocab_limit: int | None = None
               ) -> list[tuple[list[int], str]]:
        from . import vllm as vb

        return vb.sample_rows(self.engine(model), prompt_ids, seeds, cfg, eos_ids=eos_ids,
                              vocab_limit=vocab_limit,
                              model_vocab=int(model.config.vocab_size))

    def sync_weights(self, model) -> None:
        """Push the training model's current weights into its engine (every OPD step)."""
        from . import vllm as vb

        vb.sync_weights(self.engine(model), model)

    def describe(self) -> dict:
        return {"name": self.name, "gpu_memory_utilization": self.gpu_memory_utilization,
                "dtype": self.dtype, "max_model_len": self.max_model_len}


_CURRENT: contextvars.ContextVar = contextvars.ContextVar("opd_diag_backend", default=None)


def make_backend(backend: str | HFBackend | VLLMBackend | None = None, **kwargs):
    """A backend from its name (``"hf"`` / ``"hf-compile"`` / ``"vllm"``) or a backend object.

    Raises :class:`OpdDiagError` for an unknown name, or for ``"vllm"`` without vLLM installed.
    """
    if backend is None or backend in ("hf", "hf-compile"):
        return HFBackend(compile=backend == "hf-compile")  # the vLLM options do not apply
    if backend == "vllm":
        return VLLMBackend(**kwargs)
    if isinstance(backend, str):
        raise OpdDiagError(f"unknown sampling backend {backend!r}; choose one of {BACKENDS}")
    if not callable(getattr(backend, "sample", None)):
        raise OpdDiagError(f"a backend needs a .sample(...) method, got {type(backend).__name__}")
    return backend


def current_backend():
    """The backend samplers use now (HF unless inside :func:`use_backend`)."""
    return _CURRENT.get() or HFBackend()


@contextmanager
def use_backend(backend=None, **kwargs) -> Iterator:
    """Sample through ``backend`` (a name or an object) inside the block."""
    b = make_backend(backend, **kwargs)
    token = _CURRENT.set(b)
    try:
        yield b
    finally:
        _CURRENT.reset(token)


def accepts_backend(fn):
    """Give ``fn`` a keyword-only ``backend=`` argument: when set, ``fn`` runs inside
    :func:`use_backend` (``None``: the active backend, HF by default)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, backend=None, **kwargs):
        if backend is None:
            return fn(*args, **kwargs)
        with use_backend(backend):
            return fn(*args, **kwargs)

    return wrapper
