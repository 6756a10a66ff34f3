"""Recovery recipes for a pair that OPD will not teach (paper §5), usable before ``train``.

* :func:`coldstart` — off-policy cold start: the teacher answers the prompts, degenerate and
  wrong rollouts are filtered exactly as thunlp/OPD's ``scripts/infer/vllm_rollout.py`` does
  (truncated, no final answer, a ≥20-char line repeated ≥5 times, a 100-char n-gram repeated
  ≥3 times at stride 10, a 50-char block repeated ≥3 times in a row in texts over 5,000 chars),
  plus wrong answers when the prompts carry answers; the student is fine-tuned on the rest with
  a completion-only loss and written as a new model directory with a card.
* :func:`select_prompts` — teacher-aligned prompt selection: a quick capture at the student's
  own states ranks every prompt (and every candidate template) by step-0 overlap with the
  teacher, and the best are written as a prompt file.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..core.errors import OpdDiagError
from ..core.models import Pair
from ..core.quiet import hf_progress_bars_off
from ..core.runs import check_out_dir
from ..probes.overlap import state_metrics
from ..states.backend import accepts_backend, current_backend
from ..states.capture import CaptureConfig
from ..states.collect import capture_rollouts, generate_rollouts, render_prompts
from ..states.rollout import SamplingConfig, eos_token_ids, row_seed
from ..tasks.verify import make_verifier


def is_repetitive(text: str) -> bool:
    """thunlp/OPD's degenerate-repetition filter (see the module docstring)."""
    lines = Counter(line.strip() for line in text.splitlines() if len(line.strip()) >= 20)
    if lines and max(lines.values()) >= 5:
        return True
    grams = Counter(text[i: i + 100] for i in range(0, max(0, len(text) - 99), 10))
    if grams and max(grams.values()) >= 3:
        return True
    if len(text) > 5000:
        for i in range(len(text) - 150):
            block = text[i: i + 50]
            if text[i + 50: i + 100] == block and text[i + 100: i + 150] == block:
                return True
    return False


@dataclass
class ColdStartConfig:
    """Teacher sampling (paper App. C.1: T 0.7, top-p 0.95) and SFT settings."""

    n_samples: int = 1
    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 256
    checker: str = "auto"
    epochs: int = 2
    lr: float = 1e-4
    batch_size: int = 16
    gen_batch_size: int = 64
    seed: int = 0
    raw_prompt: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.gen_batch_size < 1:
            raise OpdDiagError("coldstart: epochs and batch sizes must be ≥ 1")
        if self.lr <= 0:
            raise OpdDiagError(f"coldstart: lr must be positive, got {self.lr}")
        SamplingConfig(n_samples=self.n_samples, temperature=self.temperature,
                       top_p=self.top_p, max_new_tokens=self.max_new_tokens)


def teacher_rollouts(pair: Pair, prompts: pd.DataFrame, cfg: ColdStartConfig) -> pd.DataFrame:
    """Teacher completions with a ``drop_reason`` (None = kept) per rollout."""
    sampling = SamplingConfig(n_samples=cfg.n_samples, temperature=cfg.temperature,
                              top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                              seed=cfg.seed, raw_prompt=cfg.raw_prompt)
    verifier = make_verifier(cfg.checker)
    prompts = render_prompts(pair, prompts, sampling)
    tok, teacher = pair.tokenizer, pair.teacher.model
    rows = [(r, s) for r in range(len(prompts)) for s in range(cfg.n_samples)]
    outs = []
    for lo in range(0, len(rows), cfg.gen_batch_size):
        batch = rows[lo: lo + cfg.gen_batch_size]
        outs += current_backend().sample(  # --backend hf|vllm
            teacher, [prompts.input_ids.iat[r] for r, _ in batch],
            [row_seed(cfg.seed, int(prompts.prompt_id.iat[r]), s) for r, s in batch],
            sampling, eos_ids=eos_token_ids(teacher, tok), pad_id=tok.pad_token_id,
            vocab_limit=pair.compare_vocab)
    records = []
    for (r, s), (ids, stop) in zip(rows, outs, strict=True):
        text, answer = tok.decode(ids, skip_special_tokens=True), prompts.answer.iat[r]
        drop = ("truncated" if stop == "length"
                else "no_answer" if verifier.extract is not None and verifier.extract(text) is None
                else "repetition" if is_repetitive(text)
                else "wrong" if answer is not None and not verifier.check(text, answer)
                else None)
        records.append({"prompt_id": int(prompts.prompt_id.iat[r]), "sample_idx": s,
                        "prompt_ids": prompts.input_ids.iat[r], "completion_ids": ids,
                        "completion": text, "drop_reason": drop})
    return pd.DataFrame(records)


def sft(model, examples: pd.DataFrame, cfg: ColdStartConfig, pad_id: int) -> list[float]:
    """Completion-only SFT (cross-entropy on completion tokens, token-mean per batch)."""
    from ..states.capture import final_hidden, lm_head_logits

    torch.manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    dev, losses = next(model.parameters()).device, []
    for epoch in range(cfg.epochs):
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(examples))
        for lo in range(0, len(order), cfg.batch_size):
            batch = examples.iloc[order[lo: lo + cfg.batch_size]]
            seqs = [list(p) + list(c) for p, c in zip(batch.prompt_ids, batch.completion_ids,
                                                      strict=True)]
            L = max(map(len, seqs))
            ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
            mask, labels = torch.zeros_like(ids), torch.full_like(ids, -100)
            for b, (s, p) in enumerate(zip(seqs, batch.prompt_ids, strict=True)):
                ids[b, : len(s)], mask[b, : len(s)] = torch.tensor(s), 1
                labels[b, len(p): len(s)] = torch.tensor(s[len(p):])
            h = final_hidden(model, ids.to(dev), mask.to(dev))[:, :-1]
            target = labels[:, 1:].to(dev)
            keep = target != -100
            logits = lm_head_logits(model, h[keep]).float()
            loss = torch.nn.functional.cross_entropy(logits, target[keep])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(float(loss.detach()))
    return losses


@accepts_backend  # backend= "hf" | "vllm" | an object: samples the teacher rollouts
def coldstart(pair: Pair, prompts: pd.DataFrame, out: str | Path, cfg: ColdStartConfig,
              *, overwrite: bool = False) -> dict:
    """Filter teacher rollouts, SFT the student on them, write a new student directory.

    ``backend`` (``"hf"`` / ``"vllm"`` / an object) samples the teacher rollouts.

    The directory holds the model (safetensors), the tokenizer, ``coldstart.json`` (the card:
    counts, filters, settings, losses), ``coldstart_data.jsonl`` (the kept examples) and
    ``README.md``. It is written to a temp dir and renamed, so a failure leaves nothing.
    """
    out = Path(out)
    # the output-dir rule (core/runs.py): missing, empty, or a coldstart model (replaced only
    # with --overwrite); any other directory is never touched
    check_out_dir(out, overwrite=overwrite, marker="coldstart.json", what="coldstart model")
    rollouts = teacher_rollouts(pair, prompts, cfg)
    kept = rollouts[rollouts.drop_reason.isna()]
    dropped = {k: int(v) for k, v in rollouts.drop_reason.value_counts().items()}
    if len(kept) == 0:
        raise OpdDiagError(f"coldstart: no teacher rollout survived the filters ({dropped}); "
                           "raise --max-new-tokens, check --checker, or use more prompts")
    losses = sft(pair.student.model, kept, cfg, pair.tokenizer.pad_token_id)
    report = {"kind": "coldstart", "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "student": pair.student.path, "teacher": pair.teacher.path, "config": asdict(cfg),
              "n_prompts": len(prompts), "n_rollouts": len(rollouts), "n_kept": len(kept),
              "dropped": dropped, "sft_steps": len(losses), "sft_loss_first": losses[0],
              "sft_loss_last": losses[-1], "sft_losses": losses}
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with hf_progress_bars_off():
            pair.student.model.save_pretrained(str(tmp), safe_serialization=True)
        pair.tokenizer.save_pretrained(str(tmp))
        (tmp / "coldstart.json").write_text(json.dumps(report, indent=2))
        kept[["prompt_id", "sample_idx", "completion"]].to_json(
            tmp / "coldstart_data.jsonl", orient="records", lines=True)
        (tmp / "README.md").write_text(_card(report))
        if out.exists():  # checked again: the directory may have changed during the SFT
            check_out_dir(out, overwrite=overwrite, marker="coldstart.json",
                          what="coldstart model")
            shutil.rmtree(out)
        os.replace(tmp, out)
    except OpdDiagError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OpdDiagError(f"cannot write {out}: {exc} (disk full?)") from exc
    return report


def _card(r: dict) -> str:
    c = r["config"]
    return (f"# Cold-start student (opd-diag coldstart)\n\n"
            f"- base student: `{r['student']}`\n- teacher: `{r['teacher']}`\n"
            f"- teacher rollouts: {r['n_rollouts']} on {r['n_prompts']} prompts "
            f"(T={c['temperature']}, top-p={c['top_p']}, max {c['max_new_tokens']} tokens)\n"
            f"- kept {r['n_kept']}; dropped {r['dropped']} (truncated, no final answer, "
            f"repetition, wrong answer — thunlp/OPD's filters)\n"
            f"- SFT: completion-only cross-entropy, {c['epochs']} epochs, lr {c['lr']}, batch "
            f"{c['batch_size']}, {r['sft_steps']} steps, loss {r['sft_loss_first']:.4f} → "
            f"{r['sft_loss_last']:.4f}\n")


def select_prompts(pair: Pair, prompts: pd.DataFrame, out: str | Path, *, by: str = "overlap_ratio",
                   keep: float = 0.5, templates: list[str] | None = None, n_samples: int = 2,
                   max_new_tokens: int = 64, top_k: int = 16, seed: int = 0,
                   raw_prompt: bool = False) -> pd.DataFrame:
    """Rank prompts (under the best template) by step-0 alignment; write the selected ones.

    Each template is a string where ``{prompt}`` is replaced by the prompt text. The template
    with the best mean score wins (the teacher's own template usually does: paper §5.2);
    prompts are then ranked under it and the top ``keep`` (fraction ≤ 1, or a count) kept.
    Returns the full ranking (``selected`` column); ``attrs['template_summary']`` compares
    the templates.
    """
    templates = templates or ["{prompt}"]
    if any("{prompt}" not in t for t in templates):
        raise OpdDiagError("every --template must contain {prompt}")
    lower_better = by == "rkl"
    sampling = SamplingConfig(n_samples=n_samples, max_new_tokens=max_new_tokens, seed=seed,
                              raw_prompt=raw_prompt)
    capture = CaptureConfig(top_k=min(top_k, pair.compare_vocab))
    frames = []
    for i, template in enumerate(templates):
        variant = prompts.assign(prompt=[template.replace("{prompt}", p) for p in prompts.prompt])
        frames.append(_score_prompts(pair, variant, sampling, capture).assign(template=template,
                                                                             template_idx=i))
    scores = pd.concat(frames, ignore_index=True)
    summary = scores.groupby("template_idx")[[by]].mean()
    best = int(summary[by].idxmin() if lower_better else summary[by].idxmax())
    ranked = scores[scores.template_idx == best].sort_values(by, ascending=lower_better)
    n_keep = int(round(keep * len(ranked))) if keep <= 1 else int(keep)
    if n_keep < 1:
        raise OpdDiagError(f"--keep {keep} selects no prompt out of {len(ranked)}")
    ranked = ranked.assign(rank=np.arange(1, len(ranked) + 1), selected=lambda d: d["rank"] <= n_keep)
    cols = ["prompt", "answer", "prompt_id", by, "overlap_ratio", "overlap_mass_t", "rkl", "template"]
    cols = list(dict.fromkeys(cols))
    _write_jsonl_atomic(Path(out), ranked[ranked.selected][cols])
    ranked.attrs["template_summary"] = "\n".join(
        f"template {i} ({by} = {summary[by].iat[i]:.4f}){' <- best' if i == best else ''}: "
        f"{templates[i]!r}" for i in range(len(templates)))
    return ranked.reset_index(drop=True)


def _score_prompts(pair: Pair, prompts: pd.DataFrame, sampling: SamplingConfig,
                   capture: CaptureConfig) -> pd.DataFrame:
    """Per-prompt step-0 metrics from a quick capture (mean over the prompt's states)."""
    rendered = render_prompts(pair, prompts, sampling)
    rows = [(r, s) for r in range(len(rendered)) for s in range(sampling.n_samples)]
    per_state = []
    for lo in range(0, len(rows), sampling.batch_size):
        rollouts = generate_rollouts(pair, rendered, rows[lo: lo + sampling.batch_size], sampling)
        table = capture_rollouts(pair, rendered, rollouts, capture, sampling.temperature)
        if table is not None:
            m = state_metrics(table.to_pandas())
            m["prompt_id"] = m.rollout_id.map(dict(zip(rollouts.rollout_id, rollouts.prompt_id,
                                                       strict=True)))
            per_state.append(m)
    if not per_state:
        raise OpdDiagError("select-prompts: every student completion was empty")
    metrics = pd.concat(per_state).groupby("prompt_id")[
        ["overlap_ratio", "overlap_mass_s", "overlap_mass_t", "rkl", "entropy_gap"]].mean()
    return prompts.merge(metrics.reset_index(), on="prompt_id", how="inner")


def _write_jsonl_atomic(path: Path, df: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        df.to_json(tmp, orient="records", lines=True, force_ascii=False)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OpdDiagError(f"cannot write {path}: {exc}") from exc
