"""Student rollouts: batched, left-padded, KV-cached sampling that is reproducible per row.

Reproducibility: every (prompt, sample) row draws its randomness from its own generator, seeded
from ``(seed, prompt_id, sample_idx)``. A row's completion therefore does not depend on which
other rows share its batch (up to floating-point effects of batch shape), so a resumed or
sharded run reproduces the rows of an uninterrupted one.

Sampling draws one uniform number per row per step and inverts the CDF of the (temperature- and
top-p-adjusted) distribution; temperature 0 is greedy decoding.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..core.errors import OpdDiagError
from .lean import LeanDecoder, lean_supported, static_decode_step


@dataclass
class SamplingConfig:
    """How the student samples.

    Attributes:
        n_samples: completions per prompt.
        temperature: softmax temperature; 0 means greedy. Capture scores at this temperature.
        top_p: nucleus sampling mass (1 disables it).
        max_new_tokens: completion budget; generation also stops at EOS.
        batch_size: rows (prompt × sample) per generation batch.
        seed: base seed; each row derives its own generator from it.
        raw_prompt: feed the prompt text as is instead of through the chat template.
    """

    n_samples: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    batch_size: int = 16
    seed: int = 0
    raw_prompt: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.n_samples, int) or self.n_samples <= 0:
            raise OpdDiagError(f"n_samples must be a positive integer, got {self.n_samples!r}")
        if self.temperature < 0:
            raise OpdDiagError(f"temperature must be ≥ 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise OpdDiagError(f"top_p must lie in (0, 1], got {self.top_p}")
        if self.max_new_tokens <= 0:
            raise OpdDiagError(f"max_new_tokens must be positive, got {self.max_new_tokens}")
        if self.batch_size <= 0:
            raise OpdDiagError(f"batch_size must be positive, got {self.batch_size}")

    def to_dict(self) -> dict:
        return asdict(self)


def render_prompt(tokenizer, text: str, raw: bool = False) -> tuple[str, list[int], str]:
    """Render one prompt the way the model expects it.

    Returns ``(rendered_text, token_ids, how)`` where ``how`` is ``"chat_template"`` or ``"raw"``.
    With a chat template the prompt becomes one user turn plus the generation prompt; raw
    prompts get the tokenizer's usual special tokens (e.g. BOS).
    """
    if not raw and getattr(tokenizer, "chat_template", None):
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
        )
        ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
        return rendered, list(ids), "chat_template"
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    return text, list(ids), "raw"


def eos_token_ids(model, tokenizer) -> list[int]:
    """EOS ids from the generation config (may be several) and the tokenizer."""
    ids: set[int] = set()
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None) if gen is not None else None
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, (list, tuple)):
        ids.update(int(e) for e in eos)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return sorted(ids)


def cache_kwarg(model) -> str:
    """Name of the KV-cache argument: ``cache`` in transformers ≥ 5.2x, ``past_key_values`` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def row_seed(seed: int, prompt_id: int, sample_idx: int) -> int:
    """Seed of one (prompt, sample) row: independent of batching and sharding."""
    return int(np.random.SeedSequence([seed, prompt_id, sample_idx]).generate_state(1)[0])


def _sample_next(logits_B_V: torch.Tensor, uniforms_B: torch.Tensor, temperature: float,
                 top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The next token of each row and whether the row's distribution was usable: a NaN or
    +inf logit makes the softmax's total (or, greedy, the maximum) non-finite, which this
    reads off a ``[B]`` vector instead of another pass over ``[B, V]``; a −inf logit is a
    token of probability 0."""
    if temperature == 0:
        return logits_B_V.argmax(-1), torch.isfinite(logits_B_V.amax(-1))
    z = logits_B_V.float()
    probs = torch.softmax(z / temperature if temperature != 1.0 else z, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        keep = (sorted_p.cumsum(-1) - sorted_p) < top_p  # always keeps the top token
        sorted_p = sorted_p * keep
        cdf = sorted_p.cumsum(-1)
        idx = torch.searchsorted(cdf, (uniforms_B * cdf[:, -1]).unsqueeze(-1))
        idx = idx.clamp(max=probs.shape[-1] - 1)
        return order.gather(-1, idx).squeeze(-1), torch.isfinite(cdf[:, -1])
    cdf = probs.cumsum(-1)
    idx = torch.searchsorted(cdf, (uniforms_B * cdf[:, -1]).unsqueeze(-1)).squeeze(-1)
    return idx.clamp(max=probs.shape[-1] - 1), torch.isfinite(cdf[:, -1])


def _is_eos(tokens_B: torch.Tensor, eos: torch.Tensor) -> torch.Tensor:
    """Which sampled tokens are EOS ids (a plain compare: ``torch.isin``'s decomposition
    branches on the sizes, a guard that recompiles the compiled decode)."""
    return (tokens_B[:, None] == eos).any(-1)


def _advance(model, rotary, logits: torch.Tensor, uniforms: torch.Tensor, finished: torch.Tensor,
             eos: torch.Tensor, pad_id: int, temperature: float, top_p: float,
             positions: torch.Tensor, t: torch.Tensor, cur: int, *static
             ) -> tuple[torch.Tensor, ...]:
    """One decode iteration of :func:`sample_batch` as a single function (``compile=True``
    compiles blocks of them, :func:`_advance_block`): sample the tokens from ``logits``, mark
    finished rows, and run :func:`~opd_diag.states.lean.static_decode_step` on them. Returns ``(next_logits, tokens,
    finished, stop, bad)``: ``stop`` = every row finished or the logits were not finite
    (``bad``); the decode step of the last iteration is wasted work, not a different sample."""
    nxt, ok = _sample_next(logits, uniforms, temperature, top_p)
    bad = ~ok.all()
    nxt = nxt.masked_fill(finished, pad_id)
    finished = finished | _is_eos(nxt, eos)
    new = static_decode_step(model, rotary, nxt, positions, t, cur, *static)
    return new, nxt, finished, finished.all() | bad, bad


#: decode iterations per call of the compiled function: the per-call costs (guard evaluation,
#: the wrapper's bookkeeping, the Python loop) are paid once per block instead of once per token.
#: 4 made the compiled decode of the loop benchmark's student 0.55-0.6x the one-iteration
#: compile's time on CPU (8 gave nothing more), for a compile about 3x as long.
DECODE_BLOCK = 4


def _advance_block(model, rotary, logits: torch.Tensor, uniforms_B_K: torch.Tensor,
                   finished: torch.Tensor, eos: torch.Tensor, pad_id: int, temperature: float,
                   top_p: float, positions: torch.Tensor, t: torch.Tensor, cur: int, *static
                   ) -> tuple[torch.Tensor, ...]:
    """:data:`DECODE_BLOCK` iterations of :func:`_advance` in one function (what ``compile=True``
    hands to ``torch.compile``). Returns ``(next_logits, tokens [B, K], finished, stop [K],
    bad [K])``; the caller keeps the tokens up to the first ``stop`` (the iterations after it
    are wasted work on already-finished rows, never a different sample: each iteration's
    randomness is its own column of ``uniforms_B_K``)."""
    tokens, stops, bads = [], [], []
    for j in range(uniforms_B_K.shape[1]):
        logits, nxt, finished, stop, bad = _advance(
            model, rotary, logits, uniforms_B_K[:, j], finished, eos, pad_id, temperature,
            top_p, positions + j, t + j, cur + j, *static)
        tokens.append(nxt)
        stops.append(stop)
        bads.append(bad)
    return logits, torch.stack(tokens, 1), finished, torch.stack(stops), torch.stack(bads)


@functools.cache
def _compiled_advance(device_type: str):
    """``torch.compile(_advance_block)`` with dynamic batch and cache sizes, built once per
    process and device type (guards on the model's structure: a changed weight value does not
    recompile). On CPU the generated wrapper is C++ (inductor's ``cpp_wrapper``), which cuts
    the per-call Python cost of a graph of many small kernels."""
    options = {"cpp_wrapper": True} if device_type == "cpu" else None
    return torch.compile(_advance_block, dynamic=True, fullgraph=True, options=options)


def _no_duck_sizing():
    """A context in which dynamo gives every dynamic dimension its own symbol (torch's private
    ``use_duck_shape`` switch; a no-op context where a torch version lacks it)."""
    try:
        import torch.fx.experimental._config as fx_config

        return fx_config.patch(use_duck_shape=False)
    except (ImportError, AttributeError, TypeError):
        return contextlib.nullcontext()


_NAN_LOGITS = ("the student produced NaN/inf logits while sampling; check the checkpoint and "
               "dtype (try --student-dtype float32)")


@torch.no_grad()
def sample_batch(
    model,
    prompt_ids: list[list[int]],
    seeds: list[int],
    cfg: SamplingConfig,
    *,
    eos_ids: list[int],
    pad_id: int,
    vocab_limit: int | None = None,
    lean: bool | None = None,
    compile: bool = False,
) -> list[tuple[list[int], str]]:
    """Sample one completion per row; returns ``(completion_ids, stop_reason)`` per row.

    Decode steps go through :class:`~opd_diag.states.lean.LeanDecoder` (the model's own modules
    over a static KV cache) when the architecture allows it, else through the model's generic
    forward; ``lean=False`` (or ``OPD_DIAG_GENERIC_DECODE=1``) forces the generic path;
    ``OPD_DIAG_UNFUSED_DECODE=1`` keeps the lean step on the model's own modules (no
    :func:`~opd_diag.states.lean.fuse_layers`). All give the same samples for the same seeds. ``compile=True`` (``--backend hf-compile``) runs
    blocks of :data:`DECODE_BLOCK` decode iterations (sampling and the lean step) as one
    ``torch.compile``-d function: the first batch of a process pays the compile (about a minute
    on a small CPU on a cold inductor cache; it needs a C++ compiler there), later ones reuse
    it; samples are the lean decode's up to floating-point
    summation order. Models the lean step cannot drive (or a dynamic rope) decode uncompiled.

    Prompts are left-padded with explicit ``position_ids = cumsum(mask) − 1`` so every row sees
    the positions it would see alone. The completion keeps its EOS token; ``stop_reason`` is
    ``"eos"`` or ``"length"``. Token ids at or above ``vocab_limit`` (padding rows of a wider
    logit head) are never sampled.
    """
    from transformers import DynamicCache

    if lean is None:
        lean = os.environ.get("OPD_DIAG_GENERIC_DECODE", "") in ("", "0")
    device = next(model.parameters()).device
    B, P = len(prompt_ids), max(len(p) for p in prompt_ids)
    input_ids = torch.full((B, P), pad_id, dtype=torch.long)
    mask = torch.zeros((B, P), dtype=torch.long)
    for i, ids in enumerate(prompt_ids):
        input_ids[i, P - len(ids):] = torch.tensor(ids, dtype=torch.long)
        mask[i, P - len(ids):] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    # each row's uniforms for every position, drawn at once: the same numbers as one draw per
    # token from the row's generator (CPU mt19937), without B small draws per token
    uniforms = torch.stack([torch.rand(cfg.max_new_tokens, generator=torch.Generator().manual_seed(s))
                            for s in seeds]).to(device)
    # at least two entries (the first repeated): a size-1 dimension is always specialised, so a
    # model with one EOS id and one with several would each compile the decode
    eos = torch.tensor((list(eos_ids) * 2)[: max(2, len(eos_ids))], dtype=torch.long,
                       device=device)
    kv = {cache_kwarg(model): DynamicCache(config=model.config)}
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                use_cache=True, logits_to_keep=1, **kv)
    # decode: the lean static-cache step where the architecture allows it (states/lean.py)
    use_lean = lean and lean_supported(model, P + cfg.max_new_tokens) is None
    K = DECODE_BLOCK if compile else 1
    n_slots = -(-cfg.max_new_tokens // K) * K  # the compiled decode runs whole blocks
    # compiled: one spare cache slot, so an attended prefix never spans the whole cache (a slice
    # to the full size would specialise the graph on it and recompile)
    fused = os.environ.get("OPD_DIAG_UNFUSED_DECODE", "") in ("", "0")
    decoder = LeanDecoder(model, next(iter(kv.values())), mask, n_slots + (K > 1), fused=fused) \
        if use_lean else None
    logits_now = out.logits[:, -1]
    tokens = torch.full((B, n_slots), pad_id, dtype=torch.long, device=device)
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    next_pos = positions[:, -1:] + 1
    n_done = 0
    if compile and decoder is not None and decoder.static:
        advance = _compiled_advance(device.type)
        t = torch.tensor(decoder.length, device=device)
        pos_B, static = next_pos[:, 0].clone(), decoder.static_args()
        if n_slots > cfg.max_new_tokens:  # the last block's spare iterations draw zeros
            uniforms = torch.cat([uniforms, uniforms.new_zeros(B, n_slots - cfg.max_new_tokens)], 1)
        # no duck sizing while it compiles: dimensions that happen to be equal (e.g. batch 32
        # and head size 32) would share a symbol and specialise, a recompile per batch size
        with _no_duck_sizing():
            for i in range(0, cfg.max_new_tokens, K):
                try:
                    # fresh [B, V] logits every call: a view's base enters dynamo's guards (the
                    # prefill's 3-d logits, then a block's output: compiled twice)
                    logits_now, nxt, finished, stop, bad = advance(
                        model, decoder._rotary, logits_now[:, :vocab_limit].float().clone(),
                        uniforms[:, i: i + K], finished, eos, pad_id, cfg.temperature,
                        cfg.top_p, pos_B, t, decoder.length + i + 1, *static)
                except Exception as exc:  # noqa: BLE001 - a compiler failure is the user's to fix
                    if i == 0 and not isinstance(exc, OpdDiagError):
                        raise OpdDiagError(f"--backend hf-compile: torch.compile of the decode "
                                           f"step failed ({type(exc).__name__}: {exc}); on CPU "
                                           "it needs a working C++ compiler; use --backend hf"
                                           ) from exc
                    raise
                tokens[:, i: i + K] = nxt
                stopped = stop.nonzero()
                if len(stopped):
                    j = int(stopped[0, 0])
                    if bool(bad[j]):
                        raise OpdDiagError(_NAN_LOGITS)
                    n_done = i + j + 1
                    break
                n_done = i + K
                pos_B.add_(K)
                t.add_(K)
        return _results(tokens[:, :min(n_done, cfg.max_new_tokens)], eos_ids)
    for i in range(cfg.max_new_tokens):
        nxt, ok = _sample_next(logits_now[:, :vocab_limit], uniforms[:, i], cfg.temperature,
                               cfg.top_p)
        if not bool(ok.all()):
            raise OpdDiagError(_NAN_LOGITS)
        nxt = nxt.masked_fill_(finished, pad_id)
        tokens[:, i] = nxt
        n_done = i + 1
        finished |= _is_eos(nxt, eos)
        if bool(finished.all()):
            break
        if decoder is not None:
            logits_now = decoder.step(nxt, next_pos)
        else:
            mask = torch.cat([mask, torch.ones((B, 1), dtype=mask.dtype, device=device)], dim=1)
            logits_now = model(input_ids=nxt[:, None], attention_mask=mask,
                               position_ids=next_pos, use_cache=True, **kv).logits[:, -1]
        next_pos = next_pos + 1
    return _results(tokens[:, :n_done], eos_ids)


def _results(tokens: torch.Tensor, eos_ids: list[int]) -> list[tuple[list[int], str]]:
    """``(completion_ids, stop_reason)`` per row of the sampled ``[B, n]`` tokens."""
    results = []
    eos_set = set(eos_ids)
    for row in tokens.tolist():
        completion = []
        for tok in row:
            completion.append(tok)
            if tok in eos_set:
                break
        reason = "eos" if completion and completion[-1] in eos_set else "length"
        results.append((completion, reason))
    return results
