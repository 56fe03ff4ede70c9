"""An independent reference for the region rule of :mod:`lvg.core.regions`: a breadth-first flood fill, pixel by
pixel (slow, only for test-sized masks)."""

from __future__ import annotations

from collections import deque

import numpy as np


def reference_components(mask: np.ndarray) -> list[np.ndarray]:
    """The 8-connected components of a (H, W) bool mask as bool masks, in scan order of their first pixel."""
    h, w = mask.shape
    seen = np.zeros((h, w), dtype=bool)
    out = []
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        comp = np.zeros((h, w), dtype=bool)
        queue = deque([(y, x)])
        seen[y, x] = True
        while queue:
            a, b = queue.popleft()
            comp[a, b] = True
            for c in range(max(a - 1, 0), min(a + 2, h)):
                for d in range(max(b - 1, 0), min(b + 2, w)):
                    if mask[c, d] and not seen[c, d]:
                        seen[c, d] = True
                        queue.append((c, d))
        out.append(comp)
    return out


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def reference_main_box(mask: np.ndarray, prob: np.ndarray) -> tuple[int, int, int, int] | None:
    """The box the answer must have: the box of the component holding the highest probability (to 1e-6); ties:
    the larger, then the higher mean probability to 1e-6, then the first in scan order, which is the order the
    components come in (``max`` keeps the first best). Specks (under 5% of the largest area) never lead."""
    comps = reference_components(mask)
    if not comps:
        return None
    largest = max(int(c.sum()) for c in comps)
    kept = [c for c in comps if c.sum() >= 0.05 * largest]
    best = max(kept, key=lambda c: (round(float(prob[c].max()), 6), int(c.sum()),
                                    round(float(prob[c].mean(dtype=np.float64)), 6)))
    return tight_box(best)
