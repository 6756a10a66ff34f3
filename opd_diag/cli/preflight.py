"""``opd-diag preflight``: the verdict before spending GPU-days (thin layer over preflight.py)."""

from __future__ import annotations

import argparse

from ..core.errors import OpdDiagError
from .common import (
    HELP,
    add_backend_args,
    add_model_device_args,
    add_out_args,
    add_top_k_arg,
    backend_from_args,
    check_out,
    print_plan,
    show_plan,
)


def register(sub) -> None:
    p = sub.add_parser(
        "preflight", help="run the probes on a budget and print GO / CAUTION / NO-GO",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Capture the student's rollouts, generate what the probes need (teacher "
        "rollouts, teacher/student continuations from student prefixes, fresh samples of both "
        "models on the student's frontier — the prompts whose first samples were not all alike, "
        "for the novelty score — reference scores, the template check), run every probe and "
        "decide.\n\nExit code: 0 GO, 3 CAUTION, 4 NO-GO (2 for bad input), so it can gate a "
        "training script. Every condition is printed (answer checking, thinking "
        "compatibility, template alignment, reachability, teacher novelty, distinct teacher, "
        "horizon, truncation; 'not checked' with the reason when its evidence is missing), then "
        "'VERDICT: NO-GO because: X, Y', the expected effect and, on thin evidence, 'low "
        "confidence: raise --budget'; recovery only under failing rows. verdict.json in --out "
        "has the conditions, the frozen thresholds (version, provenance), the answer-extraction "
        "check and the seconds each stage took. See docs/preflight.md and docs/validation.md.",
    )
    src = p.add_argument_group("what to check (a zoo pair, or your own models)")
    src.add_argument("--pair", help="a zoo pair name (see `opd-diag zoo list`)")
    src.add_argument("--student", help=HELP["student"])
    src.add_argument("--teacher", help=HELP["teacher"])
    src.add_argument("--prompts", help="prompt file ('prompt', optional 'answer', optional "
                     "'teacher_prompt': the prompt as the teacher expects it)")
    src.add_argument("--reference", action="append", default=[], metavar="DIR",
                     help="reference model (e.g. the student's base, a same-pipeline model); "
                     "repeatable. Enables the 'distinct teacher' condition (not checked "
                     "without one)")
    src.add_argument("--checker", default=None,
                     help="answer checker: auto | boxed | hash | answer | regex:PAT | task:NAME | "
                     "module:function (default auto; zoo pairs use their task). If it parses an "
                     "answer from < 50%% of the student's rollouts the pre-flight stops (exit 2) "
                     "and names the checkers that would")
    src.add_argument("--teacher-template", default=None,
                     help="how the teacher expects prompts, a format string with {prompt} "
                     "(default: the teacher's chat template when it differs from the student's)")
    b = p.add_argument_group("budget")
    b.add_argument("--budget", choices=["small", "default", "large"], default="default",
                   help="small: 16 prompts x 2 samples, 8 more per model on frontier prompts; "
                   "default: 64 x 4, 16 more; large: 128 x 8, 32 more")
    b.add_argument("--n-prompts", type=int, help="override the budget's prompt count")
    b.add_argument("--n-samples", type=int, help="override the budget's samples per prompt")
    b.add_argument("--n-frontier", type=int,
                   help="override the budget's second-stage samples per model on each frontier "
                   "prompt (prompts whose first samples were not all alike; the novelty score)")
    b.add_argument("--max-new-tokens", type=int, default=None,
                   help="completion budget (default: the zoo pair's, else the student's "
                   "generation_config max_new_tokens; required when neither is set). When more "
                   "than 10%% of either model's rollouts are cut off by it mid-text, the verdict is CAUTION "
                   "(rollouts looping to the cap are reported, not counted)")
    add_top_k_arg(b)
    b.add_argument("--seed", type=int, default=0, help=HELP["seed"])
    m = p.add_argument_group("devices and dtypes")
    m.add_argument("--device", default="cpu",
                   help="device of every model (cpu | cuda | cuda:N | auto; default cpu); "
                   "--student-device / --teacher-device override it per model")
    m.add_argument("--dtype", default="float32",
                   help="dtype of every model (float32 | bfloat16 | float16; default float32); "
                   "--student-dtype / --teacher-dtype override it per model")
    add_model_device_args(m, dtype_default=None, device_default=None)
    m.add_argument("--trust-remote-code", action="store_true", help=HELP["trust-remote-code"])
    p.add_argument("--raw-prompt", action="store_true", help=HELP["raw-prompt"])
    add_out_args(p, resume=False, what="run directory to write")
    add_backend_args(p)
    p.set_defaults(func=cmd_preflight)


def _teacher_prompt_column(prompts, args) -> list[str] | None:
    """The prompt file's optional ``teacher_prompt`` column: each prompt as the teacher expects
    it (complete, or absent)."""
    if "teacher_prompt" not in prompts:
        return None
    if args.teacher_template:
        raise OpdDiagError(f"{args.prompts} has a 'teacher_prompt' column and --teacher-template "
                           "was given: use one of them")
    col = prompts["teacher_prompt"]
    bad = [i + 1 for i, v in enumerate(col) if not isinstance(v, str) or not v.strip()]
    if bad:
        raise OpdDiagError(f"{args.prompts}: 'teacher_prompt' is missing or empty in rows "
                           f"{bad[:10]}{' ...' if len(bad) > 10 else ''}; give it for every row "
                           "or drop the column")
    return list(col)


def _pair_inputs(args):
    from ..preflight import BUDGETS
    from ..zoo import get_pair, get_spec, model_dir

    zp = get_pair(args.pair)
    # n <= 0 still makes one prompt here, so that PreflightConfig reports the bad flag
    n = BUDGETS[args.budget]["n_prompts"] if args.n_prompts is None else max(args.n_prompts, 1)
    prompts = zp.prompts(n)
    own = get_spec(zp.teacher).templates
    teacher_prompts = None if zp.template in own else list(zp.prompts(n, template=own[0]).prompt)
    refs = list(dict.fromkeys([str(model_dir(r)) for r in zp.references] + list(args.reference)))
    return (model_dir(zp.student), model_dir(zp.teacher), prompts, teacher_prompts, refs,
            args.checker or f"task:{zp.task}", args.max_new_tokens or zp.hyper.max_new_tokens)


def cmd_preflight(args) -> int:
    from ..core.models import load_model, load_pair, resolve_max_new_tokens
    from ..core.prompts import load_prompts, validate_prompts
    from ..preflight import PreflightConfig, run_preflight
    from ..tasks.verify import make_verifier

    backend = backend_from_args(args)  # before loading anything: vllm without vLLM -> exit 2
    check_out(args)  # a file or a foreign directory as --out: exit 2 before loading models
    if args.pair:
        if args.student or args.teacher or args.prompts:
            raise OpdDiagError("give either --pair or --student/--teacher/--prompts, not both")
        student, teacher, prompts, teacher_prompts, refs, checker, max_new = _pair_inputs(args)
        prompts = validate_prompts(prompts, f"zoo pair {args.pair}")
    else:
        missing = [f"--{n}" for n in ("student", "teacher", "prompts") if not getattr(args, n)]
        if missing:
            raise OpdDiagError(f"preflight needs --pair or all of {missing}")
        student, teacher, refs = args.student, args.teacher, list(args.reference)
        raw = load_prompts(args.prompts)
        prompts = raw
        teacher_prompts = _teacher_prompt_column(prompts, args)
        if args.teacher_template:
            if "{prompt}" not in args.teacher_template:
                raise OpdDiagError("--teacher-template must contain '{prompt}'")
            teacher_prompts = [args.teacher_template.format(prompt=p) for p in prompts.prompt]
        checker, max_new = args.checker or "auto", args.max_new_tokens
    # a flag given as 0 reaches PreflightConfig, which rejects it (None = the budget's value)
    budget = dict(n_prompts=args.n_prompts, n_samples=args.n_samples, n_frontier=args.n_frontier,
                  top_k=args.top_k, seed=args.seed)
    PreflightConfig.budget(args.budget, max_new_tokens=max_new or 1, **budget)  # fails early
    pair = load_pair(student, teacher, student_dtype=args.student_dtype or args.dtype,
                     teacher_dtype=args.teacher_dtype or args.dtype,
                     student_device=args.student_device or args.device,
                     teacher_device=args.teacher_device or args.device,
                     trust_remote_code=args.trust_remote_code)
    cfg = PreflightConfig.budget(args.budget, max_new_tokens=resolve_max_new_tokens(
        max_new, pair.student), **budget)
    references = {str(r): load_model(r, role="reference", dtype=args.dtype, device=args.device,
                                     trust_remote_code=args.trust_remote_code)
                  for r in refs}
    verifier = make_verifier(checker).check
    from ..states.backend import use_backend

    with use_backend(backend):
        plan = None
        if show_plan(args):
            from ..preflight.plan import plan_preflight

            plan = plan_preflight(pair, prompts, cfg, has_answers=verifier is not None,
                                  references=references, teacher_prompts=teacher_prompts,
                                  raw_prompt=args.raw_prompt)
            print_plan(plan, args)
        if args.dry_run:
            return 0
        verdict = run_preflight(pair, prompts, args.out, config=cfg, verifier=verifier,
                                references=references, teacher_prompts=teacher_prompts,
                                raw_prompt=args.raw_prompt, progress=not args.quiet,
                                overwrite=args.overwrite)
    if plan is not None:
        import json
        import sys

        from ..states.cost import compare

        stages = json.loads((verdict.run / "verdict.json").read_text())["stage_seconds"]
        print("seconds per stage (verdict.json stage_seconds):\n" + compare(plan, stages),
              file=sys.stderr)
    print(verdict.render())
    return verdict.exit_code
