"""A dependency-free progress bar (stderr), so the torch-free runtime needs no tqdm.

Training, evaluation, export and the benchmarks report progress through :func:`progress`; none of them
depends on the command line for it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any


class Progress:
    """``for x in Progress(items, desc="eval"): ...`` or manual ``update(n)`` / ``set_postfix(**kv)``."""

    def __init__(self, iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "",
                 disable: bool = False) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.disable = total, desc, disable
        self.n, self.start, self.postfix, self._last = 0, time.perf_counter(), "", 0.0

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
        self._draw()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self._last > 0.2 or (self.total is not None and self.n >= self.total):
            self._last = now
            self._draw()

    def _draw(self) -> None:
        if self.disable:
            return
        elapsed = time.perf_counter() - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        if self.total:
            frac = min(self.n / self.total, 1.0)
            bar = "#" * int(frac * 24)
            text = f"\r{self.desc} [{bar:<24}] {self.n}/{self.total} {rate:.2f}it/s {self.postfix}"
        else:
            text = f"\r{self.desc} {self.n} {rate:.2f}it/s {self.postfix}"
        sys.stderr.write(text[:200])
        sys.stderr.flush()

    def close(self) -> None:
        if not self.disable and self.n:
            self._draw()
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.disable = True


def progress(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "",
             disable: bool | None = None) -> Progress:
    """A :class:`Progress` bar on stderr; ``disable=None`` hides it when stderr is not a terminal."""
    if disable is None:
        disable = not sys.stderr.isatty()
    return Progress(iterable, total=total, desc=desc, disable=disable)
