"""Generations some probes need beyond the student's rollouts, written as tables of the run.

The capture engine answers "what do both models think at the student's states?". Three probes
also need new samples, produced here with the same rollout/capture code and stored inside the
run so the probes stay pure table functions:

* ``aux/teacher/`` — the teacher's own rollouts on the same prompts, scored by both models (a
  capture with the roles swapped: inside it, ``_s`` columns are the *teacher*). Feeds the
  structural-signature and cross-likelihood parts of the thinking probe and the exclusive-solve
  part of the novelty probe.
* ``continuations.parquet/`` — student rollouts truncated at several depths and continued by
  the teacher and by the student (the paper's teacher-continuation probe, §6.1).
* ``frontier.parquet/`` — a second stage of fresh samples from the prompt by both models, on
  the student's *frontier*: the prompts whose first-stage samples were not all alike (the
  novelty probe's main estimate; see :func:`frontier_samples`).
* ``references.parquet/`` — on the student's states, the teacher and each reference model
  (e.g. the student's own base, a same-pipeline model) scored side by side.
* ``template.parquet/`` — the teacher's first completion tokens under its own prompt rendering
  vs the rendering the run uses (template / first-token mismatch).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..core.divergences import kl
from ..core.errors import OpdDiagError
from ..core.models import LoadedModel, Pair
from ..core.runs import Run, RunWriter
from .backend import current_backend
from .capture import CaptureConfig, score_states
from .collect import Verifier, run_capture
from .rollout import SamplingConfig, render_prompt, row_seed


def teacher_rollouts(pair: Pair, prompts: pd.DataFrame, run_dir: Path, sampling: SamplingConfig,
                     capture: CaptureConfig, verifier: Verifier | None = None,
                     progress: bool = False) -> None:
    """Capture the teacher's own rollouts (scored by both models) into ``run_dir/aux/teacher``.

    Under torchrun every rank must call this (it is a data-parallel capture)."""
    swapped = Pair(student=pair.teacher, teacher=pair.student)
    out = Path(run_dir) / "aux" / "teacher"
    run_capture(swapped, prompts, out, sampling=sampling, capture=capture, overwrite=True,
                progress=progress, verifier=verifier, extra_meta={"role_note": (
                    "roles swapped: _s columns are the teacher (the sampler), _t the student")})


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def _sample(pair: Pair, model: LoadedModel, ids: list[list[int]], seeds: list[int],
            sampling: SamplingConfig, batch_size: int, desc: str = "",
            progress: bool = False) -> list[tuple[list[int], str]]:
    """The active backend's sampler over rows in batches of ``batch_size``: one (completion, stop) per row."""
    tok, outs = pair.tokenizer, []
    starts = range(0, len(ids), batch_size)
    for lo in tqdm(starts, desc=desc, unit="batch", disable=not progress, leave=False):
        outs += current_backend().sample(model.model, ids[lo: lo + batch_size],
                                         seeds[lo: lo + batch_size], sampling,
                                         pad_id=tok.pad_token_id,
                                         eos_ids=pair.stop_token_ids,
                                         vocab_limit=pair.compare_vocab)
    return outs


def continuations(pair: Pair, run: Run, *, depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75),
                  n_continue: int = 2, max_rollouts: int = 32, verifier: Verifier,
                  sampling: SamplingConfig, batch_size: int = 16,
                  progress: bool = False) -> pd.DataFrame:
    """Truncate student rollouts at each depth; teacher and student each continue them.

    Rollouts the student got wrong come first (up to ``max_rollouts``): the question is whether
    the teacher can fix the student's failures from the student's own prefixes.

    Returns one row per (rollout, depth, continuer, sample) with ``correct`` and writes it to
    ``continuations.parquet``. Depth is a fraction of the rollout's own length; ``prefix_len``
    is the absolute number of student tokens kept.
    """
    prompts = run.prompts.set_index("prompt_id")
    roll = run.rollouts
    roll = roll[roll.prompt_id.map(prompts["answer"]).notna()]
    if len(roll) == 0:
        raise OpdDiagError("continuations need prompts with answers (an 'answer' column)")
    # The student's failures first: novelty that OPD can transfer is the teacher fixing what the
    # student gets wrong, from the student's own prefixes (then the rest, in id order).
    failed = roll.correct.eq(False).fillna(False).astype(bool)
    roll = roll.assign(_failed=failed).sort_values(["_failed", "rollout_id"],
                                                   ascending=[False, True]).head(max_rollouts)
    jobs = []  # (rollout row, depth, prefix_len, continuer, sample)
    for _, r in roll.iterrows():
        content = [t for t in r.completion_ids][: max(0, r.n_tokens - (r.stop_reason == "eos"))]
        for depth in depths:
            k = int(depth * len(content))
            for who in ("teacher", "student"):
                for s in range(n_continue):
                    jobs.append((r, depth, content[:k], who, s))
    rows = []
    tok = pair.tokenizer
    for who, model in (("teacher", pair.teacher), ("student", pair.student)):
        mine = [j for j in jobs if j[3] == who]
        ids = [list(prompts.at[j[0].prompt_id, "input_ids"]) + list(j[2]) for j in mine]
        seeds = [_seed(sampling.seed, zlib.crc32(j[0].rollout_id.encode()), int(j[1] * 1000), j[4])
                 for j in mine]
        outs = _sample(pair, model, ids, seeds, sampling, batch_size,
                       desc=f"continuations ({who})", progress=progress)
        for (r, depth, prefix, _, s), (cont, reason) in zip(mine, outs, strict=True):
            text = tok.decode(list(prefix) + cont, skip_special_tokens=True)
            answer = prompts.at[r.prompt_id, "answer"]
            rows.append(dict(rollout_id=r.rollout_id, prompt_id=r.prompt_id, depth=depth,
                             prefix_len=len(prefix), T=int(r.n_tokens), continuer=who,
                             student_failed=bool(r._failed),
                             sample=s, stop_reason=reason, correct=bool(verifier(text, answer))))
    df = pd.DataFrame(rows)
    RunWriter(run.path, run.meta).write_shard("continuations", "00000", df)
    return df


def frontier_samples(pair: Pair, run: Run, frontier: list[int], *, n_samples: int,
                     verifier: Verifier,
                     sampling: SamplingConfig, batch_size: int = 32,
                     max_total: int | None = None, progress: bool = False) -> pd.DataFrame:
    """Second stage of the novelty estimate: ``n_samples`` fresh samples per model from each
    frontier prompt (depth 0, the run's rendering). ``max_total`` caps the samples per model:
    with many frontier prompts each gets ``max(2, max_total // n_frontier)`` instead.

    ``frontier`` are the prompt ids chosen from the first-stage samples only (every frontier
    prompt and a random share of the settled ones: :func:`opd_diag.probes.novelty.
    second_stage_prompts`),
    and the second-stage samples are new draws, so their accuracies are unbiased for those
    prompts (two-phase sampling; re-using the first-stage samples would bias the gap upward,
    since a prompt is selected *because* one model failed there). Teacher and student share a
    seed per (prompt, sample) — common random numbers, which lowers the variance of their
    difference — and the seeds differ from the first stage's.

    Returns one row per (prompt, model, sample) and writes ``frontier.parquet``; a run with no
    frontier prompt gets an empty table with the right columns.
    """
    if n_samples <= 0:
        raise OpdDiagError(f"frontier samples per prompt must be positive, got {n_samples}")
    pids = [int(p) for p in frontier]
    if max_total is not None and pids:
        n_samples = max(2, min(n_samples, max_total // len(pids)))
    prompts = run.prompts.set_index("prompt_id")
    offset = int(run.rollouts.sample_idx.max()) + 1  # stage-2 seeds never repeat a stage-1 seed
    jobs = [(pid, s) for pid in pids for s in range(n_samples)]
    rows = []
    ids = [list(prompts.at[pid, "input_ids"]) for pid, _ in jobs]
    seeds = [row_seed(sampling.seed, pid, offset + s) for pid, s in jobs]
    for who, model in (("teacher", pair.teacher), ("student", pair.student)):
        outs = _sample(pair, model, ids, seeds, sampling, batch_size,
                       desc=f"frontier samples ({who})", progress=progress)
        for (pid, s), (comp, reason) in zip(jobs, outs, strict=True):
            text = pair.tokenizer.decode(comp, skip_special_tokens=True)
            rows.append(dict(prompt_id=pid, model=who, sample=s, n_tokens=len(comp),
                             stop_reason=reason,
                             correct=bool(verifier(text, prompts.at[pid, "answer"]))))
    df = pd.DataFrame(rows, columns=["prompt_id", "model", "sample", "n_tokens", "stop_reason",
                                     "correct"])
    RunWriter(run.path, run.meta).write_shard("frontier", "00000", df)
    return df


def reference_scores(pair: Pair, run: Run, references: dict[str, LoadedModel],
                     max_rollouts: int = 64, batch_size: int = 8,
                     progress: bool = False) -> pd.DataFrame:
    """On the student's states, score the teacher against each reference model.

    Per (reference, state): ``kl_t_ref`` = KL(q ‖ r) exact over the vocabulary, the teacher's
    and the reference's sampled-token rewards ``log q(ŷ) − log p(ŷ)`` and ``log r(ŷ) − log p(ŷ)``.
    Scored at the run's sampling temperature, like the states they are merged with.
    """
    states = run.states
    roll = run.rollouts[run.rollouts.n_tokens > 0].sort_values("rollout_id").head(max_rollouts)
    by_pid = run.prompts.set_index("prompt_id")["input_ids"]
    temperature = float(run.config.get("sampling", {}).get("temperature", 1.0))
    frames = []
    for name, ref in references.items():
        if ref.tokenizer.get_vocab() != pair.tokenizer.get_vocab():
            raise OpdDiagError(f"reference model {name!r} does not share the pair's tokenizer")
        for lo in tqdm(range(0, len(roll), batch_size), desc=f"reference {name}", unit="batch",
                       disable=not progress, leave=False):
            part = roll.iloc[lo: lo + batch_size]
            sc = score_states(pair.teacher.model, ref.model, [list(by_pid[p]) for p in part.prompt_id],
                              [list(c) for c in part.completion_ids], top_k=1,
                              temperature=temperature,  # the states' temperature, not 1
                              vocab=pair.compare_vocab, pad_id=pair.tokenizer.pad_token_id)
            frames.append(pd.DataFrame({
                "reference": name, "rollout_id": part.rollout_id.to_numpy()[sc["row"]],
                "t": sc["t"], "logp_teacher": sc["logp_s"], "logp_ref": sc["logp_t"],
                "kl_t_ref": sc["rkl"], "kl_ref_t": sc["fkl"]}))
    df = pd.concat(frames, ignore_index=True)
    df = df.merge(states[["rollout_id", "t", "logp_s", "rkl"]], on=["rollout_id", "t"], how="left")
    df["reward_teacher"] = df.logp_teacher - df.logp_s
    df["reward_ref"] = df.logp_ref - df.logp_s
    df = df.rename(columns={"rkl": "kl_s_t"})
    RunWriter(run.path, run.meta).write_shard("references", "00000", df)
    return df


@torch.no_grad()
def _first_token_logp(model: LoadedModel, prompt_ids: list[list[int]], comp: list[list[int]],
                      vocab: int) -> torch.Tensor:
    """Log-probs ``[N, m, V]`` at the first ``m`` completion positions, one rollout at a time."""
    out = []
    for p, c in zip(prompt_ids, comp, strict=True):
        ids = torch.tensor([list(p) + list(c)], device=model.device)
        logits = model.model(ids).logits[0, len(p) - 1: len(p) - 1 + len(c), :vocab].float()
        out.append(torch.log_softmax(logits, -1).cpu())
    return torch.stack(out)


def template_check(pair: Pair, run: Run, teacher_prompts: list[str] | None, raw: bool,
                   first_m: int = 4, max_rollouts: int = 32) -> pd.DataFrame:
    """Teacher's next-token distributions over the first completion tokens under its own prompt
    rendering vs the run's; one row per rollout with the mean KL and top-1 agreement.

    ``teacher_prompts``: the prompts as the teacher expects them (e.g. its training template); by
    default the prompt text rendered through the *teacher's* chat template.
    """
    prompts = run.prompts.sort_values("prompt_id")
    roll = run.rollouts[run.rollouts.n_tokens >= 1].sort_values("rollout_id").head(max_rollouts)
    if teacher_prompts is None:
        teacher_ids = [render_prompt(pair.teacher.tokenizer, p, raw)[1] for p in prompts.prompt]
    else:
        teacher_ids = [pair.tokenizer(p)["input_ids"] for p in teacher_prompts]
    tmap = dict(zip(prompts.prompt_id, teacher_ids, strict=True))
    rmap = dict(zip(prompts.prompt_id, prompts.input_ids, strict=True))
    rows = []
    for _, r in roll.iterrows():
        comp = list(r.completion_ids)[:first_m]
        a = _first_token_logp(pair.teacher, [tmap[r.prompt_id]], [comp], pair.compare_vocab)[0]
        b = _first_token_logp(pair.teacher, [list(rmap[r.prompt_id])], [comp], pair.compare_vocab)[0]
        rows.append(dict(rollout_id=r.rollout_id, prompt_id=r.prompt_id, m=len(comp),
                         kl_own_vs_run=float(kl(a, b).mean()),
                         top1_agreement=float((a.argmax(-1) == b.argmax(-1)).float().mean()),
                         same_rendering=list(tmap[r.prompt_id]) == list(rmap[r.prompt_id])))
    df = pd.DataFrame(rows)
    RunWriter(run.path, run.meta).write_shard("template", "00000", df)
    return df


def aux_path(run: Run, name: str) -> Path:
    return run.path / "aux" / name
