"""Suite-wide settings: small thread pools (CI has 2 cores) and deterministic seeds."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
