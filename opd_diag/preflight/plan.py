"""The pre-flight's plan (``opd-diag preflight --dry-run``): the work of every stage of
:func:`opd_diag.preflight.run.run_preflight`, memory per device and a measured time estimate
(the cost model is :mod:`opd_diag.states.cost`)."""

from __future__ import annotations

import pandas as pd

from ..core.models import LoadedModel, Pair
from ..states.backend import current_backend
from ..states.collect import render_prompts
from ..states.cost import (
    Plan,
    chunk_for,
    finish_plan,
    mean_prompt_len,
    pair_shapes,
    preflight_stages,
)
from ..states.rollout import SamplingConfig
from .budgets import PreflightConfig


def plan_preflight(pair: Pair, prompts: pd.DataFrame, config: PreflightConfig | None = None, *,
                   has_answers: bool = True, references: dict[str, LoadedModel] | None = None,
                   teacher_prompts: list[str] | None = None, raw_prompt: bool = False,
                   measure_probe: bool = True) -> Plan:
    """What :func:`run_preflight` with these arguments will do, without doing it."""
    cfg = config or PreflightConfig()
    prompts = prompts.head(cfg.n_prompts).reset_index(drop=True)
    sampling = SamplingConfig(n_samples=cfg.n_samples, max_new_tokens=cfg.max_new_tokens,
                              batch_size=cfg.batch_size, raw_prompt=raw_prompt)
    rendered = render_prompts(pair, prompts, sampling)
    answers = has_answers and "answer" in prompts and prompts["answer"].notna().any()
    template = teacher_prompts is not None or (
        not raw_prompt and getattr(pair.teacher.tokenizer, "chat_template", None)
        != getattr(pair.student.tokenizer, "chat_template", None))
    stages = preflight_stages(
        n_prompts=len(prompts), n_samples=cfg.n_samples, prompt_len=mean_prompt_len(rendered),
        max_new=cfg.max_new_tokens, batch_size=cfg.batch_size, n_depths=len(cfg.depths),
        n_continue=cfg.n_continue, max_continuation=cfg.max_continuation_rollouts,
        n_frontier=cfg.n_frontier, max_frontier=cfg.max_frontier_samples,
        has_answers=bool(answers), n_references=len(references or {}),
        template_check=bool(template))
    plan = Plan("preflight", pair_shapes(pair, references), stages, cfg.top_k,
                chunk_for(pair.compare_vocab, None), backend=current_backend().name)
    plan.notes.append("frontier samples counted as if every prompt were on the frontier")
    return finish_plan(plan, pair, measure_probe=measure_probe)
