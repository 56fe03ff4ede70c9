"""What the kernels' PyTorch references share about precision."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from torch import Tensor

__all__ = ["without_autocast"]


def without_autocast(t: Tensor) -> AbstractContextManager[object]:
    """A context in which ops on ``t``'s device run in their inputs' dtype even inside an autocast region.

    The references upcast to fp32 where rounding matters (a mean threshold, softmax logits of large tokens);
    autocast would run their einsums in bf16 / fp16 whatever the inputs' dtype. Devices autocast does not
    know (``meta``, used to plan shapes and count FLOPs) get a no-op.
    """
    kind = t.device.type
    try:
        active = torch.is_autocast_enabled(kind)
    except RuntimeError:  # a device type autocast has no state for
        active = False
    return torch.autocast(kind, enabled=False) if active else nullcontext()
