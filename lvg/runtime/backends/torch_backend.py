"""PyTorch backend for ``.safetensors`` checkpoints: the reference path, and the only one that returns
per-expression probability maps and attention maps (paper Fig. 4).

This module imports nothing from torch at import time; torch and :mod:`lvg.modeling` are imported when a
:class:`TorchBackend` is constructed (the ``torch`` extra). One model is loaded once and run through
:class:`lvg.modeling.runner.ArrayRunner` under a lock, so concurrent ``run`` calls are safe (and serialised).

``precision="bf16"`` loads the weights as bf16 (:func:`lvg.modeling.runner.cast_model`); ``"auto"`` does so on
a CPU with bf16 instructions (:func:`lvg.core.precision.choose_precision`), fp32 elsewhere.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from lvg.core.model_file import ModelFile
from lvg.core.outputs import ModelOutput
from lvg.core.precision import CpuFeatures, choose_precision
from lvg.errors import CheckpointError, LVGError, first_line, require
from lvg.runtime.backends.base import Backend

__all__ = ["TorchBackend"]


class TorchBackend(Backend):
    """Runs a checkpoint with the PyTorch model. ``device``: ``"auto"`` (CUDA if available), ``"cpu"``,
    ``"cuda"`` / ``"cuda:N"``; ``impl``: the VCI kernel implementation (``None`` = the config's);
    ``precision``: ``"auto"``, ``"fp32"`` or ``"bf16"``; ``features``: the CPU's flags (default: read)."""

    name = "torch"

    def __init__(self, path: str | os.PathLike[str] | ModelFile, *, device: str = "auto",
                 impl: str | None = None, precision: str = "auto", features: CpuFeatures | None = None) -> None:
        # The header is read (torch-free) first: clear errors before the heavy import.
        super().__init__(ModelFile.open(path, checkpoint=True))
        require("torch", extra="torch", purpose="running .safetensors checkpoints")
        require("safetensors", extra="torch", purpose="reading .safetensors checkpoints")
        from lvg.modeling.checkpoint import load_checkpoint, resolve_device
        from lvg.modeling.runner import ArrayRunner, cast_model

        self._device = resolve_device(device)
        choice = choose_precision(precision, kind="torch", gpu=self._device.type != "cpu", features=features)
        try:
            model = cast_model(load_checkpoint(self.model_file, impl=impl, device=self._device), choice.precision)
        except LVGError:
            raise
        except Exception as exc:  # safetensors / torch errors on corrupt data: one line, typed
            raise CheckpointError(f"{self.info.path} cannot be loaded ({first_line(exc)})") from None
        self._runner = ArrayRunner(model, self._device)
        self._lock = threading.Lock()

    @property
    def device(self) -> str:
        return f"torch:{self._device}"

    @property
    def on_cpu(self) -> bool:
        return self._device.type == "cpu"

    @property
    def precision(self) -> str:
        return self._runner.precision

    @property
    def supports_attention(self) -> bool:
        return True

    @property
    def supports_expressions(self) -> bool:
        return True

    @property
    def model(self):
        """The underlying ``LatentVG`` module (eval mode)."""
        return self._runner.model

    def run(
        self, image: np.ndarray, text_ids: np.ndarray, text_mask: np.ndarray, *, return_attention: bool = False,
        return_expressions: bool = False,
    ) -> ModelOutput:
        self.check_inputs(image, text_ids, text_mask)
        with self._lock:
            return self._runner.run_arrays(image, text_ids, text_mask, return_attention=return_attention,
                                           return_expressions=return_expressions)
