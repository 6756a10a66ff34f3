"""A served teacher's top-k from an OpenAI-compatible ``/v1/completions`` endpoint (vLLM,
SGLang, hosted), for the sparse teacher mode (:mod:`opd_diag.states.sparse`).

One request per rollout scores the student's tokens under the teacher without sampling from it:
the prompt is the rollout's token ids (prompt + completion), ``echo: true`` returns the prompt
positions too (vLLM computes them as ``prompt_logprobs``), ``logprobs: K`` returns the top-K at
each position, and ``return_tokens_as_token_ids: true`` (vLLM; or start the server with
``--return-tokens-as-token-ids``) names tokens as ``"token_id:1234"`` instead of text, so ids are
exact. :func:`request_body` builds that request; :func:`parse_completion` reads the response's
``choices[i].logprobs`` — the legacy completions format:

``tokens`` (one string per position), ``token_logprobs`` (the log-prob of each position's own
token; ``null`` for the first prompt token, which nothing predicts), ``top_logprobs`` (per
position a ``{token: logprob}`` dict of the top-K — vLLM adds the position's own token when it is
not among them, so a dict may hold K + 1 entries — ``null`` first) and ``text_offset``.

Log-probs are the server's (vLLM: of the raw, temperature-1 logits), so capture a sparse
teacher at temperature 1. Tokens must name ids: a response with text tokens is resolved through
the tokenizer's vocabulary only when every token is a vocabulary entry, else it is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..core.errors import OpdDiagError
from ..states.sparse import TeacherTopK

_ID_PREFIX = "token_id:"


def request_body(model: str, prompt_ids: list[int], completion_ids: list[int], k: int) -> dict:
    """The ``/v1/completions`` request that scores one rollout under the served teacher."""
    return {"model": model, "prompt": [int(t) for t in [*prompt_ids, *completion_ids]],
            "echo": True, "logprobs": int(k), "max_tokens": 1, "temperature": 1.0,
            "return_tokens_as_token_ids": True}


def _token_id(tok: str, tokenizer, where: str) -> int:
    if tok.startswith(_ID_PREFIX):
        try:
            return int(tok[len(_ID_PREFIX):])
        except ValueError:
            raise OpdDiagError(f"{where}: malformed token {tok!r}") from None
    if tokenizer is not None:
        vocab = tokenizer.get_vocab()
        if tok in vocab:
            return int(vocab[tok])
    raise OpdDiagError(f"{where}: token {tok!r} is text, not an id; send "
                       "'return_tokens_as_token_ids': true (vLLM) or start the server with "
                       "--return-tokens-as-token-ids")


def parse_completion(response: dict, prompt_ids: list[int], completion_ids: list[int], *,
                     k: int, choice: int = 0, tokenizer=None) -> TeacherTopK:
    """The teacher's view of one rollout's completion positions from a completions response.

    Position ``j`` of the completion is predicted by the distribution at echoed position
    ``len(prompt) + j``, whose own token must be ``completion_ids[j]`` (checked).
    """
    where = f"completions response choice {choice}"
    try:
        lp = response["choices"][choice]["logprobs"]
        tokens, token_lp, top = lp["tokens"], lp["token_logprobs"], lp["top_logprobs"]
    except (KeyError, IndexError, TypeError):
        raise OpdDiagError(f"{where}: no choices[{choice}].logprobs with tokens / token_logprobs "
                           "/ top_logprobs; request 'echo': true and 'logprobs': K") from None
    P, T = len(prompt_ids), len(completion_ids)
    if P == 0:
        raise OpdDiagError(f"{where}: the prompt has no tokens")
    if len(tokens) < P + T or len(top) < P + T or len(token_lp) < P + T:
        raise OpdDiagError(f"{where}: {len(tokens)} echoed positions, the rollout has {P + T}; "
                           "was 'echo': true sent with the prompt and completion token ids?")
    ids = np.empty((T, k), np.int64)
    vals = np.empty((T, k), np.float32)
    own = np.empty(T, np.float32)
    for j in range(T):
        i = P + j
        tok = _token_id(tokens[i], tokenizer, f"{where}, position {i}")
        if tok != int(completion_ids[j]):
            raise OpdDiagError(f"{where}, position {i}: echoed token {tok} is not the rollout's "
                               f"token {completion_ids[j]} (same tokenizer? prompt sent as ids?)")
        if token_lp[i] is None or top[i] is None:
            raise OpdDiagError(f"{where}, position {i}: log-probs are null")
        entries = sorted(((_token_id(t, tokenizer, f"{where}, position {i}"), float(v))
                          for t, v in top[i].items()), key=lambda e: -e[1])
        if len(entries) < k:
            raise OpdDiagError(f"{where}, position {i}: {len(entries)} top log-probs, need "
                               f"{k}; raise 'logprobs' (and the server's --max-logprobs)")
        ids[j] = [e[0] for e in entries[:k]]
        vals[j] = [e[1] for e in entries[:k]]
        own[j] = float(token_lp[i])
    return TeacherTopK(ids, vals, own)


def teacher_topk(responses: list[dict], prompt_ids: list[list[int]],
                 completion_ids: list[list[int]], *, k: int, tokenizer=None) -> TeacherTopK:
    """One :class:`TeacherTopK` for a batch (one response per rollout, in rollout order), ready
    for :func:`opd_diag.states.sparse.score_states_topk_only`."""
    if len(responses) != len(prompt_ids):
        raise OpdDiagError(f"{len(responses)} responses for {len(prompt_ids)} rollouts")
    parts = [parse_completion(r, p, c, k=k, tokenizer=tokenizer)
             for r, p, c in zip(responses, prompt_ids, completion_ids, strict=True)]
    return TeacherTopK(np.concatenate([x.ids for x in parts]),
                       np.concatenate([x.logp for x in parts]),
                       np.concatenate([x.logp_token for x in parts]))


def load_response(path: str | Path) -> dict:
    """A recorded response (JSON file)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise OpdDiagError(f"cannot read completions response {path}: {exc}") from exc


def fetch(base_url: str, body: dict, *, api_key: str | None = None, timeout: float = 600.0
          ) -> dict:
    """POST ``body`` to ``{base_url}/completions`` (``base_url`` ends in ``/v1``)."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(base_url.rstrip("/") + "/completions",
                                 data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {api_key}"}
                                             if api_key else {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, OSError, json.JSONDecodeError) as exc:
        raise OpdDiagError(f"teacher endpoint {base_url}: {exc}") from exc
