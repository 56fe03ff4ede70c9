"""Data-parallel plumbing for ``torchrun``: process-group setup, exact sharding, small collectives.

Under ``torchrun --nproc_per_node K`` every process has ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` in its
environment; :func:`init_distributed` reads them. Without them (``WORLD_SIZE`` unset or 1) everything
here degrades to the single-process case and never touches ``torch.distributed``.

Sharding (training), decided: each epoch is a seeded permutation of the ``n`` training samples cut into
global batches of ``batch_size * world_size``; rank ``r`` takes slice ``r`` of each global batch. The last
``n mod (batch_size * world_size)`` samples of a permutation (fewer than one global batch) are DROPPED, so
within an epoch every sample is seen at most once, by exactly one rank, and all but those few exactly once.
The permutation changes every epoch, so a different tail is dropped each time. No sample is ever padded
(duplicated), which keeps the gradient an unbiased mean and the epoch length identical on all ranks.

Sharding (evaluation): rank ``r`` takes sentences ``r, r + K, r + 2K, ...``: all sentences exactly once,
no padding (ranks may differ by one sentence; their metric sums are added, not averaged).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from lvg.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job. ``world_size == 1`` means no process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes checkpoints, logs and progress bars."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def init_distributed(device_type: str) -> DistInfo:
    """Join the ``torchrun`` process group if ``WORLD_SIZE > 1`` (gloo on CPU, nccl on CUDA).

    Idempotent: an already initialised default group is reused.
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistInfo()
    local = _env_int("LOCAL_RANK", 0)
    if not dist.is_available():  # pragma: no cover - every official build has it
        raise ConfigError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local)


def cleanup_distributed(*, synchronise: bool = False) -> None:
    """Leave the process group. ``synchronise`` (a run that ended normally on every rank) waits for all ranks
    first: a rank that tears gloo down while another still has a collective in flight can abort it at exit."""
    if dist.is_available() and dist.is_initialized():
        if synchronise:
            dist.barrier()
        dist.destroy_process_group()


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True if ``flag`` is true on any rank (all ranks get the same answer; used to stop together)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def mean_over_ranks(values: list[float], info: DistInfo, device: torch.device) -> list[float]:
    """Element-wise mean of a list of floats over ranks (for logging)."""
    if not info.enabled or not values:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return (t / info.world_size).tolist()


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` (picklable, small: metric sums, RNG states), in rank order, on every rank."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The seeded order of ``n`` samples for ``epoch`` (identical on every rank and after a resume)."""
    g = torch.Generator()
    g.manual_seed((int(seed) * 1_000_003 + int(epoch)) % (2**63))
    return torch.randperm(n, generator=g)


class ShardedBatchSampler:
    """Per-rank batches of one epoch, optionally starting mid-epoch (for an exact resume).

    Yields ``steps_per_epoch - start_step`` lists of ``batch_size`` dataset indices. See the module
    docstring for the sharding rule. Usable as a ``DataLoader`` ``batch_sampler``.
    """

    def __init__(self, n: int, batch_size: int, *, rank: int = 0, world_size: int = 1, seed: int = 0,
                 epoch: int = 0, start_step: int = 0) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of {world_size}")
        global_batch = batch_size * world_size
        if n < global_batch:
            raise ConfigError(
                f"the training split has {n} samples, fewer than one global batch of {global_batch} "
                f"({batch_size} per process x {world_size} processes)"
            )
        self.n, self.batch_size, self.rank, self.world_size = n, batch_size, rank, world_size
        self.seed, self.epoch, self.start_step = seed, epoch, start_step

    @staticmethod
    def steps_per_epoch(n: int, batch_size: int, world_size: int = 1) -> int:
        return n // (batch_size * world_size)

    def __len__(self) -> int:
        return max(0, self.steps_per_epoch(self.n, self.batch_size, self.world_size) - self.start_step)

    def __iter__(self) -> Iterator[list[int]]:
        perm = epoch_permutation(self.n, self.seed, self.epoch)
        b, g = self.batch_size, self.batch_size * self.world_size
        for step in range(self.start_step, self.steps_per_epoch(self.n, b, self.world_size)):
            lo = step * g + self.rank * b
            yield perm[lo : lo + b].tolist()


def eval_shard(n: int, info: DistInfo) -> list[int]:
    """Indices ``rank, rank + K, ...`` of ``n`` evaluation sentences for this rank."""
    return list(range(info.rank, n, info.world_size))


__all__ = [
    "DistInfo",
    "ShardedBatchSampler",
    "any_rank",
    "barrier",
    "broadcast_object",
    "cleanup_distributed",
    "epoch_permutation",
    "eval_shard",
    "gather_objects",
    "init_distributed",
    "mean_over_ranks",
]
