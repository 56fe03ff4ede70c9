"""Model and preprocessing configuration: frozen dataclasses (:mod:`lvg.config.model`) and the named variants
(:mod:`lvg.config.variants`).

This package is torch-free: the runtime reads configs from exported artifacts without PyTorch.
Every config round-trips through JSON (``to_json`` / ``from_json``); that JSON is what travels
inside checkpoints (safetensors metadata) and exported artifacts (ONNX ``metadata_props``).
"""

from lvg.config.model import (
    MAP_STRIDES,
    ClassPool,
    ConceptInit,
    EncoderConfig,
    HeadConfig,
    KernelImpl,
    LatentConfig,
    ModelConfig,
    PositionInit,
    PreprocessConfig,
    ThresholdRule,
)
from lvg.config.typed import dataclass_from_dict
from lvg.config.variants import get_config, list_variants, unknown_variant

__all__ = ["MAP_STRIDES", "ClassPool", "ConceptInit", "EncoderConfig", "HeadConfig", "KernelImpl", "LatentConfig",
           "ModelConfig", "PositionInit", "PreprocessConfig", "ThresholdRule", "dataclass_from_dict", "get_config",
           "list_variants", "unknown_variant"]
