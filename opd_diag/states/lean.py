"""A lean decode step for Llama-family students: the model's own modules, a static KV cache.

Sampling is half of an OPD step on small models, and most of a decode step there is not
arithmetic but the per-call machinery of a generic ``model(...)`` forward (argument handling,
output capturing, a causal mask rebuilt every token, a KV cache grown by concatenation). For
the decoder-only architectures listed in :data:`SUPPORTED`, :class:`LeanDecoder` runs one decode
step by calling the model's *own* submodules (embedding, norms, q/k/v/o projections, q/k norms
where the architecture has them, rotary embedding, MLP, LM head) in the order the model's
``forward`` does, with keys and values written in place into preallocated tensors. The weights,
the rotary code and the attention kernel (``scaled_dot_product_attention``) are the model's, so
the logits are the model's up to floating-point effects of batching, and the samples for a
seed are the same (``tests/test_rollout.py`` checks it on the zoo and on tiny random models).

With ``--backend hf-compile`` the decode step *and* the sampling of its token run as one
``torch.compile``-d function (:func:`static_decode_step` inside
:func:`opd_diag.states.rollout.sample_batch`): every shape is fixed for a whole decode (the new key
and value go in at a tensor index, attention runs over the whole preallocated cache under the
validity mask), so one compile with dynamic batch and cache sizes serves every batch of a run.

Uncompiled, a decode step of a small model is per-op overhead (about 75 ops of a few
microseconds each on a CPU), so the eager step runs :func:`_fused_decode`: q/k/v as one
projection, gate/up as one, queries and keys rotated together, RMSNorm as one ``rms_norm`` call
(:func:`fuse_layers`, for models whose fused copies stay under :data:`FUSE_MAX_BYTES`). Each
decode's first step runs both paths and keeps the fused one only where its logits match the
model's own modules (a module whose ``forward`` was replaced, e.g. by a hub kernel, falls back).

Anything outside that set (sliding-window attention in use, logit scaling/soft-capping,
tensor-parallel layers, attention dropout in training mode, another architecture, a
non-sdpa/eager attention implementation) is declined by :func:`lean_supported`, and the sampler falls back to the generic forward.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

SUPPORTED = ("llama", "qwen2", "qwen3", "mistral")


def lean_supported(model, max_len: int) -> str | None:
    """``None`` when :class:`LeanDecoder` can drive ``model`` for ``max_len`` positions, else
    the reason it cannot (the sampler then uses the generic forward)."""
    cfg = getattr(model, "config", None)
    kind = getattr(cfg, "model_type", None)
    if kind not in SUPPORTED:
        return f"architecture {kind!r} is not one of {SUPPORTED}"
    if getattr(cfg, "_attn_implementation", "sdpa") not in ("sdpa", "eager"):
        return f"attention implementation {cfg._attn_implementation!r}"
    window = getattr(cfg, "sliding_window", None)
    if window is not None and (kind == "mistral" or getattr(cfg, "use_sliding_window", False)) \
            and window < max_len:
        return f"sliding-window attention ({window} < {max_len} positions)"
    if any(getattr(cfg, k, None) not in (None, 1, 1.0) for k in ("logits_scaling", "pretraining_tp")):
        return "logit scaling or tensor-parallel layers"
    if getattr(cfg, "final_logit_softcapping", None) is not None:
        return "logit soft-capping"
    if model.training and float(getattr(cfg, "attention_dropout", 0.0) or 0.0) > 0:
        return "attention dropout in training mode"
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "layers") or not hasattr(model, "lm_head"):
        return "not a *ForCausalLM with .model.layers and .lm_head"
    if len(getattr(cfg, "layer_types", None) or []) and any(
            t != "full_attention" for t in cfg.layer_types[: cfg.num_hidden_layers]):
        return "layers other than full attention"
    return None


class LeanDecoder:
    """Decode steps over a static KV cache seeded from a prefill's ``DynamicCache``.

    Args:
        model: a model :func:`lean_supported` accepts (eval mode; called under no_grad).
        prefill: the cache after the prompt forward (``[B, kv_heads, P, head_dim]`` per layer).
        mask: ``[B, P]`` attention mask of the (left-padded) prompt, 1 = a real token.
        max_new: decode positions to allocate beyond the prompt.
        fused: run eager steps through :func:`fuse_layers`'s fused weights where it accepts the
            model (checked against the model's own modules on the first step).
    """

    def __init__(self, model, prefill, mask: torch.Tensor, max_new: int,
                 fused: bool = True) -> None:
        self.model, self.inner = model, model.model
        self.layers = list(self.inner.layers[: model.config.num_hidden_layers])
        B, P = mask.shape
        self.length = P
        self.valid = torch.zeros((B, P + max_new), dtype=torch.bool, device=mask.device)
        self.valid[:, :P] = mask.bool()
        self.padded = not bool(self.valid[:, :P].all())
        self.keys, self.values = [], []
        for layer in prefill.layers[: len(self.layers)]:
            k, v = layer.keys, layer.values
            K = k.new_zeros((*k.shape[:2], P + max_new, k.shape[-1]))
            V = v.new_zeros((*v.shape[:2], P + max_new, v.shape[-1]))
            K[:, :, :P], V[:, :, :P] = k, v
            self.keys.append(K)
            self.values.append(V)
        mod = sys.modules[type(self.layers[0].self_attn).__module__]
        self._rotary = mod.apply_rotary_pos_emb
        # the rotary cos/sin of every position this decode can reach, computed once by the
        # model's own rotary module (elementwise in the position, so a table row is what a
        # per-token call gives); "dynamic" scaling depends on the longest position seen, so it
        # keeps the per-token call
        self._rope_table = None
        rope = getattr(self.inner, "rotary_emb", None)
        if getattr(rope, "rope_type", "default") != "dynamic":
            probe = self.inner.embed_tokens.weight[:1, None].detach()
            everything = torch.arange(P + max_new, device=mask.device)[None]
            cos, sin = rope(probe, everything)
            self._rope_table = (cos[0], sin[0])
        # the eager step's fused weights (None: call the model's modules; see FusedLayer)
        self._fused = fuse_layers(model) if fused else None
        self._checked = False

    @property
    def static(self) -> bool:
        """Whether :func:`static_decode_step` can drive this decode (it needs the rope table)."""
        return self._rope_table is not None

    def static_args(self) -> tuple:
        """The tensors :func:`static_decode_step` takes after ``tokens, positions, t, cur``.

        Their architecture dimensions (kv heads, head size) are marked static for
        ``torch.compile``: left dynamic, a head size equal to the batch size (32 and 32) would
        share the batch's symbol, which then specialises, and every other batch size recompiles.
        """
        for cache in (*self.keys, *self.values):
            torch._dynamo.mark_static(cache, 1)
            torch._dynamo.mark_static(cache, 3)
        for table in self._rope_table:
            torch._dynamo.mark_static(table, 1)
        return (self.valid, self.keys, self.values, *self._rope_table)

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Feed ``tokens`` ``[B]`` at ``positions`` ``[B, 1]``; returns next-token logits ``[B, V]``."""
        t = self.length
        self.valid[:, t] = True
        self.length = cur = t + 1
        # like the generic forward: no mask when nothing is padded (q_len 1 attends everywhere)
        mask = self.valid[:, None, None, :cur] if self.padded else None
        h = self.inner.embed_tokens(tokens[:, None])
        if self._rope_table is not None:
            cos, sin = self._rope_table[0][positions], self._rope_table[1][positions]
        else:
            cos, sin = self.inner.rotary_emb(h, positions)

        def cache_kv(i: int, k: torch.Tensor, v: torch.Tensor):
            self.keys[i][:, :, t] = k[:, :, 0]
            self.values[i][:, :, t] = v[:, :, 0]
            return self.keys[i][:, :, :cur], self.values[i][:, :, :cur]

        if self._fused is None:
            return _decode(self.model, h, cos, sin, self._rotary, mask, cache_kv)
        if not self._checked:  # first step: the model's own modules, then the fused path
            self._checked = True
            mine = _fused_decode(self.model, self._fused, h, cos, sin, mask, cache_kv)
            # the model's own modules run second, so the cache slot holds their key/value
            ref = _decode(self.model, h, cos, sin, self._rotary, mask, cache_kv)
            tol = max(1e-3, 8 * torch.finfo(ref.dtype).eps)
            if not torch.allclose(mine, ref, rtol=tol, atol=tol * float(ref.abs().max())):
                self._fused = None  # a module whose forward is not the standard one: decline
            return ref
        return _fused_decode(self.model, self._fused, h, cos, sin, mask, cache_kv)


def _decode(model, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rotary,
            mask: torch.Tensor | None, cache_kv) -> torch.Tensor:
    """The decoder layers and the LM head for one new position per row (embedded ``h``
    ``[B, 1, D]``): the model's own modules in its forward's order. ``cache_kv(i, k, v)`` stores
    layer ``i``'s new key and value and returns the keys and values to attend over."""
    inner = model.model
    B = h.shape[0]
    for i, layer in enumerate(inner.layers[: model.config.num_hidden_layers]):
        attn = layer.self_attn
        x = layer.input_layernorm(h)
        shape = (B, 1, -1, attn.head_dim)
        q, k = attn.q_proj(x).view(shape), attn.k_proj(x).view(shape)
        if hasattr(attn, "q_norm"):  # qwen3: per-head RMSNorm before the rotation
            q, k = attn.q_norm(q), attn.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = attn.v_proj(x).view(shape).transpose(1, 2)
        q, k = rotary(q, k, cos, sin)
        keys, values = cache_kv(i, k, v)
        groups = getattr(attn, "num_key_value_groups", 1)
        if groups > 1:
            keys = keys.repeat_interleave(groups, dim=1)
            values = values.repeat_interleave(groups, dim=1)
        o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=attn.scaling)
        h = h + attn.o_proj(o.transpose(1, 2).reshape(B, 1, -1))
        h = h + layer.mlp(layer.post_attention_layernorm(h))
    return model.lm_head(inner.norm(h))[:, -1]


def static_decode_step(model, rotary, tokens: torch.Tensor, positions: torch.Tensor,
                       t: torch.Tensor, cur: int, valid: torch.Tensor, keys: list[torch.Tensor],
                       values: list[torch.Tensor], cos_table: torch.Tensor,
                       sin_table: torch.Tensor) -> torch.Tensor:
    """:meth:`LeanDecoder.step` over preallocated tensors, for ``torch.compile``.

    ``tokens`` ``[B]`` go in at cache index ``t`` (a 0-d tensor) and ``positions`` ``[B]``;
    attention runs over the first ``cur`` (= ``t + 1``) cache slots under ``valid``. Compiled
    with dynamic shapes, ``cur`` is a symbolic size, so one graph serves every step and no step
    reads the unwritten tail of the cache (which on a long decode would double the key/value
    memory traffic). ``keys``/``values``/``valid`` are updated in place. The same modules in
    the same order as the model's forward; ``rotary`` is the architecture's
    ``apply_rotary_pos_emb``. Returns next-token logits ``[B, V]``.
    """
    at = t.view(1)
    valid.index_fill_(1, at, True)
    h = model.model.embed_tokens(tokens[:, None])

    def cache_kv(i: int, k: torch.Tensor, v: torch.Tensor):
        keys[i].index_copy_(2, at, k)
        values[i].index_copy_(2, at, v)
        return keys[i][:, :, :cur], values[i][:, :, :cur]

    return _decode(model, h, cos_table[positions][:, None], sin_table[positions][:, None],
                   rotary, valid[:, None, None, :cur], cache_kv)


#: whether ``scaled_dot_product_attention`` takes ``enable_gqa`` (torch ≥ 2.5)
_SDPA_GQA = "enable_gqa" in (F.scaled_dot_product_attention.__doc__ or "")

#: fused weights are a copy; above this many bytes of copies (large models, where a decode step
#: is arithmetic rather than per-op overhead and fusing saves little) the modules are called
FUSE_MAX_BYTES = 256 * 2**20


class FusedLayer:
    """One decoder layer's weights for :func:`_fused_decode`: q/k/v in one matrix, gate/up in
    one matrix (copies, made per decode: sampling never runs while the weights change), the
    norms' weights and epsilons, and the attention geometry."""

    def __init__(self, layer) -> None:
        attn, mlp = layer.self_attn, layer.mlp
        self.qkv_w = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
        biases = [attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]
        self.qkv_b = None if biases[0] is None else torch.cat(biases)
        self.n_q = attn.q_proj.out_features // attn.head_dim
        self.n_kv = attn.k_proj.out_features // attn.head_dim
        self.head_dim, self.scaling = attn.head_dim, attn.scaling
        self.o_w, self.o_b = attn.o_proj.weight, attn.o_proj.bias
        self.qk_norms = (_norm(attn.q_norm), _norm(attn.k_norm)) if hasattr(attn, "q_norm") \
            else None
        self.norm1, self.norm2 = _norm(layer.input_layernorm), _norm(layer.post_attention_layernorm)
        self.inter = mlp.gate_proj.out_features
        self.gu_w = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])
        self.gu_b = None if mlp.gate_proj.bias is None else \
            torch.cat([mlp.gate_proj.bias, mlp.up_proj.bias])
        self.down_w, self.down_b = mlp.down_proj.weight, mlp.down_proj.bias
        self.act = F.silu if isinstance(mlp.act_fn, torch.nn.SiLU) else mlp.act_fn

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.qkv_w, self.gu_w))


def _norm(module) -> tuple[torch.Tensor, float]:
    """An RMSNorm's ``(weight, eps)`` (raises AttributeError for another kind of norm)."""
    return module.weight, float(module.variance_epsilon)


def fuse_layers(model) -> list[FusedLayer] | None:
    """:class:`FusedLayer` per decoder layer, or ``None`` where the layers are not the plain
    pre-norm RMSNorm / gated-MLP shape of :data:`SUPPORTED` or the copies would exceed
    :data:`FUSE_MAX_BYTES`. What the fused step computes is checked against the model's own
    modules on each decode's first step (:meth:`LeanDecoder.step`)."""
    if not hasattr(F, "rms_norm"):  # torch < 2.4
        return None
    layers = model.model.layers[: model.config.num_hidden_layers]
    try:
        with torch.no_grad():
            fused = []
            for layer in layers:
                fused.append(FusedLayer(layer))
                if sum(f.nbytes for f in fused) > FUSE_MAX_BYTES:
                    return None
    except AttributeError:  # another norm, MLP or projection layout
        return None
    return fused


def _rms(x: torch.Tensor, norm: tuple[torch.Tensor, float]) -> torch.Tensor:
    """The Llama-family RMSNorm (fp32 statistics, the weight applied in the input dtype) in
    one fused ``rms_norm`` call."""
    weight, eps = norm
    if x.dtype == torch.float32:
        return weight * F.rms_norm(x, x.shape[-1:], eps=eps)
    return weight * F.rms_norm(x.float(), x.shape[-1:], eps=eps).to(x.dtype)


def _fused_decode(model, fused: list[FusedLayer], h: torch.Tensor, cos: torch.Tensor,
                  sin: torch.Tensor, mask: torch.Tensor | None, cache_kv) -> torch.Tensor:
    """:func:`_decode` with fewer, larger ops (what an eager decode step of a small model pays
    for): one q/k/v projection, one rotation of queries and keys together, one gate/up
    projection, RMSNorm as one ``rms_norm`` call, grouped heads inside the attention kernel."""
    B = h.shape[0]
    cos, sin = cos[:, None], sin[:, None]  # [B, 1, 1, head_dim] against [B, heads, 1, head_dim]
    for i, f in enumerate(fused):
        x = _rms(h, f.norm1)
        qkv = F.linear(x, f.qkv_w, f.qkv_b).view(B, 1, -1, f.head_dim).transpose(1, 2)
        n_qk = f.n_q + f.n_kv
        if f.qk_norms is not None:  # qwen3: per-head RMSNorm of queries and keys
            qk = torch.cat([_rms(qkv[:, :f.n_q], f.qk_norms[0]),
                            _rms(qkv[:, f.n_q:n_qk], f.qk_norms[1])], 1)
        else:
            qk = qkv[:, :n_qk]
        half = f.head_dim // 2
        qk = qk * cos + torch.cat([-qk[..., half:], qk[..., :half]], -1) * sin
        keys, values = cache_kv(i, qk[:, f.n_q:], qkv[:, n_qk:])
        if f.n_q != f.n_kv and not _SDPA_GQA:
            keys = keys.repeat_interleave(f.n_q // f.n_kv, dim=1)
            values = values.repeat_interleave(f.n_q // f.n_kv, dim=1)
        gqa = {"enable_gqa": True} if f.n_q != f.n_kv and _SDPA_GQA else {}
        o = F.scaled_dot_product_attention(qk[:, :f.n_q], keys, values, attn_mask=mask,
                                           scale=f.scaling, **gqa)
        h = h + F.linear(o.transpose(1, 2).reshape(B, 1, -1), f.o_w, f.o_b)
        gate, up = F.linear(_rms(h, f.norm2), f.gu_w, f.gu_b).split(f.inter, -1)
        h = h + F.linear(f.act(gate) * up, f.down_w, f.down_b)
    return model.lm_head(_rms(h, _norm(model.model.norm)))[:, -1]
