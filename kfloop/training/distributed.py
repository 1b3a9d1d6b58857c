"""Distributed data-parallel training: who this process is in a run of several, the process group's life, and
the few collectives the PyTorch trainer needs.

torchrun and the Kubeflow Training Operator's PyTorchJob both start every process with ``WORLD_SIZE``, ``RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` (torchrun adds ``LOCAL_RANK``). :func:`process_group` reads them (the worker
entrypoint passes its environment), joins the group through ``env://`` (gloo between CPUs, NCCL between GPUs)
and makes it :func:`current` for the trainer. Without them, or with a world of one, there is no group and the
trainer runs exactly as a single process always has.

How the trainer keeps a distributed run equal to a single one: every rank draws the same batch order from the
seed and takes every ``size``-th row of each batch (:func:`shard`), so the global batches are the single
process's; a rank's loss is weighted by its share of the batch, so DDP's gradient mean is the batch mean.
Validation is whole on every rank (it is cheap next to training) and its loss is averaged and broadcast from
rank 0 (:func:`agreed_mean`), so every rank takes the same early-stopping decision in the same epoch.

torch is imported inside the functions: the launcher reads :data:`ENV_VARS` without loading it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np

from kfloop.errors import KfloopError

#: What torchrun and the PyTorchJob operator set in every process of a run.
WORLD_SIZE, RANK, LOCAL_RANK = "WORLD_SIZE", "RANK", "LOCAL_RANK"
MASTER_ADDR, MASTER_PORT = "MASTER_ADDR", "MASTER_PORT"
ENV_VARS = (WORLD_SIZE, RANK, MASTER_ADDR, MASTER_PORT)
#: ``training.device`` -> the collective backend between its processes.
BACKENDS = {"cpu": "gloo", "gpu": "nccl"}
#: A collective waiting this long for a peer (one that died) fails the run instead of hanging it.
COLLECTIVE_TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class World:
    """This process's place in a run: ``size`` processes, this one ``rank`` (0 exports and registers)."""

    size: int
    rank: int
    local_rank: int = 0
    device: str = "cpu"

    @property
    def primary(self) -> bool:
        return self.rank == 0


_CURRENT: ContextVar[World | None] = ContextVar("kfloop_training_world", default=None)


def _integer(environ: Mapping[str, str], name: str, default: str | None = None) -> int:
    raw = environ.get(name, default)
    try:
        return int(str(raw))
    except ValueError:
        raise KfloopError(f"distributed training: {name}={raw!r} is not an integer") from None


def from_env(environ: Mapping[str, str], device: str = "cpu") -> World | None:
    """The world ``environ`` describes (None: not started by torchrun or a PyTorchJob); a clear error for values
    that cannot form one."""
    if WORLD_SIZE not in environ:
        return None
    size, rank = _integer(environ, WORLD_SIZE), _integer(environ, RANK, "0")
    if size < 1 or not 0 <= rank < size:
        raise KfloopError(f"distributed training: RANK={rank} is not within WORLD_SIZE={size} (0 to {size - 1})")
    missing = [name for name in (MASTER_ADDR, MASTER_PORT) if size > 1 and not environ.get(name)]
    if missing:
        raise KfloopError(f"distributed training: WORLD_SIZE={size} but {' and '.join(missing)} not set")
    return World(size, rank, _integer(environ, LOCAL_RANK, "0"), device)


def current() -> World | None:
    """The world of the process group :func:`process_group` joined, or None (a single process)."""
    return _CURRENT.get()


@contextlib.contextmanager
def process_group(device: str, environ: Mapping[str, str]) -> Iterator[World | None]:
    """Join the run ``environ`` describes for the block (a world of one, or none: nothing to join)."""
    world = from_env(environ, device)
    if world is None or world.size == 1:
        yield world
        return
    import torch
    import torch.distributed as dist

    if device == "gpu":
        torch.cuda.set_device(cuda_device(world.local_rank))
    dist.init_process_group(
        BACKENDS[device], init_method="env://", world_size=world.size, rank=world.rank, timeout=COLLECTIVE_TIMEOUT
    )
    token = _CURRENT.set(world)
    try:
        yield world
    finally:
        _CURRENT.reset(token)
        dist.destroy_process_group()


def cuda_device(local_rank: int) -> Any:
    """The CUDA device of this process (``training.device: gpu``), or a clear error when torch sees none."""
    import torch

    if not torch.cuda.is_available():
        raise KfloopError(f"training.device: gpu, but torch {torch.__version__} sees no CUDA device")
    return torch.device("cuda", local_rank)


def shard(batch: np.ndarray, world: World) -> np.ndarray:
    """This rank's rows of one global batch: every ``size``-th, from ``rank`` (shares differ by at most one)."""
    return batch[world.rank :: world.size]


def check_batches(rows: int, batches: int, world: World) -> None:
    """Every rank needs a row of every batch (an empty share has no loss to take part in the step with)."""
    smallest = rows // batches
    if smallest < world.size:
        raise KfloopError(
            f"train split: {rows:,} rows in batches of at least {smallest:,} cannot give each of training.workers "
            f"{world.size} processes a row of every batch (fewer workers, or more data)"
        )


def wrap(net: Any, world: World) -> Any:
    """``net`` as DistributedDataParallel: it starts from rank 0's weights and averages gradients in backward."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(net, device_ids=[world.local_rank] if world.device == "gpu" else None)


def _tensor(values: list[float], world: World) -> Any:
    import torch

    device = f"cuda:{world.local_rank}" if world.device == "gpu" else "cpu"
    return torch.tensor(values, dtype=torch.float64, device=device)


def total(value: float, world: World) -> float:
    """The sum of ``value`` over the ranks."""
    import torch.distributed as dist

    tensor = _tensor([value], world)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return float(tensor.item())


def agreed_mean(value: float, world: World) -> float:
    """The mean of ``value`` over the ranks, as rank 0 computed it: one number every rank decides on."""
    import torch.distributed as dist

    tensor = _tensor([total(value, world) / world.size], world)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())


__all__ = [
    "BACKENDS",
    "ENV_VARS",
    "World",
    "agreed_mean",
    "check_batches",
    "cuda_device",
    "current",
    "from_env",
    "process_group",
    "shard",
    "total",
    "wrap",
]
