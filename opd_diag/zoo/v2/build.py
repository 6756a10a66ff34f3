"""Build zoo v2: train every v2 spec (dependency order) and write HF directories with model cards.

Mirrors :mod:`opd_diag.zoo.build` (fp16 ``model.safetensors``, fp32 default dtype, ``card.json`` +
``README.md``, SHA-256) with the v2 tokenizer, the v2 eval subsets (list lengths) and longer
generations. ``build_zoo2(jobs=2)`` trains independent models in two one-thread processes
(the parents first, then the three continuations); the weights do not depend on ``jobs``.
"""

from __future__ import annotations

import dataclasses
import json
import platform
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from ...core.errors import OpdDiagError
from ..build import _default_dtype_fp32, sha256
from ..data import EVAL_SEED, eval_set
from ..evaluate import evaluate
from ..train import ModelSpec
from .registry import MAX_NEW_TOKENS, SUBSETS2, ZOO2_DIR, list_pairs
from .specs import MODEL_SPECS, get_spec
from .tokenizer import save_tokenizer, vocab_size
from .train import train_model

#: eval size recorded on the card and re-checked by the tests (per subset, first template)
CARD_EVAL_N = 20
#: the card's headline accuracies
SCIENCE_EVAL_N = 200


def write_checkpoint(model, spec: ModelSpec, stats: dict, out: Path, *,
                     eval_n: int = SCIENCE_EVAL_N, card_n: int = CARD_EVAL_N) -> dict:
    """Save ``model`` as a standard HF dir, evaluate it greedily and write its card."""
    import transformers
    from transformers import GenerationConfig

    out.mkdir(parents=True, exist_ok=True)
    model = model.to(torch.float16)
    model.generation_config = GenerationConfig(
        bos_token_id=model.config.bos_token_id, eos_token_id=model.config.eos_token_id,
        pad_token_id=model.config.pad_token_id, do_sample=False, max_new_tokens=MAX_NEW_TOKENS)
    model.save_pretrained(str(out), safe_serialization=True)
    _default_dtype_fp32(out / "config.json")
    save_tokenizer(out)
    model.to(torch.float32)
    kw = {"task": spec.task, "max_new_tokens": MAX_NEW_TOKENS}
    acc = {t: evaluate(out, eval_set(spec.task, t, card_n, subsets=SUBSETS2), **kw)
           for t in spec.templates}
    headline = evaluate(out, eval_set(spec.task, spec.templates[0], eval_n, seed=EVAL_SEED + 1,
                                      subsets=SUBSETS2), **kw)
    card = {
        "name": spec.name, "summary": spec.summary, "family": "v2",
        "spec": {k: v for k, v in dataclasses.asdict(spec).items() if k != "extra"},
        "exposure": {str(k): round(v, 4) for k, v in spec.exposure().items()},
        "params": sum(p.numel() for p in model.parameters()),
        "vocab_size": vocab_size(),
        "training": stats,
        "card_eval": {"n_per_subset": card_n, "seed": EVAL_SEED, "max_new_tokens": MAX_NEW_TOKENS,
                      "accuracy": acc},
        "accuracy": {"n_per_subset": eval_n, "seed": EVAL_SEED + 1, "template": spec.templates[0],
                     **headline},
        "sha256": sha256(out / "model.safetensors"),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
    }
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    (out / "README.md").write_text(render_card(card))
    return card


def render_card(card: dict) -> str:
    s, tr, a = card["spec"], card["training"], card["accuracy"]
    subsets = [k for k in a if k not in ("n_per_subset", "seed", "template")]
    return "\n".join([
        f"# {card['name']}", "", card["summary"], "",
        "Tiny `LlamaForCausalLM` from opd-diag's zoo v2 (held-out testbed), trained from scratch on "
        "sorting lists of two-digit numbers with chain-of-thought. Load with "
        "`AutoModelForCausalLM.from_pretrained(dir)`.", "",
        "| field | value |", "|---|---|",
        f"| task / style | {s['task']} / {s['style']} |",
        f"| templates | {', '.join(s['templates'])} |",
        f"| exposure (list length: share) | "
        f"{', '.join(f'{k}: {v:.3f}' for k, v in card['exposure'].items())} |",
        f"| architecture | d={s['d_model']}, layers={s['n_layers']}, heads={s['n_heads']}, "
        f"ffn={s['d_ff']}, vocab={card['vocab_size']} (BPE), params={card['params']:,} |",
        f"| init | {s['init_from'] or 'scratch'} |",
        f"| schedule | {tr['steps_done']} steps x batch {s['batch_size']}, lr {s['lr']}, "
        f"warmup {s['warmup']}, cosine |",
        f"| seed / threads | {s['seed']} / {tr['threads']} |",
        f"| wall time | {tr['wall_seconds']} s |",
        f"| final loss (completion tokens) | {tr['final_loss']} |",
        f"| sha256(model.safetensors) | `{card['sha256']}` |", "",
        f"Greedy accuracy, n={a['n_per_subset']} per subset, template `{a['template']}`:", "",
        "| " + " | ".join(subsets) + " |", "|" + "---|" * len(subsets),
        "| " + " | ".join(f"{a[k]:.3f}" for k in subsets) + " |", "",
    ])


def build_one(name: str, out_dir: str | Path = ZOO2_DIR, quick: bool = False,
              progress: bool = False) -> dict:
    """Train and write one v2 model (its ``init_from`` parent must be in ``out_dir``)."""
    torch.set_num_threads(1)
    spec, out_dir = get_spec(name), Path(out_dir)
    init = out_dir / spec.init_from if spec.init_from else None
    if init is not None and not (init / "config.json").exists():
        raise OpdDiagError(f"{spec.name} starts from {spec.init_from}; build that first "
                           f"(not in {out_dir})")
    model, stats = train_model(spec, init_dir=init, steps=6 if quick else None,
                               progress=progress, log_every=0 if quick else 50)
    sizes = {"eval_n": 3, "card_n": 2} if quick else {}
    card = write_checkpoint(model, spec, stats, out_dir / spec.name, **sizes)
    print(f"[zoo-v2] built {name}: {stats['wall_seconds']} s, accuracy {card['accuracy']}",
          flush=True)
    return card


def build_zoo2(only: str | None = None, out_dir: str | Path = ZOO2_DIR, quick: bool = False,
               jobs: int = 1, progress: bool = True) -> list[dict]:
    """Train and write zoo-v2 models (all, or ``only`` one) and the index README; returns cards."""
    out_dir = Path(out_dir)
    if only:
        cards = [build_one(only, out_dir, quick, progress)]
    else:
        # the costliest first (teachers see every length), so that two workers stay balanced
        roots = [s.name for s in sorted((s for s in MODEL_SPECS if not s.init_from),
                                        key=lambda s: -len(s.mix))]
        children = [s.name for s in MODEL_SPECS if s.init_from]
        cards = []
        for wave in (roots, children):
            if jobs > 1:
                with ProcessPoolExecutor(max_workers=jobs) as pool:
                    cards += list(pool.map(build_one, wave, [out_dir] * len(wave),
                                           [quick] * len(wave), [False] * len(wave)))
            else:
                cards += [build_one(n, out_dir, quick, progress) for n in wave]
    write_index(out_dir)
    return cards


def write_index(zoo_dir: str | Path = ZOO2_DIR) -> str:
    """Write ``<zoo_dir>/README.md`` from the model cards: every built model and every v2 pair."""
    lines = [
        "# opd-diag model-organism zoo, v2 (held-out testbed)", "",
        "Generated by `opd_diag.zoo.v2.build.write_index` from the model cards. Task: sort 2-12 "
        f"distinct two-digit numbers with chain-of-thought; BPE tokenizer of {vocab_size()} tokens. "
        f"Accuracy: greedy, n={SCIENCE_EVAL_N} per subset (easy 2-6, mid 7-9, hard 10-12 numbers), "
        "each model's first template. Never used to set verdict thresholds.", "",
        "| model | style | templates | exposure 7-9 / 10-12 | init | steps | wall s | loss | easy "
        "| mid | hard |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for spec in MODEL_SPECS:
        path = Path(zoo_dir) / spec.name / "card.json"
        if not path.exists():
            continue
        c = json.loads(path.read_text())
        a, t, e = c["accuracy"], c["training"], spec.exposure()
        mid, hard = sum(e.get(n, 0) for n in (7, 8, 9)), sum(e.get(n, 0) for n in (10, 11, 12))
        lines.append(
            f"| {spec.name} | {spec.style} | {', '.join(spec.templates)} | {mid:.3f} / {hard:.3f} "
            f"| {spec.init_from or 'scratch'} | {t['steps_done']} | {t['wall_seconds']} | "
            f"{t['final_loss']} | {a.get('easy', float('nan')):.3f} | "
            f"{a.get('mid', float('nan')):.3f} | {a.get('hard', float('nan')):.3f} |")
    lines += ["", "| pair | student | teacher | template | demonstrates |", "|---|---|---|---|---|"]
    lines += [f"| {p.name} | {p.student} | {p.teacher} | {p.template} | {p.demonstrates} |"
              for p in list_pairs()]
    text = "\n".join(lines) + "\n"
    Path(zoo_dir).mkdir(parents=True, exist_ok=True)
    (Path(zoo_dir) / "README.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="build zoo v2")
    ap.add_argument("--only")
    ap.add_argument("--out", default=str(ZOO2_DIR))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args(argv)
    build_zoo2(args.only, args.out, args.quick, args.jobs, progress=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
