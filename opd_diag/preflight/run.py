"""Pre-flight orchestration: capture, the generations the probes need, the probes, the verdict.

The decision itself is pure and lives in :mod:`.rules`; the budgets in :mod:`.budgets`.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import OpdDiagError
from ..core.models import LoadedModel, Pair
from ..core.runs import Run, RunWriter, claim_out_dir, holds_lock, load_run, write_json
from ..probes import run_probe
from ..probes.novelty import first_stage_outcomes, second_stage_prompts
from ..states import distributed
from ..states import generations as extra
from ..states.backend import accepts_backend
from ..states.capture import CaptureConfig
from ..states.collect import Verifier, run_capture
from ..states.rollout import SamplingConfig
from .budgets import PreflightConfig
from .rules import EXIT_CODES, Verdict, confidence, decide, expected_effect, overall
from .truncation import truncation_row, truncation_summary, verdict_with_truncation


@accepts_backend  # backend= "hf" | "vllm" | an object: how every sample is drawn
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
    overwrite: bool = False,
) -> Verdict:
    """Capture, generate what the probes need, run them, decide. Writes a run directory.

    ``backend`` (``"hf"`` default, ``"vllm"`` or a backend object) samples every rollout,
    continuation and frontier sample; scoring stays the HF capture engine. ``out`` must be
    missing, empty or an opd-diag run; an existing run is replaced only with ``overwrite``, a
    directory that is not a run never (docs/run-directory.md)."""
    if distributed.context().is_main and not holds_lock(out):
        # the output-dir rule (core/runs.py) and the writer lock, held for the whole pre-flight
        with claim_out_dir(out, overwrite=overwrite):
            return run_preflight(pair, prompts, out, config=config, verifier=verifier,
                                 references=references, teacher_prompts=teacher_prompts,
                                 raw_prompt=raw_prompt, progress=progress, overwrite=overwrite)
    cfg = config or PreflightConfig()
    for name, ref in (references or {}).items():
        if Path(ref.path).resolve() == Path(pair.teacher.path).resolve():
            raise OpdDiagError(
                f"reference {name!r} is the teacher itself ({ref.path}): its distance to the "
                "teacher is 0 by construction and the 'distinct teacher' check would say nothing; "
                "pass a model from the teacher's or the student's own pipeline (e.g. the "
                "student's base or a same-recipe sibling) as --reference")
    t0 = time.perf_counter()
    stages: dict[str, float] = {}  # wall seconds per stage, written to verdict.json

    @contextmanager
    def stage(name: str):
        start = time.perf_counter()
        yield
        stages[name] = round(stages.get(name, 0.0) + time.perf_counter() - start, 3)

    # a seeded random sample of the file, not its first n (files are often sorted by source)
    keep = sorted(np.random.default_rng(cfg.seed).permutation(len(prompts))[: cfg.n_prompts])
    prompts = prompts.iloc[keep].reset_index(drop=True)
    if teacher_prompts is not None:
        teacher_prompts = [list(teacher_prompts)[i] for i in keep]
    sampling = SamplingConfig(n_samples=cfg.n_samples, temperature=cfg.temperature,
                              max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                              seed=cfg.seed, raw_prompt=raw_prompt)
    capture = CaptureConfig(top_k=cfg.top_k)
    out = Path(out)
    with stage("student_capture"):
        run_capture(pair, prompts, out, sampling=sampling, capture=capture, overwrite=overwrite,
                    progress=progress, verifier=verifier,
                    extra_meta={"kind_detail": "preflight", "preflight": asdict(cfg)})
    has_answers = verifier is not None and prompts["answer"].notna().any()
    extraction = _check_extraction(out, verifier, cfg) if has_answers else None
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
                                sampling=sampling, batch_size=cfg.batch_size, progress=progress)
        with stage("frontier_samples"):
            first, same = first_stage_outcomes(run)
            if len(first) == 0:
                raise OpdDiagError("frontier samples need prompts with answers (an 'answer' "
                                   "column) and a verifier")
            extra.frontier_samples(pair, run, second_stage_prompts(first, same, seed=cfg.seed),
                                   n_samples=cfg.n_frontier, verifier=verifier,
                                   sampling=sampling, batch_size=cfg.batch_size,
                                   max_total=cfg.max_frontier_samples, progress=progress)
    if references:
        with stage("reference_scores"):
            extra.reference_scores(pair, run, references, progress=progress)
    run = load_run(out)
    with stage("probes"):
        tables = {name: run_probe(name, run) for name in ("overlap", "thinking", "reachability",
                                                           "horizon", "token_level")}
        novelty = run_probe("novelty", run) if has_answers or references else None
    table = decide(tables["thinking"], tables["reachability"], novelty, tables["horizon"],
                   cfg.thresholds, cfg.max_new_tokens, extraction=extraction)
    rolls = {"student": run.rollouts, "teacher": load_run(out / "aux" / "teacher").rollouts
             if has_answers else None}
    trunc = truncation_row(rolls, cfg.max_new_tokens)
    table = pd.concat([table, pd.DataFrame([trunc])], ignore_index=True)
    verdict = verdict_with_truncation(table, overall(table))
    effect = expected_effect(table, novelty)
    conf = confidence(table, novelty, len(prompts), cfg.thresholds)
    seconds = time.perf_counter() - t0
    RunWriter(run.path, run.meta).write_probe("verdict", table.assign(verdict=verdict))
    write_json(out / "verdict.json", {"verdict": verdict, "exit_code": EXIT_CODES[verdict],
                                      "seconds": seconds, "stage_seconds": stages,
                                      "thresholds": asdict(cfg.thresholds),
                                      "expected_effect": effect, "confidence": conf,
                                      "answer_extraction": extraction,
                                      "truncation": truncation_summary(trunc, rolls,
                                                                       cfg.max_new_tokens),
                                      "conditions": table.to_dict(orient="records")})
    if ctx.active:
        distributed.barrier(ctx)
    return Verdict(verdict, table, out, seconds, effect=effect, confidence=conf)


def _check_extraction(out: Path, verifier, cfg: PreflightConfig) -> dict | None:
    """Share of the student's rollouts the checker finds an answer in (issue 16): below
    ``thresholds.min_extracted`` the checker reads the wrong format and every rollout would be
    scored wrong (a confident, wrong NO-GO), so the pre-flight stops (exit 2) naming the checkers
    that would parse them, and removes the half-written run directory."""
    from ..tasks.verify import checkers_that_parse, extraction_report

    extract = getattr(verifier, "extract", None)
    if extract is None:
        return None
    texts = load_run(out).rollouts.completion.fillna("").tolist()
    rep = extraction_report(texts, extract)
    rep["checker"] = getattr(verifier, "spec", "?")
    if rep["share"] < cfg.thresholds.min_extracted:
        import shutil

        shutil.rmtree(out, ignore_errors=True)
        others = checkers_that_parse(texts, cfg.thresholds.min_extracted)
        tails = "; ".join(repr(t[-60:]) for t in texts[:3])
        raise OpdDiagError(
            f"checker {rep['checker']!r} found an answer in only {rep['n_extracted']}/{rep['n']} "
            f"student rollouts (< {cfg.thresholds.min_extracted:.0%}), so every other one would "
            f"be scored wrong. Checkers that parse them: {', '.join(others) or 'none built in'}"
            f" — pass one with --checker (Python: verifier=make_verifier(SPEC).check). Rollout "
            f"ends: {tails}")
    rep["examples"] = [{"completion_end": t, "extracted": a} for t, a in rep["examples"]]
    return rep


def _read_verdict(out: Path) -> Verdict:
    import json

    data = json.loads((out / "verdict.json").read_text())
    return Verdict(data["verdict"], pd.DataFrame(data["conditions"]), out, data["seconds"],
                   effect=data.get("expected_effect", ""), confidence=data.get("confidence", ""))


def load_verdict(run: Run) -> pd.DataFrame:
    """The verdict table of a pre-flight run."""
    return run.probe("verdict")
