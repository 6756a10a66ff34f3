"""``opd-diag train | coldstart | select-prompts``: thin wrappers over the library.

Every :class:`TrainConfig` field is also a flag (``--lr``, ``--objective``, ``--eval-every`` …),
generated from the dataclass so the CLI can never drift from the config.
"""

from __future__ import annotations

import argparse
from dataclasses import fields

from ..core.errors import OpdDiagError
from ..train.config import PRESETS, TrainConfig

_TYPES = {"int": int, "float": float, "str": str, "int | None": int, "float | None": float}


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("train config (override --preset and --config)")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if str(f.type) == "bool":
            g.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                           help=f.metadata["help"])
        else:
            g.add_argument(flag, dest=f.name, type=_TYPES[str(f.type)], default=None,
                           help=f"{f.metadata['help']} (default {f.default})")


def _add_models(p: argparse.ArgumentParser) -> None:
    p.add_argument("--student", required=True, help="local HF model directory of the student")
    p.add_argument("--teacher", required=True, help="local HF model directory of the teacher")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="run modelling code shipped in the model directories (off by default)")


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="on-policy distillation with per-step trajectories, metrics and checkpoints",
        description="Sample → capture → loss → step → log. Writes a run directory with the "
        "offline-capture schema (rollouts/states with a step column), metrics.jsonl and "
        "checkpoints/. --resume RUN continues exactly from the last checkpoint.")
    _add_models(p)
    p.add_argument("--prompts", required=True, help="training prompt file ('prompt' column)")
    p.add_argument("--eval-prompts", help="held-out prompts with 'answer' (optional 'subset')")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--preset", choices=sorted(PRESETS), help="start from a preset")
    p.add_argument("--config", help="YAML or JSON file of config fields")
    p.add_argument("--resume", action="store_true", help="continue --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    _add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "coldstart", help="SFT the student on filtered teacher rollouts (off-policy cold start)",
        description="The teacher answers each prompt; rollouts that are truncated, have no final "
        "answer, repeat lines/blocks, or (with answers) are wrong are dropped; the student is "
        "fine-tuned on the rest (completion-only loss) and saved as a new model directory.")
    _add_models(p)
    p.add_argument("--prompts", required=True, help="prompt file (answers enable the wrong-answer filter)")
    p.add_argument("--out", required=True, help="new student model directory")
    p.add_argument("--n-samples", type=int, default=1, help="teacher rollouts per prompt")
    p.add_argument("--temperature", type=float, default=0.7, help="teacher sampling temperature")
    p.add_argument("--top-p", type=float, default=0.95, help="teacher nucleus mass")
    p.add_argument("--max-new-tokens", type=int, default=256, help="teacher completion budget")
    p.add_argument("--checker", default="auto", help="answer checker (see opd_diag.tasks.verify)")
    p.add_argument("--epochs", type=int, default=2, help="SFT epochs")
    p.add_argument("--lr", type=float, default=1e-4, help="SFT learning rate")
    p.add_argument("--batch-size", type=int, default=16, help="SFT sequences per step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--raw-prompt", action="store_true", help="do not use the chat template")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=cmd_coldstart)

    p = sub.add_parser(
        "select-prompts", help="rank a prompt pool by step-0 alignment with the teacher",
        description="A quick capture on every prompt (and every --template); prompts are ranked "
        "by per-prompt top-k overlap (or reverse KL) at the student's own states.")
    _add_models(p)
    p.add_argument("--prompts", required=True, help="prompt pool")
    p.add_argument("--out", required=True, help="selected prompt file (.jsonl)")
    p.add_argument("--by", default="overlap_ratio",
                   choices=["overlap_ratio", "overlap_mass_t", "overlap_mass_s", "rkl"],
                   help="ranking score (rkl: lower is better; the others: higher)")
    p.add_argument("--keep", type=float, default=0.5,
                   help="fraction (≤ 1) or number (> 1) of prompts to keep")
    p.add_argument("--template", action="append", default=None,
                   help="prompt template with {prompt}, e.g. the teacher's '{prompt} Please reason "
                   "step by step, and put your final answer within \\boxed{{}}.'; repeat to compare")
    p.add_argument("--n-samples", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--top-k", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--raw-prompt", action="store_true")
    p.set_defaults(func=cmd_select_prompts)


def _pair(args, cfg: TrainConfig | None = None):
    from ..core.models import load_pair

    return load_pair(args.student, args.teacher,
                     student_dtype=cfg.dtype if cfg else "float32",
                     teacher_dtype=cfg.teacher_dtype if cfg else "float32",
                     student_device=cfg.device if cfg else "cpu",
                     teacher_device=cfg.teacher_device if cfg else "cpu",
                     trust_remote_code=args.trust_remote_code)


def cmd_train(args) -> int:
    from ..core.prompts import load_prompts
    from ..train.config import resolve_config
    from ..train.evaluate import load_eval_prompts
    from ..train.loop import init_distributed, train

    overrides = {f.name: getattr(args, f.name) for f in fields(TrainConfig)}
    cfg = resolve_config(args.preset, args.config, overrides)
    init_distributed(cfg.device)  # under torchrun: before loading, so "cuda" is this rank's GPU
    prompts = load_prompts(args.prompts)
    evals = load_eval_prompts(args.eval_prompts) if args.eval_prompts else None
    if cfg.eval_every and evals is None:
        raise OpdDiagError("--eval-every > 0 needs --eval-prompts FILE (prompts with answers)")
    out = train(_pair(args, cfg), prompts, args.out, cfg, eval_prompts=evals, resume=args.resume,
                overwrite=args.overwrite, progress=not args.quiet,
                extra_meta={"prompts_file": str(args.prompts),
                            "eval_prompts_file": args.eval_prompts})
    print(f"wrote {out}")
    return 0


def cmd_coldstart(args) -> int:
    from ..core.prompts import load_prompts
    from ..train.recovery import ColdStartConfig, coldstart

    cfg = ColdStartConfig(n_samples=args.n_samples, temperature=args.temperature,
                          top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                          checker=args.checker, epochs=args.epochs, lr=args.lr,
                          batch_size=args.batch_size, seed=args.seed, raw_prompt=args.raw_prompt)
    report = coldstart(_pair(args), load_prompts(args.prompts), args.out, cfg,
                       overwrite=args.overwrite)
    print(f"kept {report['n_kept']} of {report['n_rollouts']} teacher rollouts "
          f"(dropped: {report['dropped']}); SFT loss {report['sft_loss_first']:.4f} → "
          f"{report['sft_loss_last']:.4f}; wrote {args.out}")
    return 0


def cmd_select_prompts(args) -> int:
    from ..core.prompts import load_prompts
    from ..train.recovery import select_prompts

    ranked = select_prompts(_pair(args), load_prompts(args.prompts), args.out, by=args.by,
                            keep=args.keep, templates=args.template, n_samples=args.n_samples,
                            max_new_tokens=args.max_new_tokens, top_k=args.top_k,
                            seed=args.seed, raw_prompt=args.raw_prompt)
    print(ranked.attrs.get("template_summary", ""))
    print(f"selected {int(ranked.selected.sum())} of {len(ranked)} prompts → {args.out}")
    return 0
