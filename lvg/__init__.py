"""Latent-VG: referring image segmentation, comprehension and generalized RIS on a BEiT-3 encoder.

Importing ``lvg`` is cheap and torch-free; the PyTorch model lives in ``lvg.modeling``.
"""

from lvg.errors import LVGError

__version__ = "0.1.0"

__all__ = ["LVGError", "__version__"]
