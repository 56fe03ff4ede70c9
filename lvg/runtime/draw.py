"""Drawing: the overlay (regions tinted and outlined in colours that stand out, boxes, labels) and attention maps.

An overlay must be readable on any photo: a fixed red tint vanishes on a red object. Each region gets the
colour of :data:`PALETTE` farthest from the mean colour of the image under it (several regions: each its own
colour, none used twice while others are left), a solid outline two or more pixels wide, a translucent fill,
and a label on a filled tab in the region's colour with black or white text, whichever contrasts more; the
label's size follows the image's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["PALETTE", "Mark", "attention_panel", "contrast_colors", "overlay"]

#: Saturated colours, far apart from each other; the overlay picks from them by contrast.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 255, 255),  # cyan
    (255, 0, 255),  # magenta
    (255, 255, 0),  # yellow
    (0, 255, 0),  # green
    (255, 128, 0),  # orange
    (0, 128, 255),  # azure
    (255, 32, 32),  # red
    (255, 255, 255),  # white
)

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Mark:
    """One thing to draw: a region's ``mask`` (bool (H, W), or ``None`` for a box alone), its ``box``
    (``(x1, y1, x2, y2)``, x2 / y2 exclusive, or ``None``) and its ``label`` (or ``None``)."""

    mask: np.ndarray | None
    box: Box | None
    label: str | None = None


def contrast_colors(image: np.ndarray, masks: Sequence[np.ndarray | None],
                    boxes: Sequence[Box | None]) -> list[tuple[int, int, int]]:
    """A colour of :data:`PALETTE` per region: the one farthest (RGB distance) from the mean image colour under
    the region's mask (or inside its box), each colour used once while unused ones remain."""
    used: set[int] = set()
    colors = []
    for mask, box in zip(masks, boxes):
        if mask is not None and mask.any():
            mean = image[mask].mean(axis=0)
        elif box is not None:
            x1, y1, x2, y2 = box
            mean = image[y1:y2, x1:x2].reshape(-1, 3).mean(axis=0)
        else:
            mean = image.reshape(-1, 3).mean(axis=0)
        free = [i for i in range(len(PALETTE)) if i not in used] or list(range(len(PALETTE)))
        dist = [float(np.linalg.norm(np.asarray(PALETTE[i], dtype=np.float64) - mean)) for i in free]
        best = free[int(np.argmax(dist))]
        used.add(best)
        colors.append(PALETTE[best])
    return colors


def _edge(mask: np.ndarray, width: int) -> np.ndarray:
    """The pixels of ``mask`` within ``width`` pixels of its border (a 4-neighbour erosion, repeated)."""
    inner = mask.copy()
    for _ in range(width):
        shrunk = inner.copy()
        shrunk[1:, :] &= inner[:-1, :]
        shrunk[:-1, :] &= inner[1:, :]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        # a region touching the image border is outlined there too
        shrunk[0, :] = shrunk[-1, :] = False
        shrunk[:, 0] = shrunk[:, -1] = False
        inner = shrunk
    return mask & ~inner


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _label(draw: ImageDraw.ImageDraw, text: str, box: Box | None, color: tuple[int, int, int],
           size: tuple[int, int], font_px: int) -> None:
    """A filled tab in ``color`` with ``text`` on it, above the box when there is room, else inside its top."""
    w, h = size
    font = _font(font_px)
    pad = max(2, font_px // 5)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    tw, th = right - left + 2 * pad, bottom - top + 2 * pad
    x, y = (box[0], box[1] - th) if box is not None else (0, 0)
    if y < 0:
        y = box[1] if box is not None else 0
    x = int(min(max(x, 0), max(w - tw, 0)))
    y = int(min(max(y, 0), max(h - th, 0)))
    draw.rectangle((x, y, x + tw - 1, y + th - 1), fill=color)
    luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    draw.text((x + pad - left, y + pad - top), text, font=font, fill=(0, 0, 0) if luminance > 140 else (255, 255, 255))


def overlay(image: np.ndarray, marks: Sequence[Mark], *, alpha: float = 0.4, caption: str | None = None) -> np.ndarray:
    """Draw ``marks`` over ``image``.

    Args:
        image: uint8 (H, W, 3) RGB.
        marks: regions / boxes to draw; each gets its own contrasting colour (:func:`contrast_colors`). A mark
            with a mask is tinted (``alpha``) and outlined; a mark with a box gets the box; labels go on tabs.
        alpha: opacity of the tint in [0, 1].
        caption: a line written at the top-left corner when no mark carries a label (e.g. "no target").
    Returns:
        uint8 (H, W, 3): pixels away from the marks and labels are unchanged.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (H, W, 3), got {img.dtype} {img.shape}")
    h, w = img.shape[:2]
    for m in marks:
        if m.mask is not None and m.mask.shape != (h, w):
            raise ValueError(f"mask shape {m.mask.shape} does not match image {(h, w)}")
    colors = contrast_colors(img, [m.mask for m in marks], [m.box for m in marks])
    line = max(2, round(max(h, w) / 300))
    out = img.astype(np.float32)
    for m, color in zip(marks, colors):
        if m.mask is None:
            continue
        c = np.asarray(color, dtype=np.float32)
        out[m.mask] = out[m.mask] * (1.0 - alpha) + c * alpha
        out[_edge(m.mask, line)] = c
    pil = Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    font_px = max(12, round(min(max(h, w), 4000) / 40))
    for m, color in zip(marks, colors):
        if m.box is not None:
            x1, y1, x2, y2 = m.box
            # PIL's rectangle includes its end point; our x2 / y2 are exclusive.
            draw.rectangle((x1, y1, x2 - 1, y2 - 1), outline=color, width=line)
    for m, color in zip(marks, colors):
        if m.label:
            _label(draw, m.label, m.box, color, (w, h), font_px)
    if caption and not any(m.label for m in marks):
        _label(draw, caption, None, (255, 255, 255), (w, h), font_px)
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
