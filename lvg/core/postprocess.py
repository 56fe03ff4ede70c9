"""From the model's probability map to a mask, a box and a score at the original image size (SPEC 3.5).

Thresholds are strict: a pixel is in the mask when its probability is ``> mask_threshold`` (0.35 by
default), and a GRES sample is "no target" when ``sigmoid(no_target_logit) > no_target_threshold``
(0.5). This matches ``prob > t`` as written in PyTorch evaluation code.

The box is the box of the mask's main region, not of every mask pixel: the mask is split into 8-connected
regions, specks (under 5% of the largest region's area) are dropped, and the box is that of the region
holding the map's highest probability (:mod:`lvg.core.regions`). The regions are also returned, one per
separate target, as GRES ``instances``.
Evaluation (``lvg eval --task rec``) scores this same box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lvg.core.preprocess import Letterbox, unletterbox
from lvg.core.regions import Region, find_regions, main_first
from lvg.errors import InputError

__all__ = ["Box", "Prediction", "box_from_mask", "check_mask_threshold", "mask_from_prob", "postprocess"]

#: ``(x1, y1, x2, y2)`` in pixel-edge coordinates of the original image; ``x2`` / ``y2`` are exclusive.
Box = tuple[int, int, int, int]


def check_mask_threshold(value: object) -> float:
    """``value`` as a mask threshold in [0, 1), else an :class:`InputError` naming it."""
    try:
        t = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"mask threshold must be a number, got {value!r}") from None
    if not 0.0 <= t < 1.0:  # NaN fails this too
        raise InputError(f"mask threshold must be in [0, 1), got {value!r}")
    return t


def mask_from_prob(prob: np.ndarray, lb: Letterbox, threshold: float = 0.35) -> np.ndarray:
    """Undo the letterbox on a (h, w) probability map and threshold it: bool (orig_h, orig_w), ``p > threshold``."""
    return unletterbox(prob, lb) > np.float32(threshold)


def box_from_mask(mask: np.ndarray) -> Box | None:
    """Tight box around a (H, W) bool mask: ``(x1, y1, x2, y2)`` with ``x2 = max column + 1``,
    ``y2 = max row + 1`` (so width = x2 - x1). ``None`` for an empty mask."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size == 0:
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


@dataclass(frozen=True)
class Prediction:
    """One image-text prediction at the original image resolution.

    Attributes:
        mask: bool (H, W) segmentation mask (all False when ``no_target``).
        box: ``(x1, y1, x2, y2)`` box of the mask's main region (edges, x2 / y2 exclusive), ``None`` if empty.
        score: mean probability inside the mask, 0.0 for an empty mask.
        no_target: the GRES head said the expression refers to nothing (always False for RIS models).
        prob: float32 (H, W) probability map (letterbox undone), before thresholding.
        no_target_prob: ``sigmoid(no_target_logit)`` for GRES models, ``None`` otherwise.
        regions: the mask's regions without specks: the main region (the one holding the highest
            probability, ``regions[0].box == box``), then the others largest first.
    """

    mask: np.ndarray
    box: Box | None
    score: float
    no_target: bool
    prob: np.ndarray
    no_target_prob: float | None = None
    regions: tuple[Region, ...] = ()


def _sigmoid(x: float) -> float:
    # Numerically stable for large |x| (math.exp overflows past ~709).
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def postprocess(
    prob: np.ndarray,
    lb: Letterbox,
    *,
    mask_threshold: float = 0.35,
    no_target_logit: float | None = None,
    no_target_threshold: float = 0.5,
    decide_no_target: bool = True,
) -> Prediction:
    """Turn one (h, w) probability map over the letterbox canvas into a :class:`Prediction`.

    Args:
        prob: (h, w) float map in [0, 1] covering the ``lb.size`` canvas (the model's 120 x 120).
        lb: the image's letterbox.
        mask_threshold: pixels with ``prob > mask_threshold`` form the mask.
        no_target_logit: GRES models' no-target logit; ``None`` for RIS models.
        no_target_threshold: ``sigmoid(no_target_logit) > no_target_threshold`` means no target:
            empty mask, no box, score 0.
        decide_no_target: apply that decision (the GRES task); when False the mask is kept whatever the
            head says, and ``no_target_prob`` still reports it.
    """
    full = unletterbox(prob, lb)  # (orig_h, orig_w) float32
    nt_prob = None if no_target_logit is None else _sigmoid(float(no_target_logit))
    no_target = decide_no_target and nt_prob is not None and nt_prob > no_target_threshold
    if no_target:
        mask = np.zeros(full.shape, dtype=bool)
    else:
        mask = full > np.float32(mask_threshold)
    regions = tuple(main_first(find_regions(mask, full)))
    box = regions[0].box if regions else None
    score = float(full[mask].mean(dtype=np.float64)) if regions else 0.0
    return Prediction(mask=mask, box=box, score=score, no_target=bool(no_target), prob=full, no_target_prob=nt_prob,
                      regions=regions)
