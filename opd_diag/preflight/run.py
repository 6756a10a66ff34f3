"""Pre-flight orchestration: capture, the generations the probes need, the probes, the verdict.

The decision itself is pure and lives in :mod:`.rules`; the budgets in :mod:`.budgets`.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from ..core.errors import OpdDiagError
from ..core.models import LoadedModel, Pair
from ..core.runs import Run, RunWriter, load_run, write_json
from ..probes import run_probe
from ..probes.novelty import first_stage_outcomes, frontier_prompts
from ..states import distributed
from ..states import generations as extra
from ..states.capture import CaptureConfig
from ..states.collect import Verifier, run_capture
from ..states.rollout import SamplingConfig
from .budgets import PreflightConfig
from .rules import EXIT_CODES, Verdict, decide, overall


def run_preflight(
    pair: Pair,
    prompts: pd.DataFrame,
    out: str | Path,
    *,
    config: PreflightConfig | None = None,
    verifier: Verifier | None = None,
    references: dict[str, LoadedModel] | None = None,
    teacher_prompts: list[str] | None = None,
    raw_prompt: bool = False,
    progress: bool = False,
) -> Verdict:
    """Capture, generate what the probes need, run them, decide. Writes a run directory."""
    cfg = config or PreflightConfig()
    t0 = time.perf_counter()
    stages: dict[str, float] = {}  # wall seconds per stage, written to verdict.json

    @contextmanager
    def stage(name: str):
        start = time.perf_counter()
        yield
        stages[name] = round(stages.get(name, 0.0) + time.perf_counter() - start, 3)

    prompts = prompts.head(cfg.n_prompts).reset_index(drop=True)
    if teacher_prompts is not None:
        teacher_prompts = list(teacher_prompts)[: cfg.n_prompts]
    sampling = SamplingConfig(n_samples=cfg.n_samples, temperature=cfg.temperature,
                              max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                              seed=cfg.seed, raw_prompt=raw_prompt)
    capture = CaptureConfig(top_k=cfg.top_k)
    out = Path(out)
    with stage("student_capture"):
        run_capture(pair, prompts, out, sampling=sampling, capture=capture, overwrite=True,
                    progress=progress, verifier=verifier,
                    extra_meta={"kind_detail": "preflight", "preflight": asdict(cfg)})
    has_answers = verifier is not None and prompts["answer"].notna().any()
    if has_answers:  # a capture with the roles swapped: data-parallel like the first one
        t_prompts = prompts if teacher_prompts is None else prompts.assign(prompt=teacher_prompts)
        with stage("teacher_capture"):
            extra.teacher_rollouts(pair, t_prompts, out, sampling, capture, verifier)
    ctx = distributed.context()
    if not ctx.is_main:
        # Under torchrun both captures are data-parallel; the small generations below and the
        # probes run on rank 0 while the other ranks wait, then every rank returns the verdict.
        distributed.barrier(ctx)
        return _read_verdict(out)
    run = load_run(out)
    different_template = teacher_prompts is not None or (
        not raw_prompt and getattr(pair.teacher.tokenizer, "chat_template", None)
        != getattr(pair.student.tokenizer, "chat_template", None))
    if different_template:
        with stage("template_check"):
            extra.template_check(pair, run, teacher_prompts, raw_prompt)
    if has_answers:
        with stage("continuations"):
            extra.continuations(pair, run, depths=cfg.depths, n_continue=cfg.n_continue,
                                max_rollouts=cfg.max_continuation_rollouts, verifier=verifier,
                                sampling=sampling, batch_size=cfg.batch_size)
        with stage("frontier_samples"):
            first, same = first_stage_outcomes(run)
            if len(first) == 0:
                raise OpdDiagError("frontier samples need prompts with answers (an 'answer' "
                                   "column) and a verifier")
            extra.frontier_samples(pair, run, frontier_prompts(first, same),
                                   n_samples=cfg.n_frontier, verifier=verifier,
                                   sampling=sampling, batch_size=cfg.batch_size,
                                   max_total=cfg.max_frontier_samples)
    if references:
        with stage("reference_scores"):
            extra.reference_scores(pair, run, references)
    run = load_run(out)
    with stage("probes"):
        tables = {name: run_probe(name, run) for name in ("overlap", "thinking", "reachability",
                                                           "horizon", "token_level")}
        novelty = run_probe("novelty", run) if has_answers or references else None
    table = decide(tables["thinking"], tables["reachability"], novelty, tables["horizon"],
                   cfg.thresholds, cfg.max_new_tokens)
    verdict = overall(table)
    seconds = time.perf_counter() - t0
    RunWriter(run.path, run.meta).write_probe("verdict", table.assign(verdict=verdict))
    write_json(out / "verdict.json", {"verdict": verdict, "exit_code": EXIT_CODES[verdict],
                                      "seconds": seconds, "stage_seconds": stages,
                                      "thresholds": asdict(cfg.thresholds),
                                      "conditions": table.to_dict(orient="records")})
    if ctx.active:
        distributed.barrier(ctx)
    return Verdict(verdict, table, out, seconds)


def _read_verdict(out: Path) -> Verdict:
    import json

    data = json.loads((out / "verdict.json").read_text())
    return Verdict(data["verdict"], pd.DataFrame(data["conditions"]), out, data["seconds"])


def load_verdict(run: Run) -> pd.DataFrame:
    """The verdict table of a pre-flight run."""
    return run.probe("verdict")
