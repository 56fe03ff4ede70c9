"""Read-ahead for :meth:`lvg.runtime.grounder.Grounder.stream`: a background thread prepares the next frames
while the caller's thread runs the model on the current ones.

Decoding and letterboxing a frame costs about as much as the bundled model's inference on a CPU; both
release the GIL for most of their time (Pillow's decoders and resizers, ONNX Runtime's kernels), so doing
them in two threads hides most of the preparation. The queue between them is bounded (two chunks), so a
fast camera cannot fill memory, and the thread stops as soon as the consumer stops iterating.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from lvg.errors import LVGError

__all__ = ["prefetch"]

T = TypeVar("T")

_END = object()


class _Failure:
    """What iterating the caller's frames raised, carried to the consumer's thread."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def prefetch(items: Iterable[Any], prepare: Callable[[Any], T], chunk: int, *,
             depth: int = 2) -> Iterator[list[T | LVGError]]:
    """Chunks of ``chunk`` prepared items (the last one may be shorter), in order, prepared ahead in a thread.

    An item that ``prepare`` refuses with an :class:`LVGError` is passed on as that error, in its place; any
    other exception of ``prepare`` or of iterating ``items`` is re-raised in the consumer's thread after the
    chunks before it. Closing the iterator (``break``, garbage collection) stops the thread.
    """
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(obj: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(obj, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        batch: list[T | LVGError] = []
        try:
            for item in items:
                if stop.is_set():
                    return
                try:
                    batch.append(prepare(item))
                except LVGError as exc:
                    batch.append(exc)
                if len(batch) == chunk:
                    if not put(batch):
                        return
                    batch = []
            if batch and not put(batch):
                return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, who re-raises it
            if batch and not put(batch):
                return
            put(_Failure(exc))
            return
        put(_END)

    thread = threading.Thread(target=work, name="lvg-stream-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            got = q.get()
            if got is _END:
                return
            if isinstance(got, _Failure):
                raise got.exc
            yield got
    finally:
        stop.set()
        thread.join(timeout=5.0)
