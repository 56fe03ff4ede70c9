"""Where lvg keeps what it fetches and compiles: ``$LVG_HOME``, default ``~/.cache/lvg`` (torch-free)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_home"]


def cache_home() -> Path:
    """``$LVG_HOME``, default ``~/.cache/lvg`` (``~`` expanded in either)."""
    return Path(os.environ.get("LVG_HOME") or Path.home() / ".cache" / "lvg").expanduser()
