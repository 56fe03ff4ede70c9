"""Lazy Triton plumbing shared by the kernel files.

Triton is an optional extra (``gpu``), and importing ``lvg.kernels`` must not import it. The kernels are
therefore written as plain module-level functions in ``tl`` (Triton's language module) and wrapped in a
:class:`LazyKernel`; ``triton.jit`` runs on the first launch, which is also when ``tl`` is bound in the
kernel's module. Until then nothing here touches triton.

``TRITON_INTERPRET=1`` (Triton's CPU interpreter, for tests) must be set before triton is first imported in
the process: triton jits its own ``tl.*`` helpers at import time, in the mode then active.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``).

    Reads the variable itself rather than ``triton.knobs`` (whose C getter ``torch.compile`` cannot trace).
    """
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on", "yes")


def next_pow2(x: int) -> int:
    """The smallest power of two >= ``x`` (Triton block shapes must be powers of two)."""
    return 1 << max(int(x) - 1, 0).bit_length()


def cdiv(a: int, b: int) -> int:
    """Ceil division (``triton.cdiv``, usable on SymInts and without importing triton)."""
    return -(-a // b)


class LazyKernel:
    """A Triton kernel written as a plain function; ``triton.jit`` runs on first use.

    ``kernel[grid](*args, **meta)`` launches it through ``torch.library.wrap_triton``, so that calls inside
    a ``torch.library.triton_op`` are traceable by ``torch.compile`` / ``torch.export``.
    """

    def __init__(self, fn: Callable[..., None]) -> None:
        self.fn = fn
        self._jitted: Any = None

    def jitted(self) -> Any:
        """The ``triton.jit`` kernel (an ``InterpretedFunction`` under ``TRITON_INTERPRET=1``)."""
        if self._jitted is None:
            import triton
            import triton.language

            # The kernel source names ``tl``; its module only imports it under TYPE_CHECKING.
            self.fn.__globals__["tl"] = triton.language
            self._jitted = triton.jit(self.fn)
        return self._jitted

    def __getitem__(self, grid: tuple[int, ...]) -> Callable[..., Any]:
        from torch.library import wrap_triton

        return wrap_triton(self.jitted())[grid]


def lazy_jit(fn: Callable[..., None]) -> LazyKernel:
    """Decorator: a :class:`LazyKernel` (``triton.jit`` deferred to the first launch)."""
    return LazyKernel(fn)


def dot_precision(dtype: Any) -> str:
    """``tl.dot`` input precision for ``dtype``: fp32 inputs follow torch's TF32 switch, as torch matmuls do."""
    import torch

    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"
