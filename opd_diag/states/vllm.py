"""Optional vLLM backend: student rollouts and prompt log-probs through vLLM (``pip install
'opd-diag[vllm]'``). Nothing here is imported unless called; without vLLM every entry point
raises an :class:`OpdDiagError` that says how to install it.

Context: generation dominates capture cost for long reasoning traces, and vLLM is much faster at
it than HF ``generate``. Scoring is a prefill, cheap in either engine, but the states table needs
*full-vocabulary* quantities (entropies, exact KLs, each model's log-prob on the other's top-k).
vLLM returns only the top-``n`` log-probs per position, so :func:`score_states_vllm` asks for
``prompt_logprobs = vocab`` and is exact only when the whole vocabulary comes back — practical for
small vocabularies (the zoo: ~330 tokens), not for 150k-token models, where it refuses. The
recommended split for real models is therefore **vLLM for rollouts, HF
(:func:`opd_diag.states.capture.score_states`) for states**: :func:`generate_rollouts_vllm` returns the
same rollouts frame as :func:`opd_diag.states.collect.generate_rollouts`, and
:func:`opd_diag.states.collect.capture_rollouts` scores it.

Reproducibility: each row gets ``SamplingParams(seed=row_seed(seed + step, prompt_id, sample))``,
so rows are independent of batching and sharding, as in the HF sampler. The package routes all
sampling through :mod:`.backend` (``--backend vllm`` uses :func:`sample_rows` and, in training,
:func:`sync_weights`) — but the two samplers use
different random streams, so their completions differ; only scoring is compared across engines.
vLLM returns raw (temperature-1) prompt log-probs; we divide by the temperature and renormalise
over ``[0, vocab)``, which equals ``log_softmax(logits[:vocab] / T)`` exactly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..core.errors import OpdDiagError
from ..core.topk import topk_rows
from .rollout import SamplingConfig, row_seed

MAX_FULL_VOCAB = 8192  # above this, full-vocabulary prompt log-probs are too slow in vLLM


def available() -> bool:
    """Whether vLLM can be imported."""
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


def _vllm():
    try:
        import vllm
    except ImportError:
        raise OpdDiagError("the vLLM backend needs vLLM: pip install 'opd-diag[vllm]' "
                           "(GPU only); the HF backend needs nothing extra") from None
    return vllm


def require() -> None:
    """Raise the install hint unless vLLM imports and a CUDA GPU is visible."""
    _vllm()
    if not torch.cuda.is_available():
        raise OpdDiagError("--backend vllm needs a CUDA GPU (none is visible); use --backend hf")


def sample_rows(llm, prompt_ids: list[list[int]], seeds: list[int], cfg: SamplingConfig, *,
                eos_ids: list[int], vocab_limit: int | None = None,
                model_vocab: int | None = None) -> list[tuple[list[int], str]]:
    """:func:`opd_diag.states.rollout.sample_batch`'s contract through vLLM.

    One request per row with the row's own seed; the completion keeps its EOS token (as in the
    HF sampler), ``stop_reason`` is ``"eos"`` or ``"length"``; ids at or above ``vocab_limit``
    are excluded with ``allowed_token_ids`` when the model's head is wider.
    """
    vllm = _vllm()
    eos = set(int(e) for e in eos_ids)
    extra = {}
    if vocab_limit is not None and model_vocab is not None and vocab_limit < model_vocab:
        extra["allowed_token_ids"] = list(range(vocab_limit))
    params = [vllm.SamplingParams(
        n=1, temperature=cfg.temperature, top_p=cfg.top_p, top_k=-1, seed=int(seed),
        max_tokens=cfg.max_new_tokens, stop_token_ids=sorted(eos), skip_special_tokens=True,
        **extra) for seed in seeds]
    inputs = [{"prompt_token_ids": [int(t) for t in p]} for p in prompt_ids]
    outs = llm.generate(inputs, sampling_params=params, use_tqdm=False)
    results = []
    for o in outs:
        out = o.outputs[0]
        ids = [int(t) for t in out.token_ids]
        if out.finish_reason == "stop" and (not ids or ids[-1] not in eos) \
                and out.stop_reason in eos:
            ids.append(int(out.stop_reason))  # keep the EOS token, as the HF sampler does
        results.append((ids, "eos" if ids and ids[-1] in eos else "length"))
    return results


def sync_weights(llm, model) -> None:
    """Load the HF model's current weights into the engine in place (TRL's colocate sync:
    ``model_runner.model.load_weights(state_dict.items())``, then drop the prefix cache)."""
    engine = llm.llm_engine
    executor = getattr(engine, "model_executor", None)
    worker = getattr(executor, "driver_worker", None) if executor is not None else None
    runner = getattr(getattr(worker, "worker", worker), "model_runner", None)
    if runner is None:
        # vLLM V1 keeps the model in a worker process: call load_weights there
        def _load(self, items):
            self.model_runner.model.load_weights(items)
        items = [(k, v.detach().cpu()) for k, v in model.state_dict().items()]
        llm.collective_rpc(_load, args=(items,))
    else:
        runner.model.load_weights(((k, v.detach()) for k, v in model.state_dict().items()))
    if hasattr(llm, "reset_prefix_cache"):
        llm.reset_prefix_cache()


def load_llm(path: str, *, dtype: str = "bfloat16", gpu_memory_utilization: float = 0.4,
             max_logprobs: int = 20, seed: int = 0, **kwargs):
    """A ``vllm.LLM`` for a local model dir. Student and teacher share a GPU: keep the two
    ``gpu_memory_utilization`` values summing below ~0.9."""
    return _vllm().LLM(model=str(path), dtype=dtype, gpu_memory_utilization=gpu_memory_utilization,
                       max_logprobs=max_logprobs, seed=seed, enable_prefix_caching=False, **kwargs)


def generate_rollouts_vllm(llm, tokenizer, prompts: pd.DataFrame, rows: list[tuple[int, int]],
                           sampling: SamplingConfig, step: int = -1) -> pd.DataFrame:
    """The rollouts frame of :func:`opd_diag.states.collect.generate_rollouts`, sampled by vLLM.

    Args:
        llm: the student as a ``vllm.LLM``.
        tokenizer: the student's HF tokenizer (for completion text).
        prompts: a rendered prompt frame (``prompt_id``, ``input_ids``; see ``render_prompts``).
        rows: ``(prompt_row, sample_idx)`` pairs to sample.
        sampling: temperature, top-p, budget and base seed.
        step: training step (−1 offline).
    """
    pids = prompts.prompt_id.to_numpy()
    seeds = [row_seed(sampling.seed + max(step, 0), int(pids[r]), s) for r, s in rows]
    eos = [i for i in (tokenizer.eos_token_id,) if i is not None]
    sampled = sample_rows(llm, [list(prompts.input_ids.iat[r]) for r, _ in rows], seeds,
                          sampling, eos_ids=eos)
    comps = [c for c, _ in sampled]
    return pd.DataFrame({
        "rollout_id": [f"s{step}/p{int(pids[r])}/n{s}" for r, s in rows],  # collect.rollout_id
        "prompt_id": [int(pids[r]) for r, _ in rows],
        "step": step,
        "sample_idx": [s for _, s in rows],
        "completion": [tokenizer.decode(c, skip_special_tokens=True) for c in comps],
        "completion_ids": comps,
        "n_tokens": [len(c) for c in comps],
        "stop_reason": [r for _, r in sampled],
        "correct": pd.array([None] * len(rows), dtype="boolean"),
    })


def completion_logprobs(llm, prompt_ids: list[list[int]], completion_ids: list[list[int]],
                        vocab: int) -> list[torch.Tensor]:
    """Per rollout, a ``[T, vocab]`` tensor of raw log-probs predicting each completion token."""
    vllm = _vllm()
    params = vllm.SamplingParams(max_tokens=1, prompt_logprobs=vocab, temperature=1.0)
    seqs = [{"prompt_token_ids": list(p) + list(c)} for p, c in zip(prompt_ids, completion_ids)]
    outs = llm.generate(seqs, sampling_params=params, use_tqdm=False)
    result = []
    for out, p, c in zip(outs, prompt_ids, completion_ids):
        lp_T_V = torch.full((len(c), vocab), float("-inf"))
        for t in range(len(c)):  # prompt_logprobs[i] is the distribution that predicted token i
            for tok, lp in out.prompt_logprobs[len(p) + t].items():
                if tok < vocab:
                    lp_T_V[t, tok] = lp.logprob
        if not torch.isfinite(lp_T_V).all():
            raise OpdDiagError("vLLM returned fewer than `vocab` prompt log-probs; raise "
                               "max_logprobs or score with the HF backend")
        result.append(lp_T_V)
    return result


def score_states_vllm(student_llm, teacher_llm, prompt_ids: list[list[int]],
                      completion_ids: list[list[int]], *, top_k: int, temperature: float = 1.0,
                      vocab: int) -> dict[str, np.ndarray]:
    """:func:`opd_diag.states.capture.score_states`'s output, from vLLM full-vocabulary prompt log-probs."""
    if vocab > MAX_FULL_VOCAB:
        raise OpdDiagError(f"vLLM scoring needs full-vocabulary log-probs; {vocab} tokens is above "
                           f"{MAX_FULL_VOCAB}: use vLLM for rollouts and HF score_states for states")
    temp = temperature if temperature > 0 else 1.0
    lp = [torch.cat(completion_logprobs(m, prompt_ids, completion_ids, vocab)) / temp
          for m in (student_llm, teacher_llm)]
    ls, lq = (x - torch.logsumexp(x, -1, keepdim=True) for x in lp)
    ps, pq = ls.exp(), lq.exp()
    token = torch.tensor([t for c in completion_ids for t in c])[:, None]
    ks_val, ks_ids = topk_rows(ls, top_k)
    kt_val, kt_ids = topk_rows(lq, top_k)
    cols = {
        "logp_s": ls.gather(1, token)[:, 0], "logp_t": lq.gather(1, token)[:, 0],
        "H_s": -(ps * ls).sum(-1), "H_t": -(pq * lq).sum(-1),
        "rkl": (ps * (ls - lq)).sum(-1).clamp(min=0), "fkl": (pq * (lq - ls)).sum(-1).clamp(min=0),
        "topk_ids_s": ks_ids, "topk_logp_s": ks_val, "logp_t_on_topk_s": lq.gather(1, ks_ids),
        "topk_ids_t": kt_ids, "topk_logp_t": kt_val, "logp_s_on_topk_t": ls.gather(1, kt_ids),
    }
    out = {k: v.numpy().astype(np.int32 if "ids" in k else np.float32) for k, v in cols.items()}
    out["row"] = np.concatenate([np.full(len(c), b) for b, c in enumerate(completion_ids)])
    out["t"] = np.concatenate([np.arange(len(c)) for c in completion_ids]).astype(np.int32)
    out["token"] = token[:, 0].numpy().astype(np.int32)
    return out
