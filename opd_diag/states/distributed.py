"""Multi-process capture under ``torchrun``: ranks, work sharding, per-rank shards, agreement.

Context: capture is embarrassingly parallel over rollouts. Every rank loads both models (on its
own GPU under ``torchrun``), takes every ``world_size``-th unit of work, and writes its own shards
(``part-<key>-r<rank>.parquet``). Nothing is gathered in memory: the run directory *is* the
gather, and :func:`opd_diag.core.runs.read_table` merges shards by their global key.

Intuition for exact equality with one process: the unit of work is the *global* generation batch
(consecutive prompt rows), not a per-rank re-batching of a prompt slice. Each row is therefore
computed in exactly the batch it would be in a single-process run, with its own seeded generator
(``rollout.row_seed``), so the merged tables equal the single-process tables bit for bit on the
same hardware, not just up to floating-point effects of batch shape.

Control traffic (config hashes, error flags) goes over a gloo group, so it works the same whether
the models sit on CPUs or GPUs and whether or not the caller already set up an NCCL group.

Launch::

    torchrun --nproc_per_node=8 -m opd_diag capture --student S --teacher T ...
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import OpdDiagError
from ..core.runs import RunWriter, open_run

_GROUP = None  # the gloo group used for control messages


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a ``torchrun`` job (``world_size == 1`` when launched plainly)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise OpdDiagError(f"environment variable {name}={value!r} is not an integer") from None


def context() -> DistContext:
    """Rank and world size from the ``torchrun`` environment (``RANK``, ``WORLD_SIZE``, ...).

    When ``WORLD_SIZE > 1`` this initialises torch.distributed (gloo, from the env:// rendezvous
    torchrun sets up) unless the caller already did, and pins each rank to its local GPU, so
    ``--student-device cuda`` means "this rank's GPU".
    """
    world = _env_int("WORLD_SIZE", 1)
    ctx = DistContext(_env_int("RANK", 0), world, _env_int("LOCAL_RANK", 0))
    if ctx.active:
        _init(ctx)
    return ctx


def _init(ctx: DistContext) -> None:
    global _GROUP
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    if _GROUP is None:
        _GROUP = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else dist.group.WORLD
    if torch.cuda.is_available():
        torch.cuda.set_device(ctx.local_rank % torch.cuda.device_count())


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (a no-op in one process)."""
    if ctx.active:
        import torch.distributed as dist

        dist.barrier(group=_GROUP)


def all_gather_object(ctx: DistContext, obj) -> list:
    """Every rank's ``obj``, in rank order (``[obj]`` in one process)."""
    if not ctx.active:
        return [obj]
    import torch.distributed as dist

    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj, group=_GROUP)
    return out


def all_reduce_sum(ctx: DistContext, values: list[float]) -> list[float]:
    """Element-wise sum of ``values`` over ranks, in float64 (``values`` in one process).

    Every rank must pass the same number of values in the same order.
    """
    if not ctx.active:
        return list(values)
    import torch
    import torch.distributed as dist

    buf = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=_GROUP)
    return buf.tolist()


def shard(ctx: DistContext, n_units: int) -> list[int]:
    """Indices of the units of work this rank does: every ``world_size``-th, from ``rank``."""
    return list(range(ctx.rank, n_units, ctx.world_size))


def config_hash(config: dict) -> str:
    """A short, order-independent hash of a JSON-able config."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_same_config(ctx: DistContext, config: dict, what: str = "config") -> None:
    """Raise the same :class:`OpdDiagError` on every rank unless all ranks have equal configs.

    Ranks that disagree (different flags, prompt files or model directories) would write shards
    that do not belong to one run; comparing a hash costs one small all-gather.
    """
    hashes = all_gather_object(ctx, config_hash(config))
    if len(set(hashes)) > 1:
        groups: dict[str, list[int]] = {}
        for rank, h in enumerate(hashes):
            groups.setdefault(h, []).append(rank)
        detail = "; ".join(f"ranks {ranks}: {h}" for h, ranks in groups.items())
        raise OpdDiagError(
            f"ranks were started with different {what}s ({detail}); launch every rank with the "
            "same arguments and files"
        )


@contextmanager
def open_run_ranks(ctx: DistContext, path: str | Path, kind: str, config: dict, **kw):
    """:func:`opd_diag.core.runs.open_run` for every rank of a job; yields that rank's writer.

    Rank 0 creates (or resumes) the directory and owns ``run.json``; the others wait, then write
    only their own shards. Failures are agreed on: if opening fails on rank 0, or the body raises
    an :class:`OpdDiagError` on any rank, every rank raises it, and a run created by this job is
    removed (no partial run directory). Other exceptions are crashes and propagate unchanged.
    """
    if not ctx.active:
        with open_run(path, kind, config, **kw) as run:
            yield run
        return
    cm, opened, err = open_run(path, kind, config, **kw), None, None
    if ctx.is_main:
        try:
            opened = cm.__enter__()
        except OpdDiagError as exc:
            err = str(exc)
    err = all_gather_object(ctx, err)[0]
    if err is not None:
        raise OpdDiagError(err)
    run = RunWriter(opened.path, opened.meta, rank=0) if ctx.is_main else RunWriter(Path(path), {}, rank=ctx.rank)
    local: str | None = None
    try:
        yield run
    except OpdDiagError as exc:
        local = f"rank {ctx.rank}: {exc}"
    failures = [e for e in all_gather_object(ctx, local) if e is not None]
    if ctx.is_main:
        if failures:
            exc = OpdDiagError("; ".join(failures))
            cm.__exit__(OpdDiagError, exc, None)
        else:
            opened.meta.update(run.meta)
            cm.__exit__(None, None, None)
    barrier(ctx)  # nobody returns before rank 0 has finished (or removed) the run directory
    if failures:
        raise OpdDiagError("; ".join(failures))
