"""Latent-VG: referring image segmentation, comprehension and generalized RIS on a BEiT-3 encoder.

Importing ``lvg`` is cheap and torch-free; the PyTorch model lives in ``lvg.modeling``. The embedding
API is ``lvg.Grounder`` (loaded on first use)::

    g = lvg.Grounder.load("model.onnx")
    result = g.predict("photo.jpg", "man on left")               # or an (H, W, 3) array, channel_order="bgr"
    for r in g.stream(frames, "the red car"): ...                 # the next frame is prepared meanwhile

Scale-out on Ray Data: :mod:`lvg.integrations.ray` (the ``ray`` extra).
"""

from __future__ import annotations

# No `typing` import: this module runs before the CLI's Ctrl-C handler is installed, so it imports as little
# as it can (a signal inside a slow import here would print a traceback).
from lvg._lazy import lazy_getattr
from lvg._version import __version__
from lvg.errors import ArtifactError, CheckpointError, InputError, LVGError, MissingDependencyError

__all__ = [
    "ArtifactError",
    "CheckpointError",
    "Grounder",
    "InputError",
    "LVGError",
    "MissingDependencyError",
    "Region",
    "Result",
    "__version__",
]

# Loaded on first use: `import lvg` must stay light (no onnxruntime import until a Grounder is wanted).
__getattr__ = lazy_getattr(__name__, {
    "Grounder": "lvg.runtime.grounder",
    "Result": "lvg.runtime.result",
    "Region": "lvg.core.regions",
})


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
