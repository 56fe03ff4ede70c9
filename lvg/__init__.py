"""Latent-VG: referring image segmentation, comprehension and generalized RIS on a BEiT-3 encoder.

Importing ``lvg`` is cheap and torch-free; the PyTorch model lives in ``lvg.modeling``. The embedding
API is ``lvg.Grounder`` (loaded on first use)::

    g = lvg.Grounder.load("model.onnx")
    result = g.predict("photo.jpg", "man on left")
"""

from __future__ import annotations

from typing import Any

from lvg._version import __version__
from lvg.errors import LVGError

__all__ = ["Grounder", "LVGError", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy: `import lvg` must stay light (no onnxruntime import until a Grounder is wanted).
    if name == "Grounder":
        from lvg.runtime.grounder import Grounder

        return Grounder
    raise AttributeError(f"module 'lvg' has no attribute {name!r}")
