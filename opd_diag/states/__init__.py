"""Student-visited states: everything that runs a model to produce the tables probes read.

- :mod:`.rollout`: sampling (prompt rendering, per-row seeds, the HF sampler); :mod:`.vllm` the
  optional vLLM sampler; :mod:`.backend` the ``--backend hf|vllm`` switch every sampler uses.
- :mod:`.cost`: the cost model behind ``--dry-run`` (work, memory, a measured time estimate).
- :mod:`.sparse`: capture with a teacher known only by its top-K (``--teacher-topk-only``).
- :mod:`.capture`: scoring both models at every visited state (chunked LM head, top-k lists,
  exact full-vocabulary statistics).
- :mod:`.collect`: rollout + capture into a run directory (``run_capture``), resumable.
- :mod:`.generations`: the extra generations some probes need (teacher rollouts, continuations
  from student prefixes, frontier samples, reference scores, the template check).
- :mod:`.distributed`: data-parallel sharding of prompts under torchrun.

May import ``core`` and ``tasks``; never ``probes``, ``preflight``, ``train``, ``report`` or ``cli``.
"""
