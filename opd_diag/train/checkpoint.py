"""Atomic loop checkpoints: everything needed to continue a run bit for bit.

```
RUN/checkpoints/step-000050/
  model.safetensors, config.json, tokenizer files   a loadable HF student directory (the
                    float32 master weights, also under --dtype bfloat16: resume is exact)
  trainer.pt        optimizer + scheduler state and the torch RNG state (tensors only)
  state.json        step, data cursor, python/numpy RNG states, metrics rows so far
```

A checkpoint is written into ``.tmp-step-…`` and renamed into place, so a SIGKILL leaves either
no checkpoint for that step or a complete one; :func:`latest_checkpoint` ignores temp dirs.
The state at ``step-s`` is the state *after* the optimizer update of step ``s``: a resumed run
continues with step ``s + 1``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from ..core.errors import OpdDiagError
from ..core.quiet import hf_progress_bars_off

CHECKPOINT_DIR = "checkpoints"


def _fsync_dir(path: Path) -> None:
    for f in path.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


def save_checkpoint(run_path: Path, step: int, model, tokenizer, optimizer, scheduler,
                    cursor: dict, keep: int = 2) -> Path:
    """Write ``RUN/checkpoints/step-{step}`` atomically and prune to the ``keep`` newest."""
    root = Path(run_path) / CHECKPOINT_DIR
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with hf_progress_bars_off():
            model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state()}, tmp / "trainer.pt")
        np_state = np.random.get_state()
        state = {"step": step, "cursor": cursor, "python_rng": _jsonable(random.getstate()),
                 "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]]}
        (tmp / "state.json").write_text(json.dumps(state))
        _fsync_dir(tmp)
        if final.exists():  # a resumed run re-saving the same step
            shutil.rmtree(final)
        os.replace(tmp, final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OpdDiagError(f"cannot write checkpoint {final}: {exc} (disk full?)") from exc
    for old in list_checkpoints(run_path)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _jsonable(obj):
    return [_jsonable(x) for x in obj] if isinstance(obj, (tuple, list)) else obj


def _tupled(obj):
    return tuple(_tupled(x) for x in obj) if isinstance(obj, list) else obj


def list_checkpoints(run_path: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_path) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    done = [p for p in root.glob("step-*") if (p / "state.json").is_file()]
    return sorted(done, key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(run_path: Path) -> Path | None:
    found = list_checkpoints(run_path)
    return found[-1] if found else None


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict:
    """Restore model, optimizer, scheduler and all RNG states; returns ``state.json``."""
    from safetensors.torch import load_file

    path = Path(path)
    weights = {}
    for f in sorted(path.glob("*.safetensors")):
        weights.update(load_file(str(f), device=str(next(model.parameters()).device)))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    # tied weights may be stored once; anything else missing means a different model
    missing = [m for m in missing if not m.endswith("lm_head.weight")]
    if missing or unexpected:
        raise OpdDiagError(f"checkpoint {path} does not match the student "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    trainer = torch.load(path / "trainer.pt", weights_only=True)
    optimizer.load_state_dict(trainer["optimizer"])
    scheduler.load_state_dict(trainer["scheduler"])
    torch.set_rng_state(trainer["torch_rng"])
    state = json.loads((path / "state.json").read_text())
    random.setstate(_tupled(state["python_rng"]))
    kind, keys, *rest = state["numpy_rng"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    return state
