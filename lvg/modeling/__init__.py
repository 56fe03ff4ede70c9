"""The PyTorch Latent-VG model, its checkpoints, its cost (parameters, FLOPs) and a runner that feeds it numpy
batches (:mod:`lvg.modeling.runner`)."""

from __future__ import annotations

from lvg.config import ModelConfig, get_config
from lvg.modeling.latent_vg import LatentVG


def build_model(cfg: ModelConfig | str, *, impl: str | None = None) -> LatentVG:
    """Build a randomly initialised model from a config or a variant name (``"lvg-b"``).

    ``impl`` overrides ``cfg.kernel_impl`` ("reference" | "triton" | "auto") for the VCI kernels.
    """
    if isinstance(cfg, str):
        cfg = get_config(cfg)
    if impl is not None:
        cfg = cfg.replace(kernel_impl=impl)
    return LatentVG(cfg)


from lvg.modeling.checkpoint import (  # noqa: E402  (needs build_model)
    LoadReport,
    load_beit3_pretrained,
    load_checkpoint,
    load_weights,
    resolve_device,
    save_checkpoint,
)

__all__ = [
    "LatentVG",
    "LoadReport",
    "build_model",
    "load_beit3_pretrained",
    "load_checkpoint",
    "load_weights",
    "resolve_device",
    "save_checkpoint",
]
