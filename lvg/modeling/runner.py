"""A live PyTorch model behind the numpy contract of :mod:`lvg.core.outputs`.

The runtime's torch backend runs checkpoints through it, and training scores its model with it, so an
evaluation sees the same outputs whether the model came from a file or from the optimizer a step ago.

Precision: ``precision="bf16"`` runs a model whose weights :func:`cast_model` made bf16 (pure bf16 matrix
products, on the CPU's AVX512-BF16 / AMX units or a GPU's tensor cores) on bf16 images. What needs fp32
stays fp32 inside the model itself: the VCI's patch scores and mean threshold, the sigmoid and average of
the probability maps; LayerNorm and softmax accumulate in fp32 inside torch's bf16 kernels. Outputs are
float32 either way.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lvg.config import ModelConfig
from lvg.core.outputs import ModelOutput

__all__ = ["DTYPES", "ArrayRunner", "cast_model"]

#: Precision names -> the dtype of the weights and activations.
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def cast_model(model: nn.Module, precision: str) -> nn.Module:
    """``model`` with its floating-point weights in ``precision`` (``"fp32"`` or ``"bf16"``), in place.

    Done once when a model is loaded for inference (``TorchBackend(precision=...)``); a model being
    trained keeps its fp32 weights (training uses autocast instead).
    """
    if precision not in DTYPES:
        raise ValueError(f"precision must be one of {', '.join(DTYPES)}, got {precision!r}")
    return model.to(DTYPES[precision])


class ArrayRunner:
    """Runs ``model`` (a :class:`~lvg.modeling.LatentVG`, or anything with its ``cfg`` and output dict) on
    numpy batches placed on ``device``, in eval mode and without autograd; the caller's train / eval mode is
    restored after every call. Not thread-safe by itself (the torch backend holds a lock around it).
    Images enter the model in the dtype of its weights (see :func:`cast_model`).
    """

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu") -> None:
        self.model = model
        self.device = torch.device(device)

    @property
    def precision(self) -> str:
        """``"bf16"`` when the model's weights are bfloat16 (:func:`cast_model`), else ``"fp32"``."""
        weight = next(self.model.parameters(), None)
        return "bf16" if weight is not None and weight.dtype == torch.bfloat16 else "fp32"

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
        inputs[0] = inputs[0].to(DTYPES[self.precision])
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
