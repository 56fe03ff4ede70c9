"""A live PyTorch model behind the numpy contract of :mod:`lvg.core.outputs`.

The runtime's torch backend runs checkpoints through it, and training scores its model with it, so an
evaluation sees the same outputs whether the model came from a file or from the optimizer a step ago.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lvg.config import ModelConfig
from lvg.core.outputs import ModelOutput

__all__ = ["ArrayRunner"]


class ArrayRunner:
    """Runs ``model`` (a :class:`~lvg.modeling.LatentVG`, or anything with its ``cfg`` and output dict) on
    numpy batches placed on ``device``, in eval mode and without autograd; the caller's train / eval mode is
    restored after every call. Not thread-safe by itself (the torch backend holds a lock around it).
    """

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu") -> None:
        self.model = model
        self.device = torch.device(device)

    @property
    def config(self) -> ModelConfig:
        return self.model.cfg  # type: ignore[return-value]

    @property
    def supports_expressions(self) -> bool:
        return True

    def run_arrays(self, images: np.ndarray, text_ids: np.ndarray, text_mask: np.ndarray, *,
                   return_attention: bool = False, return_expressions: bool = False) -> ModelOutput:
        """``images`` float32 (B, 3, S, S), ``text_ids`` int64 (B, L), ``text_mask`` bool (B, L) ->
        :class:`~lvg.core.outputs.ModelOutput` (float32 arrays on the CPU)."""
        inputs = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in (images, text_ids, text_mask)]
        # Only asked for when wanted, so a model without attention probes may stand in for LatentVG.
        extra = {"return_attention": True} if return_attention else {}
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                out = self.model(*inputs, **extra)
        finally:
            self.model.train(was_training)
        return ModelOutput(
            prob=_numpy(out["prob"]),
            no_target_logit=_numpy(out["no_target_logit"]) if "no_target_logit" in out else None,
            expression_prob=_numpy(out["expression_prob"]) if return_expressions else None,
            attention=_numpy(out["attention"]) if return_attention else None,
        )


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.float().cpu().numpy()
