"""Rendering: a scene's background, its shapes (solid, striped or dotted) and their full masks.

Everything is drawn from the scene's own random generator, in a fixed order, so a scene's pixels are a
function of its seed and index alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from lvg.train.synth.objects import COLOURS, SceneObject

__all__ = ["background", "full_mask", "paint", "shape_points"]


def shape_points(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    def ring(n: int, radii: Sequence[float], start: float) -> list[tuple[float, float]]:
        pts = []
        for k in range(n):
            a = start + angle + 2 * math.pi * k / n
            rad = radii[k % len(radii)]
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        return pts

    if shape == "square":
        return ring(4, [r], math.pi / 4)
    if shape == "triangle":
        return ring(3, [r], -math.pi / 2)
    if shape == "star":
        return ring(10, [r, 0.45 * r], -math.pi / 2)
    if shape == "hexagon":
        return ring(6, [r], 0.0)
    if shape == "diamond":
        # A rhombus taller than wide (never confusable with a square rotated 45 degrees).
        base = [(0.0, -r), (0.62 * r, 0.0), (0.0, r), (-0.62 * r, 0.0)]
        c, s = math.cos(angle), math.sin(angle)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in base]
    raise ValueError(f"unknown shape {shape!r}")


def full_mask(obj: SceneObject, width: int, height: int) -> np.ndarray:
    """bool (H, W): every pixel the shape covers (before occlusion)."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    if obj.shape == "circle":
        draw.ellipse([obj.cx - obj.radius, obj.cy - obj.radius, obj.cx + obj.radius, obj.cy + obj.radius], fill=1)
    else:
        draw.polygon(shape_points(obj.shape, obj.cx, obj.cy, obj.radius, obj.angle), fill=1)
    return np.asarray(canvas, dtype=np.uint8).astype(bool)


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    """A low-saturation colour (grey plus a small tint) so object colours stay unambiguous."""
    base = rng.uniform(55, 200)
    return np.clip(base + rng.uniform(-22, 22, size=3), 0, 255)


def background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """int16 (H, W, 3): a linear gradient or smooth colour noise, plus uniform pixel noise.

    int16 (not float) keeps the few full-image passes cheap; the final clip to 0..255 happens once.
    """
    if rng.random() < 0.5:
        # A linear gradient, computed on a coarse grid and upsampled bilinearly (exact for a linear
        # function away from the border, and far cheaper than evaluating it per pixel).
        c0, c1 = _muted_colour(rng), _muted_colour(rng)
        theta = rng.uniform(0, 2 * math.pi)
        gh, gw = max(2, height // 16), max(2, width // 16)
        xs = np.linspace(0, width, gw)[None, :] * math.cos(theta)  # (1, gw)
        ys = np.linspace(0, height, gh)[:, None] * math.sin(theta)  # (gh, 1)
        proj = xs + ys  # (gh, gw)
        t = ((proj - proj.min()) / max(float(proj.max() - proj.min()), 1.0))[..., None]  # (gh, gw, 1)
        grid = c0 + (c1 - c0) * t  # (gh, gw, 3)
        resample = Image.Resampling.BILINEAR
    else:
        gh, gw = int(rng.integers(2, 7)), int(rng.integers(2, 7))
        grid = np.stack([_muted_colour(rng) for _ in range(gh * gw)]).reshape(gh, gw, 3)  # (gh*gw, 3) -> (gh, gw, 3)
        resample = Image.Resampling.BICUBIC
    small = Image.fromarray(np.clip(np.rint(grid), 0, 255).astype(np.uint8), mode="RGB")
    bg = np.asarray(small.resize((width, height), resample)).astype(np.int16)  # (H, W, 3)
    # Uniform luminance noise, shared by the three channels: as good as Gaussian colour noise here and
    # several times cheaper to draw.
    amp = int(rng.integers(5, 17))
    bg += rng.integers(-amp, amp + 1, size=(height, width, 1), dtype=np.int16)  # (H, W, 1) broadcasts
    return bg


def paint(image: np.ndarray, obj: SceneObject, mask: np.ndarray, rng: np.random.Generator) -> None:
    """Paint ``obj`` into ``image`` (int16 (H, W, 3)) where ``mask`` (its full extent) is set."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    base = np.clip(np.asarray(COLOURS[obj.colour], np.float32) + rng.integers(-12, 13, size=3), 0, 255)
    yy = np.arange(y0, y1, dtype=np.float32)[:, None]  # (h, 1) crop row coordinates
    xx = np.arange(x0, x1, dtype=np.float32)[None, :]  # (1, w) crop column coordinates
    colour = np.empty((y1 - y0, x1 - x0, 3), dtype=np.float32)  # (h, w, 3)
    colour[...] = base
    if obj.texture == "striped":
        period = max(4.0, obj.radius / 3.0)
        theta = float(rng.choice([0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4]))
        band = np.floor((xx * math.cos(theta) + yy * math.sin(theta)) / period).astype(np.int64) % 2 == 1
        colour[band] = base * 0.5
    elif obj.texture == "dotted":
        period = max(6.0, obj.radius / 2.5)
        du, dv = (xx % period) - period / 2, (yy % period) - period / 2
        dots = du * du + dv * dv < (0.3 * period) ** 2  # (h, w)
        colour[dots] = base + (255 - base) * 0.6
    crop = mask[y0:y1, x0:x1]
    image[y0:y1, x0:x1][crop] = np.rint(colour[crop]).astype(np.int16)
