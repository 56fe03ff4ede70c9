"""Gradient accumulation: one optimizer step over a batch run through the model in smaller pieces.

The paper trains with 64 samples per step on four GPUs (16 each). :meth:`TrainConfig.for_world
<lvg.train.config.TrainConfig.for_world>` keeps the 64 on any number of processes, and ``micro_batch``
caps what one forward pass holds: a process's batch is split into micro-batches whose losses, weighted by
their share of the batch, are back-propagated one after another before the step. Every loss that is a mean
over samples (BCE, Dice, no-target) then gives the gradient of the whole batch exactly; the contrastive term
takes its negatives within a micro-batch, as it takes them within a GPU's share under DDP.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["micro_batches", "sync_last"]


def micro_batches(batch: dict[str, Any], micro_batch: int) -> list[tuple[dict[str, Any], float]]:
    """``batch`` split along its first dimension into pieces of at most ``micro_batch`` samples (0: one piece),
    each with its share of the batch (the pieces' shares sum to 1). Lists are split like tensors."""
    n = next(len(v) for v in batch.values() if isinstance(v, (Tensor, list, tuple)))
    if micro_batch <= 0 or micro_batch >= n:
        return [(batch, 1.0)]
    pieces = -(-n // micro_batch)
    bounds = [round(i * n / pieces) for i in range(pieces + 1)]  # near-equal sizes
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        part = {k: v[lo:hi] if isinstance(v, (Tensor, list, tuple)) and len(v) == n else v for k, v in batch.items()}
        out.append((part, (hi - lo) / n))
    return out


def sync_last(model: torch.nn.Module, last: bool) -> Any:
    """A DDP model's ``no_sync()`` for every piece but the last (gradients are all-reduced once per step)."""
    from contextlib import nullcontext

    no_sync = getattr(model, "no_sync", None)
    return nullcontext() if last or no_sync is None else no_sync()
