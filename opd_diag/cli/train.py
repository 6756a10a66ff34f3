"""``opd-diag train | coldstart | select-prompts``: thin wrappers over the library.

Every :class:`TrainConfig` field is also a flag (``--lr``, ``--objective``, ``--eval-every`` …),
generated from the dataclass so the CLI can never drift from the config.
"""

from __future__ import annotations

import argparse
from dataclasses import fields

from ..core.errors import OpdDiagError
from ..train.config import PRESETS, TrainConfig
from .common import (
    HELP,
    add_backend_args,
    add_model_device_args,
    add_out_args,
    add_top_k_arg,
    backend_from_args,
    check_out,
    finite_float,
    print_plan,
    show_plan,
)

_TYPES = {"int": int, "float": finite_float(), "str": str, "int | None": int,
          "float | None": finite_float()}
# config fields whose flag is not --<field-name>: one meaning per flag across subcommands
# (--top-k is the captured list size everywhere; --student-* name the student's device/dtype)
_FLAGS = {"top_k": ["--loss-top-k"], "device": ["--student-device", "--device"],
          "dtype": ["--student-dtype", "--dtype"]}


class _MovedFlag(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is {self.const} in train (--top-k means the captured "
                     "top-k list size in every subcommand; here that is --capture-top-k)")


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("train config (override --preset and --config)")
    for f in fields(TrainConfig):
        flags = _FLAGS.get(f.name, ["--" + f.name.replace("_", "-")])
        if str(f.type) == "bool":
            g.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction,
                           default=None, help=f"{f.metadata['help']} (default {f.default})")
        else:
            g.add_argument(*flags, dest=f.name, type=_TYPES[str(f.type)], default=None,
                           help=f"{f.metadata['help']} (default {f.default})")
    g.add_argument("--top-k", action=_MovedFlag, const="--loss-top-k", metavar="K",
                   help="not a train flag: the objective's support is --loss-top-k, the "
                   "captured list size --capture-top-k")


def _add_models(p: argparse.ArgumentParser, devices: bool = False) -> None:
    g = p.add_argument_group("models")
    g.add_argument("--student", required=True, help=HELP["student"])
    g.add_argument("--teacher", required=True, help=HELP["teacher"])
    if devices:  # train takes them from its config flags (--student-device, ...)
        add_model_device_args(g)
    g.add_argument("--trust-remote-code", action="store_true", help=HELP["trust-remote-code"])


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="on-policy distillation with per-step trajectories, metrics and checkpoints",
        description="Sample → capture → loss → step → log. Writes a run directory with the "
        "offline-capture schema (rollouts/states with a step column), metrics.jsonl and "
        "checkpoints/. --resume RUN continues exactly from the last checkpoint.")
    _add_models(p)
    p.add_argument("--prompts", required=True, help="training prompt file ('prompt' column)")
    p.add_argument("--eval-prompts", help="held-out prompts with 'answer' (optional 'subset')")
    add_out_args(p, resume=True)
    p.add_argument("--preset", choices=sorted(PRESETS), help="start from a preset")
    p.add_argument("--config", help="YAML or JSON file of config fields")
    add_backend_args(p)  # vllm: the student's weights are synced into its engine every step
    _add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "coldstart", help="SFT the student on filtered teacher rollouts (off-policy cold start)",
        description="The teacher answers each prompt; rollouts that are truncated, have no final "
        "answer, repeat lines/blocks, or (with answers) are wrong are dropped; the student is "
        "fine-tuned on the rest (completion-only loss) and saved as a new model directory.")
    _add_models(p, devices=True)
    p.add_argument("--prompts", required=True, help="prompt file (answers enable the wrong-answer filter)")
    p.add_argument("--out", required=True,
                   help="new student model directory: missing, empty, or an earlier coldstart "
                   "output (replaced only with --overwrite)")
    p.add_argument("--n-samples", type=int, default=1, help="teacher rollouts per prompt (default 1)")
    p.add_argument("--temperature", type=finite_float(0), default=0.7,
                   help="teacher sampling temperature, >= 0 (default 0.7)")
    p.add_argument("--top-p", type=finite_float(0, 1, lo_open=True), default=0.95,
                   help="teacher nucleus mass in (0, 1] (default 0.95)")
    p.add_argument("--max-new-tokens", type=int, default=256,
                   help="teacher completion budget (default 256)")
    p.add_argument("--checker", default="auto",
                   help="answer checker (see opd_diag.tasks.verify; default auto)")
    p.add_argument("--epochs", type=int, default=2, help="SFT epochs (default 2)")
    p.add_argument("--lr", type=finite_float(), default=1e-4,
                   help="SFT learning rate, > 0 (default 1e-4)")
    p.add_argument("--batch-size", type=int, default=16, help="SFT sequences per step (default 16)")
    p.add_argument("--seed", type=int, default=0, help=HELP["seed"])
    p.add_argument("--raw-prompt", action="store_true", help=HELP["raw-prompt"])
    p.add_argument("--overwrite", action="store_true", help=HELP["overwrite"])
    add_backend_args(p, dry_run=False)
    p.set_defaults(func=cmd_coldstart)

    p = sub.add_parser(
        "select-prompts", help="rank a prompt pool by step-0 alignment with the teacher",
        description="A quick capture on every prompt (and every --template); prompts are ranked "
        "by per-prompt top-k overlap (or reverse KL) at the student's own states.")
    _add_models(p, devices=True)
    p.add_argument("--prompts", required=True, help="prompt pool")
    p.add_argument("--out", required=True, help="selected prompt file (.jsonl)")
    p.add_argument("--by", default="overlap_ratio",
                   choices=["overlap_ratio", "overlap_mass_t", "overlap_mass_s", "rkl"],
                   help="ranking score (rkl: lower is better; the others: higher; default "
                   "overlap_ratio)")
    p.add_argument("--keep", type=finite_float(0, lo_open=True), default=0.5,
                   help="fraction (≤ 1) or number (> 1) of prompts to keep (default 0.5)")
    p.add_argument("--template", action="append", default=None,
                   help="prompt template with {prompt}, e.g. the teacher's '{prompt} Please reason "
                   "step by step, and put your final answer within \\boxed{{}}.'; repeat to compare")
    p.add_argument("--n-samples", type=int, default=2,
                   help="student completions per prompt (default 2)")
    p.add_argument("--max-new-tokens", type=int, default=64,
                   help="completion budget (default 64)")
    add_top_k_arg(p)
    p.add_argument("--seed", type=int, default=0, help=HELP["seed"])
    p.add_argument("--raw-prompt", action="store_true", help=HELP["raw-prompt"])
    p.set_defaults(func=cmd_select_prompts)


def _pair(args, cfg: TrainConfig | None = None):
    from ..core.models import load_pair

    # train: the student is loaded in float32 (the master weights); cfg.dtype is the autocast
    return load_pair(args.student, args.teacher,
                     student_dtype="float32" if cfg else args.student_dtype,
                     teacher_dtype=cfg.teacher_dtype if cfg else args.teacher_dtype,
                     student_device=cfg.device if cfg else args.student_device,
                     teacher_device=cfg.teacher_device if cfg else args.teacher_device,
                     trust_remote_code=args.trust_remote_code)


def cmd_train(args) -> int:
    import sys
    import time

    from ..core.prompts import load_prompts
    from ..states.backend import use_backend
    from ..states.cost import plan_train
    from ..train.config import resolve_config
    from ..train.evaluate import load_eval_prompts
    from ..train.loop import init_distributed, train

    overrides = {f.name: getattr(args, f.name) for f in fields(TrainConfig)}
    cfg = resolve_config(args.preset, args.config, overrides)
    backend = backend_from_args(args)  # before loading anything: vllm without vLLM -> exit 2
    check_out(args)  # a file or a foreign directory as --out: exit 2 before loading models
    init_distributed(cfg.device)  # under torchrun: before loading, so "cuda" is this rank's GPU
    prompts = load_prompts(args.prompts)
    evals = load_eval_prompts(args.eval_prompts) if args.eval_prompts else None
    if cfg.eval_every and evals is None:
        raise OpdDiagError("--eval-every > 0 needs --eval-prompts FILE (prompts with answers)")
    pair = _pair(args, cfg)
    cfg = cfg.with_budget(pair.student)  # --max-new-tokens, else the generation config's, else exit 2
    with use_backend(backend):
        plan = None
        if show_plan(args):
            plan = plan_train(pair, prompts, cfg)
            print_plan(plan, args)
        if args.dry_run:
            return 0
        t0 = time.perf_counter()
        out = train(pair, prompts, args.out, cfg, eval_prompts=evals, resume=args.resume,
                    overwrite=args.overwrite, progress=not args.quiet,
                    extra_meta={"prompts_file": str(args.prompts),
                                "eval_prompts_file": args.eval_prompts})
    if plan is not None:
        est = plan.total_seconds()
        print(f"train took {time.perf_counter() - t0:.1f} s (estimated "
              f"{'?' if est is None else f'{est:.1f}'} s; per-step seconds per phase are in "
              "metrics.jsonl: time_*)", file=sys.stderr)
    print(f"wrote {out}")
    return 0


def cmd_coldstart(args) -> int:
    from ..core.prompts import load_prompts
    from ..train.recovery import ColdStartConfig, coldstart

    cfg = ColdStartConfig(n_samples=args.n_samples, temperature=args.temperature,
                          top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                          checker=args.checker, epochs=args.epochs, lr=args.lr,
                          batch_size=args.batch_size, seed=args.seed, raw_prompt=args.raw_prompt)
    backend = backend_from_args(args)
    check_out(args, marker="coldstart.json", what="coldstart model")
    report = coldstart(_pair(args), load_prompts(args.prompts), args.out, cfg,
                       overwrite=args.overwrite, backend=backend)
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
