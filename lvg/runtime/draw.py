"""Drawing: the overlay PNG (mask tinted over the image, box outlined, a label) and attention heatmaps."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["MASK_COLOR", "BOX_COLOR", "attention_panel", "overlay"]

MASK_COLOR = (255, 48, 48)
BOX_COLOR = (48, 255, 48)


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    box: tuple[int, int, int, int] | None,
    *,
    alpha: float = 0.5,
    label: str | None = None,
    mask_color: tuple[int, int, int] = MASK_COLOR,
    box_color: tuple[int, int, int] = BOX_COLOR,
) -> np.ndarray:
    """Blend ``mask_color`` into ``image`` where ``mask`` is set and outline ``box``.

    Args:
        image: uint8 (H, W, 3) RGB. mask: bool (H, W). box: ``(x1, y1, x2, y2)`` with exclusive x2 / y2, or None.
        alpha: mask opacity in [0, 1]. label: text drawn at the box's top-left (or the image's) corner.
    Returns:
        uint8 (H, W, 3): pixels outside the mask and away from the box and label are unchanged.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (H, W, 3), got {img.dtype} {img.shape}")
    if mask.shape != img.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image {img.shape[:2]}")
    out = img.astype(np.float32)
    color = np.asarray(mask_color, dtype=np.float32)
    out[mask] = out[mask] * (1.0 - alpha) + color * alpha
    pil = Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    h, w = img.shape[:2]
    width = max(1, round(max(h, w) / 250))
    if box is not None:
        x1, y1, x2, y2 = box
        # PIL's rectangle includes its end point; our x2 / y2 are exclusive.
        draw.rectangle((x1, y1, x2 - 1, y2 - 1), outline=box_color, width=width)
    if label:
        x, y = (box[0], box[1]) if box is not None else (0, 0)
        left, top, right, bottom = draw.textbbox((x, y), label)
        draw.rectangle((left, top, right + 2, bottom + 2), fill=(0, 0, 0))
        draw.text((x + 1, y + 1), label, fill=(255, 255, 255))
    return np.asarray(pil)


def _heat(values: np.ndarray) -> np.ndarray:
    """(h, w) float -> uint8 (h, w, 3): min-max normalised, black -> red -> yellow -> white."""
    v = values.astype(np.float32)
    lo, hi = float(v.min()), float(v.max())
    v = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
    rgb = np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], axis=-1)  # (h, w, 3)
    return (rgb * 255).round().astype(np.uint8)


def attention_panel(image: np.ndarray, maps: np.ndarray, *, alpha: float = 0.6) -> np.ndarray:
    """Side-by-side heatmaps of per-expression attention over ``image`` (paper Fig. 4).

    Args:
        image: uint8 (H, W, 3) RGB (the original image). maps: float (K, H, W), one map per expression
            (input expression first), already at the image's size.
    Returns:
        uint8 (H, K * W, 3).
    """
    tiles = []
    for m in maps:
        heat = _heat(m).astype(np.float32)
        tiles.append(np.clip(image.astype(np.float32) * (1 - alpha) + heat * alpha, 0, 255).round().astype(np.uint8))
    return np.concatenate(tiles, axis=1)
