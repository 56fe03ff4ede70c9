"""Where the synthetic-data diagnostics (``bench_synth_kinds.py``, ``bench_fit_batch.py``) write their JSON."""

from __future__ import annotations

import datetime as dt
import json
import platform
from pathlib import Path
from typing import Any


def write_result(result: dict[str, Any], out_dir: Path, filename: str) -> Path:
    """Add the date, machine and torch version to ``result``, write it as ``out_dir/filename`` and say so."""
    import torch

    result.update({"date": dt.date.today().isoformat(), "machine": platform.machine(), "torch": torch.__version__})
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / filename
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return path
