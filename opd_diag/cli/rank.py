"""``opd-diag rank-teachers``: one pre-flight per candidate teacher, ordered into ``ranking.csv``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.errors import OpdDiagError
from .common import HELP, add_backend_args, add_model_device_args, backend_from_args


def register(sub) -> None:
    p = sub.add_parser(
        "rank-teachers", help="pre-flight several candidate teachers for one student and rank them",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run one pre-flight per candidate teacher on the same prompts and the same "
        "student rollouts (the student is sampled once), then order the candidates: verdict "
        "first (GO, CAUTION, NO-GO), then the expected gain (the reachable share of the teacher's "
        "signal times the teacher - student accuracy gap on the student's frontier), then the "
        "step-0 overlap ratio. Writes DIR/<teacher>/ (a "
        "pre-flight run each), DIR/ranking.csv (teacher, rank, verdict, expected_gain, each "
        "signal: novelty, overlap, rank-surprisal ratio, every condition) and DIR/report.html.\n\n"
        "Models are local HF directories or, with a zoo pair, zoo model names "
        "(`opd-diag zoo list`).",
    )
    src = p.add_argument_group("what to rank")
    src.add_argument("--student", help="student model directory (or zoo model name)")
    src.add_argument("--teacher", action="append", default=[], metavar="DIR",
                     help="a candidate teacher (directory or zoo model name); repeatable")
    src.add_argument("--name", action="append", default=[], metavar="NAME",
                     help="display name of each --teacher, in order (default: its directory "
                     "name)")
    src.add_argument("--prompts", help="prompt file ('prompt', 'answer')")
    src.add_argument("--pair", help="a zoo pair: its student, prompts, checker and completion "
                     "budget (the teachers still come from --teacher)")
    src.add_argument("--checker", default=None,
                     help="answer checker: auto | boxed | hash | answer | regex:PAT | task:NAME | "
                     "module:function (default auto; zoo pairs use their task)")
    b = p.add_argument_group("budget (per candidate)")
    b.add_argument("--budget", choices=["small", "default", "large"], default="default",
                   help="pre-flight budget of each candidate (see `opd-diag preflight --help`; "
                   "default: default)")
    b.add_argument("--max-new-tokens", type=int, default=None,
                   help="completion budget (required for your own models; zoo: the pair's)")
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
    p.add_argument("--out", required=True,
                   help="directory for the runs, ranking.csv, report.html: missing, empty, or "
                   "one rank-teachers wrote (its runs are replaced only with --overwrite)")
    p.add_argument("--overwrite", action="store_true", help=HELP["overwrite"])
    add_backend_args(p)
    p.set_defaults(func=cmd_rank)

    c = sub.add_parser(
        "rank-check", help="check a teacher ranking against the OPD outcomes measured afterwards",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compare rank-teachers' ranking.csv with per-item outcomes of the students "
        "distilled from (some of) the candidates, pair by pair: the paired 95% bootstrap CI of "
        "the accuracy difference (higher-ranked - lower-ranked, resampling eval items, seeds "
        "averaged per item) says agree (> 0), wrong (< 0) or undetermined (contains 0). The "
        "ranking holds when no pair is wrong and one agrees. Outcomes: CSV or parquet with "
        "columns teacher (the ranking's names), item, correct (0/1) and optionally seed; every "
        "teacher scored on the same items.\n\n"
        "  opd-diag rank-check --ranking runs/rank/ranking.csv --outcomes outcomes.csv",
    )
    c.add_argument("--ranking", required=True, help="rank-teachers' ranking.csv (or its directory)")
    c.add_argument("--outcomes", required=True, help="per-item outcomes (CSV or parquet)")
    c.add_argument("--out", default=None, help="write the pairwise table here (CSV)")
    c.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (default 2000)")
    c.add_argument("--boot-seed", type=int, default=0, help="bootstrap seed (default 0)")
    c.set_defaults(func=cmd_rank_check)


def cmd_rank_check(args) -> int:
    from ..preflight.rank_check import check_ranking, summarize_check

    ranking = Path(args.ranking)
    if ranking.is_dir():
        ranking = ranking / "ranking.csv"
    check = check_ranking(ranking, args.outcomes, n_boot=args.n_boot, seed=args.boot_seed)
    print(check.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(summarize_check(check))
    if args.out:
        out = Path(args.out)
        if out.is_dir():
            raise OpdDiagError(f"--out {out} is a directory; give a CSV file path")
        tmp = out.with_name(f".{out.name}.tmp")
        check.to_csv(tmp, index=False)
        tmp.replace(out)
        print(f"wrote {out}")
    return 0


def _model_path(value: str) -> Path:
    from ..zoo import list_models, model_dir
    from ..zoo.v2 import list_models as list_models_v2

    path = Path(value)
    if path.is_dir():
        return path
    if value in list_models() or value in list_models_v2():
        return model_dir(value)
    raise OpdDiagError(f"{value!r} is neither a model directory nor a zoo model name "
                       "(`opd-diag zoo list`)")


def cmd_rank(args) -> int:
    from ..core.models import load_model
    from ..core.prompts import load_prompts, validate_prompts
    from ..preflight import PreflightConfig
    from ..preflight.rank import rank_teachers
    from ..tasks.verify import make_verifier

    backend = backend_from_args(args)  # before loading anything: vllm without vLLM -> exit 2
    from ..core.runs import check_collection_dir, check_out_dir

    if not args.teacher:
        raise OpdDiagError("rank-teachers needs at least one --teacher")
    check_collection_dir(args.out, ("ranking.csv", "ranking.parquet", "report.html"),
                         what="teacher ranking")  # before loading any model
    if args.name and len(args.name) != len(args.teacher):
        raise OpdDiagError(f"{len(args.name)} --name for {len(args.teacher)} --teacher: give one "
                           "name per teacher, or none")
    if args.pair:
        from ..preflight import BUDGETS
        from ..zoo import get_pair

        if args.prompts or args.student:
            raise OpdDiagError("give either --pair or --student/--prompts, not both")
        zp = get_pair(args.pair)
        student = _model_path(zp.student)
        prompts = validate_prompts(zp.prompts(BUDGETS[args.budget]["n_prompts"]),
                                   f"zoo pair {args.pair}")
        checker = args.checker or f"task:{zp.task}"
        max_new = args.max_new_tokens or zp.hyper.max_new_tokens
    else:
        missing = [f"--{n}" for n in ("student", "prompts", "max-new-tokens")
                   if not getattr(args, n.replace("-", "_"))]
        if missing:
            raise OpdDiagError(f"rank-teachers needs --pair or all of {missing}")
        student, prompts = _model_path(args.student), load_prompts(args.prompts)
        checker, max_new = args.checker or "auto", args.max_new_tokens
    paths = [_model_path(t) for t in args.teacher]
    names = args.name or [p.name for p in paths]
    if len(set(names)) != len(names):
        raise OpdDiagError(f"teacher names must be unique, got {names}; give --name for each "
                           "--teacher")
    for name in names:  # each candidate's pre-flight run: the rule, before loading any model
        check_out_dir(Path(args.out) / name, overwrite=args.overwrite)
    cfg = PreflightConfig.budget(args.budget, max_new_tokens=max_new, seed=args.seed)
    s = load_model(student, role="student", dtype=args.student_dtype or args.dtype,
                   device=args.student_device or args.device,
                   trust_remote_code=args.trust_remote_code)
    teachers = {n: load_model(p, role="teacher", dtype=args.teacher_dtype or args.dtype,
                              device=args.teacher_device or args.device,
                              trust_remote_code=args.trust_remote_code)
                for n, p in zip(names, paths, strict=True)}
    if args.dry_run:
        return _dry_run(s, teachers, prompts, cfg, backend)
    ranking = rank_teachers(s, teachers, prompts, args.out, config=cfg,
                            verifier=make_verifier(checker).check, overwrite=args.overwrite,
                            progress=not args.quiet, backend=backend)
    print(ranking.render())
    print(f"wrote {Path(args.out) / 'ranking.csv'} and {Path(args.out) / 'report.html'}")
    return 0


def _dry_run(student, teachers, prompts, cfg, backend) -> int:
    """One pre-flight plan per candidate (the student is sampled only for the first: its
    rollouts are reused, and scored again under each teacher), then the total; writes nothing."""
    from ..core.models import Pair
    from ..preflight.plan import plan_preflight
    from ..states.backend import use_backend

    total, known = 0.0, True
    with use_backend(backend):
        for i, (name, teacher) in enumerate(teachers.items()):
            plan = plan_preflight(Pair(student=student, teacher=teacher), prompts, cfg)
            if i:  # rank_teachers reuses the first candidate's student rollouts
                plan.stages = [st for st in plan.stages if st.name != "student_capture:sample"]
            print(f"== candidate {name}\n{plan.render()}")
            secs = plan.total_seconds()
            known = known and secs is not None
            total += secs or 0.0
    print(f"rank-teachers: {len(teachers)} candidates, estimated "
          f"{f'{total:.1f} s' if known else 'time not measured'} in all")
    return 0
