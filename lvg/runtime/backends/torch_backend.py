"""PyTorch backend for ``.safetensors`` checkpoints: the reference path, and the only one that returns
per-expression attention maps (paper Fig. 4).

This module imports nothing from torch at import time; torch and :mod:`lvg.modeling` are imported when a
:class:`TorchBackend` is constructed (the ``torch`` extra). One model is loaded once; calls run under
``torch.inference_mode`` and a lock, so concurrent ``run`` calls are safe (and serialised).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from lvg.errors import CheckpointError, LVGError, require
from lvg.runtime.artifact import checkpoint_info
from lvg.runtime.backends.base import Backend, BackendOutput

__all__ = ["TorchBackend"]


class TorchBackend(Backend):
    """Runs a checkpoint with the PyTorch model. ``device``: ``"auto"`` (CUDA if available), ``"cpu"``,
    ``"cuda"`` / ``"cuda:N"``; ``impl``: the VCI kernel implementation (``None`` = the config's)."""

    name = "torch"

    def __init__(self, path: str | os.PathLike[str], *, device: str = "auto", impl: str | None = None) -> None:
        p = Path(path)
        info = checkpoint_info(p)  # torch-free header read: clear errors before the heavy import
        super().__init__(info)
        torch = require("torch", extra="torch", purpose="running .safetensors checkpoints")
        require("safetensors", extra="torch", purpose="reading .safetensors checkpoints")
        from lvg.modeling.checkpoint import load_checkpoint, resolve_device

        self._torch = torch
        self._device = resolve_device(device)
        try:
            self._model = load_checkpoint(p, impl=impl, device=self._device)
        except LVGError:
            raise
        except Exception as exc:  # safetensors / torch errors on corrupt data: one line, typed
            raise CheckpointError(f"{p} cannot be loaded ({_first_line(exc)})") from None
        self._lock = threading.Lock()

    @property
    def device(self) -> str:
        return f"torch:{self._device}"

    @property
    def supports_attention(self) -> bool:
        return True

    @property
    def model(self):
        """The underlying ``LatentVG`` module (eval mode)."""
        return self._model

    def run(
        self, image: np.ndarray, text_ids: np.ndarray, text_mask: np.ndarray, *, return_attention: bool = False
    ) -> BackendOutput:
        self.check_inputs(image, text_ids, text_mask)
        torch = self._torch
        with self._lock, torch.inference_mode():
            out = self._model(
                torch.from_numpy(np.ascontiguousarray(image)).to(self._device),
                torch.from_numpy(np.ascontiguousarray(text_ids)).to(self._device),
                torch.from_numpy(np.ascontiguousarray(text_mask)).to(self._device),
                return_attention=return_attention,
            )
            prob = out["prob"].float().cpu().numpy()
            nt = out["no_target_logit"].float().cpu().numpy() if "no_target_logit" in out else None
            att = out["attention"].float().cpu().numpy() if return_attention else None
        return BackendOutput(prob=prob, no_target_logit=nt, attention=att)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
