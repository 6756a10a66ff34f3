"""Build the zoo: train every model spec in order and write HF directories with model cards.

``build_zoo()`` reproduces the committed checkpoints: training is seeded and runs on one thread, so
on the same torch build the weights are bitwise identical (compare ``card.json``'s ``sha256``).
``build_zoo(quick=True, out_dir=tmp)`` runs a few steps per model: a CI smoke test of the whole path
(train -> save fp16 -> reload through ``AutoModelForCausalLM`` -> evaluate -> card).

A model card (``card.json`` + ``README.md``) records the recipe (data mixture, style, templates,
architecture, schedule, seed), the run (steps, wall time, final loss, threads, versions), greedy
accuracies per eval subset, and the SHA-256 of ``model.safetensors``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
from pathlib import Path

import torch

from .data import EVAL_SEED, eval_set
from .evaluate import evaluate
from .registry import ZOO_DIR
from .specs import MODEL_SPECS, get_spec
from .tokenizer import save_tokenizer
from .train import ModelSpec, train_model

#: eval size recorded on the card and re-checked by the tests (per subset, template = first)
CARD_EVAL_N = 50
#: larger eval for the card's headline numbers
SCIENCE_EVAL_N = 500


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _default_dtype_fp32(config_path: Path) -> None:
    """``save_pretrained`` records the fp16 storage dtype; make plain loading give fp32 (CPU math)."""
    cfg = json.loads(config_path.read_text())
    for key in ("dtype", "torch_dtype"):
        if key in cfg:
            cfg[key] = "float32"
    config_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def write_checkpoint(
    model: torch.nn.Module,
    spec: ModelSpec,
    stats: dict,
    out: Path,
    *,
    eval_n: int = SCIENCE_EVAL_N,
    card_n: int = CARD_EVAL_N,
) -> dict:
    """Save ``model`` as a standard HF dir (fp16 weights, fp32 default dtype), evaluate, write card."""
    import transformers
    from transformers import GenerationConfig

    out.mkdir(parents=True, exist_ok=True)
    model = model.to(torch.float16)
    model.generation_config = GenerationConfig(
        bos_token_id=model.config.bos_token_id,
        eos_token_id=model.config.eos_token_id,
        pad_token_id=model.config.pad_token_id,
        do_sample=False,
        max_new_tokens=144,
    )
    model.save_pretrained(str(out), safe_serialization=True)
    _default_dtype_fp32(out / "config.json")
    save_tokenizer(out)
    model.to(torch.float32)
    acc: dict[str, dict[str, float]] = {}
    for template in spec.templates:
        acc[template] = evaluate(out, eval_set(spec.task, template, card_n), task=spec.task)
    headline = evaluate(
        out, eval_set(spec.task, spec.templates[0], eval_n, seed=EVAL_SEED + 1), task=spec.task
    )
    card = {
        "name": spec.name,
        "summary": spec.summary,
        "spec": {k: v for k, v in dataclasses.asdict(spec).items() if k != "extra"},
        "exposure": {str(k): round(v, 4) for k, v in spec.exposure().items()},
        "params": sum(p.numel() for p in model.parameters()),
        "training": stats,
        "card_eval": {"n_per_subset": card_n, "seed": EVAL_SEED, "accuracy": acc},
        "accuracy": {
            "n_per_subset": eval_n,
            "seed": EVAL_SEED + 1,
            "template": spec.templates[0],
            **headline,
        },
        "sha256": sha256(out / "model.safetensors"),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
    }
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    (out / "README.md").write_text(render_card(card))
    return card


def render_card(card: dict) -> str:
    """The human-readable model card (README.md) from ``card.json``."""
    s, tr = card["spec"], card["training"]
    lines = [
        f"# {card['name']}",
        "",
        card["summary"],
        "",
        "Tiny `LlamaForCausalLM` from the opd-diag model-organism zoo, trained from scratch on synthetic",
        "multi-digit addition with chain-of-thought. Load with `AutoModelForCausalLM.from_pretrained(dir)`.",
        "",
        "| field | value |",
        "|---|---|",
        f"| task / style | {s['task']} / {s['style']} |",
        f"| templates | {', '.join(s['templates'])} |",
        f"| exposure (difficulty: share) | {', '.join(f'{k}: {v:.3f}' for k, v in card['exposure'].items())} |",
        f"| architecture | d={s['d_model']}, layers={s['n_layers']}, heads={s['n_heads']}, ffn={s['d_ff']}, "
        f"params={card['params']:,} |",
        f"| init | {s['init_from'] or 'scratch'} |",
        f"| schedule | {tr['steps_done']} steps x batch {s['batch_size']}, lr {s['lr']}, warmup {s['warmup']}, cosine |",
        f"| seed / threads | {s['seed']} / {tr['threads']} |",
        f"| wall time | {tr['wall_seconds']} s |",
        f"| final loss (completion tokens) | {tr['final_loss']} |",
        f"| sha256(model.safetensors) | `{card['sha256']}` |",
        "",
        f"Greedy accuracy, n={card['accuracy']['n_per_subset']} per subset, template `{card['accuracy']['template']}`:",
        "",
    ]
    subsets = [k for k in card["accuracy"] if k not in ("n_per_subset", "seed", "template")]
    lines += [
        "| " + " | ".join(subsets) + " |",
        "|" + "---|" * len(subsets),
        "| " + " | ".join(f"{card['accuracy'][k]:.3f}" for k in subsets) + " |",
        "",
    ]
    return "\n".join(lines)


def _eval_sizes(quick: bool) -> dict[str, int]:
    return (
        {"eval_n": 5, "card_n": 5} if quick else {"eval_n": SCIENCE_EVAL_N, "card_n": CARD_EVAL_N}
    )


def build_zoo(
    only: str | None = None,
    out_dir: str | Path = ZOO_DIR,
    quick: bool = False,
    progress: bool = True,
) -> list[dict]:
    """Train and write zoo models; returns their cards.

    Args:
        only: build just this model (its ``init_from`` parent must already be in ``out_dir``).
        out_dir: where the model directories go (default: the committed ``ZOO_DIR``).
        quick: a smoke run: 8 steps per model, 5 eval problems per subset.
        progress: show progress bars.
    """
    out_dir = Path(out_dir)
    specs = [get_spec(only)] if only else list(MODEL_SPECS)
    cards = []
    for spec in specs:
        init = out_dir / spec.init_from if spec.init_from else None
        if init is not None and not (init / "config.json").exists():
            from ..core.errors import OpdDiagError

            raise OpdDiagError(
                f"{spec.name} starts from {spec.init_from}; build that first (not in {out_dir})"
            )
        model, stats = train_model(
            spec, init_dir=init, steps=8 if quick else None, progress=progress
        )
        cards.append(
            write_checkpoint(model, spec, stats, out_dir / spec.name, **_eval_sizes(quick))
        )
    write_index(out_dir)
    return cards


def write_index(zoo_dir: str | Path = ZOO_DIR) -> str:
    """Write ``<zoo_dir>/README.md``: every built model with its accuracies, and every pair."""
    from .registry import list_pairs

    lines = [
        "# opd-diag model-organism zoo",
        "",
        "Generated by `opd_diag.zoo.build.write_index` from the model cards. Accuracy: greedy, "
        f"n={SCIENCE_EVAL_N} per subset, each model's first template.",
        "",
        "| model | style | templates | exposure | init | steps | wall s | loss | easy | 4d | 5d |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for spec in MODEL_SPECS:
        path = Path(zoo_dir) / spec.name / "card.json"
        if not path.exists():
            continue
        c = json.loads(path.read_text())
        a, t = c["accuracy"], c["training"]
        expo = ", ".join(f"{k}d {v:.3f}" for k, v in c["exposure"].items() if int(k) > 3) or "-"
        lines.append(
            f"| {spec.name} | {spec.style} | {', '.join(spec.templates)} | {expo} | "
            f"{spec.init_from or 'scratch'} | {t['steps_done']} | {t['wall_seconds']} | {t['final_loss']} | "
            f"{a.get('easy', float('nan')):.3f} | {a.get('4d', float('nan')):.3f} | {a.get('5d', float('nan')):.3f} |"
        )
    lines += ["", "| pair | student | teacher | template | demonstrates |", "|---|---|---|---|---|"]
    for p in list_pairs():
        lines.append(f"| {p.name} | {p.student} | {p.teacher} | {p.template} | {p.demonstrates} |")
    text = "\n".join(lines) + "\n"
    (Path(zoo_dir) / "README.md").write_text(text)
    return text
