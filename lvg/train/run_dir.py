"""What a run does around its steps: the output directory, ``log.jsonl`` and the stop signal.

Files (written by rank 0 only; the checkpoints are :mod:`lvg.train.state`'s)::

    <out>/log.jsonl          one JSON object per line: {"kind": "train"|"eval"|"event", "step": ..., ...}
    <out>/train_config.json  the run's TrainConfig
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from lvg.core.atomic import atomic_output
from lvg.errors import InputError

__all__ = ["CONFIG_FILE", "LOG_FILE", "JsonlLog", "StopFlag", "check_output_dir", "checkpoint_bytes",
           "ignore_stop_signals", "read_log", "truncate_log"]

LOG_FILE, CONFIG_FILE = "log.jsonl", "train_config.json"

log = logging.getLogger("lvg.train")


def check_output_dir(out_dir: Path, needed_bytes: int) -> None:
    """Create ``out_dir`` and make sure a file can be written there and ``needed_bytes`` are free."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output directory {out_dir}: {exc.strerror or exc}") from None
    if not out_dir.is_dir():
        raise InputError(f"output path {out_dir} is not a directory")
    probe = out_dir / f".write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"output directory {out_dir} is not writable: {exc.strerror or exc}") from None
    free = shutil.disk_usage(out_dir).free
    if free < needed_bytes:
        raise InputError(
            f"output directory {out_dir} has {free / 2**20:.0f} MiB free; checkpoints of this model need about "
            f"{needed_bytes / 2**20:.0f} MiB"
        )


def checkpoint_bytes(model: nn.Module) -> int:
    """Disk space the checkpoints of a run of ``model`` take at most."""
    n = sum(p.numel() * p.element_size() for p in model.parameters())
    # model + 2 AdamW moments, in last + prev + the temp file of the next save, plus best.
    return n * 3 * 3 + n


class StopFlag:
    """SIGINT/SIGTERM set a flag; the loop finishes its step, checkpoints and returns."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C aborts at once
        self.requested = True
        log.warning("signal %s received: stopping after this step and writing a checkpoint", signum)

    def __enter__(self) -> StopFlag:
        # Signal handlers can only be installed from the main thread (a run started from another thread,
        # as some tests and notebooks do, then keeps the default handlers).
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def ignore_stop_signals(worker_id: int) -> None:
    """In a data-loading worker: ignore SIGINT and SIGTERM. Ctrl-C and ``systemctl stop`` signal the whole
    process group; a worker that died of it would make the trainer raise mid-step instead of finishing the
    step and checkpointing. The trainer ends its workers itself, and they exit when it dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class JsonlLog:
    """Appends records to ``log.jsonl``, each stamped with the time; ``path=None`` (ranks other than 0)
    writes nothing."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        record = {"time": round(time.time(), 3), **record}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


def read_log(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of ``<out_dir>/log.jsonl`` (a torn last line after a crash is ignored)."""
    path = Path(out_dir) / LOG_FILE
    records = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def truncate_log(out_dir: str | os.PathLike, step: int) -> None:
    """Cut ``<out_dir>/log.jsonl`` back to the records of steps up to ``step`` (the step a resumed run continues
    from): the records a killed run wrote after its last checkpoint are dropped, so the steps it runs again
    are logged once. Records without a step and torn lines are dropped with them only when they follow."""
    path = Path(out_dir) / LOG_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    except FileNotFoundError:
        return
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the run's log {path}: {exc}") from None
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break  # a torn line: the run was killed while writing it
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] > step:
            break
        kept.append(line if line.endswith("\n") else line + "\n")
    if len(kept) == len(lines):
        return
    try:
        with atomic_output(path) as tmp:
            tmp.write_text("".join(kept), encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot rewrite the run's log {path}: {exc.strerror or exc}") from None
