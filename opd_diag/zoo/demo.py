"""``make demo`` / ``opd-diag demo``: the whole suite on the built-in model zoo in a few minutes.

1. pre-flight of a pair built to succeed and of pairs built to fail, with their verdicts;
2. short OPD runs on the success and the incompatible pair (the same loop a user runs), with
   evaluation;
3. the HTML reports (pre-flight, training dynamics, comparison of the pre-flights).
"""

from __future__ import annotations

import time
from pathlib import Path

DEMO_PAIRS = ("success", "incompatible", "out-of-reach")
DEMO_OPD = ("success", "incompatible")  # runs/demo/opd-*: what notebooks 02-04 read by default


def run_demo(out: str | Path, steps: int = 30, progress: bool = True) -> dict:
    """Run the demo into ``out``; returns ``{pair: verdict}`` and the report paths."""
    from ..core.models import load_model, load_pair
    from ..core.prompts import validate_prompts
    from ..preflight import PreflightConfig, run_preflight
    from ..report import write_report
    from ..tasks.verify import make_verifier
    from ..train.config import resolve_config
    from ..train.loop import train
    from . import get_pair, model_dir, pairs_table

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    print("[demo] the model zoo:")
    print(pairs_table()[["pair", "student", "teacher", "demonstrates"]].to_string(index=False))
    verdicts, reports = {}, {}
    for name in DEMO_PAIRS:
        zp = get_pair(name)
        t0 = time.perf_counter()
        pair = load_pair(model_dir(zp.student), model_dir(zp.teacher))
        refs = {r: load_model(model_dir(r), role="reference") for r in zp.references}
        cfg = PreflightConfig.budget("small", max_new_tokens=zp.hyper.max_new_tokens)
        v = run_preflight(pair, validate_prompts(zp.prompts(16)), out / f"preflight-{name}",
                          config=cfg, verifier=make_verifier(f"task:{zp.task}").check,
                          references=refs, overwrite=True)
        verdicts[name] = v.verdict
        print(f"\n[demo] pre-flight {name!r} ({zp.student} <- {zp.teacher}), "
              f"{time.perf_counter() - t0:.0f} s\n{v.render()}")
        reports[f"preflight-{name}"] = write_report([v.run], out / f"preflight-{name}.html")
    for name in DEMO_OPD:  # the same loop a user runs, on a pair that works and one that fails
        zp = get_pair(name)
        pair = load_pair(model_dir(zp.student), model_dir(zp.teacher))
        evals = validate_prompts(zp.eval_sets(50).query("subset == '5d'").reset_index(drop=True))
        cfg = resolve_config(preset="cpu-zoo", overrides={
            "steps": steps, "eval_every": max(1, steps // 2), "ckpt_every": steps,
            "states_every": 5, "lr": zp.hyper.lr, "checker": f"task:{zp.task}"})
        print(f"\n[demo] {steps} OPD steps on {name!r} (reverse KL, lr {cfg.lr})")
        run = train(pair, validate_prompts(zp.prompts(256)), out / f"opd-{name}", cfg,
                    eval_prompts=evals, overwrite=True, progress=progress)
        reports[f"opd-{name}"] = write_report([run], out / f"opd-{name}.html")
    reports["opd-comparison"] = write_report([out / f"opd-{n}" for n in DEMO_OPD],
                                             out / "opd-comparison.html", labels=list(DEMO_OPD))
    reports["comparison"] = write_report([out / f"preflight-{n}" for n in DEMO_PAIRS],
                                         out / "preflight-comparison.html",
                                         labels=list(DEMO_PAIRS))
    print("\n[demo] reports:")
    for path in reports.values():
        print(f"  {path}")
    return {"verdicts": verdicts, "reports": reports}
