"""Letterbox preprocessing and its exact inverse (SPEC section 4, "Preprocessing").

Geometry: the long side is resized to ``size`` (aspect ratio kept), the resized image is placed centred
on a ``size x size`` black canvas. :class:`Letterbox` records this so predictions can be mapped back.

Coordinate convention (used by every function here): pixel ``i`` covers the continuous interval
``[i, i + 1)``; its centre is ``i + 0.5``. Original pixel ``x`` maps to canvas coordinate
``pad_x + x * new_w / orig_w`` (edges), which makes the valid region exactly
``[pad_x, pad_x + new_w) x [pad_y, pad_y + new_h)`` on the canvas.

Image resampling: one Pillow ``BICUBIC`` resize (Pillow antialiases when shrinking), the same
interpolation BEiT-3 fine-tuning uses. Masks use nearest (exact, binary) or area averaging (soft
targets); probability maps are mapped back with point-sampled bilinear interpolation (the same as
``torch.nn.functional.interpolate(..., mode="bilinear", align_corners=False)``), computed with exact
integer arithmetic so letterboxing a mask and undoing it is lossless whenever the letterbox enlarged it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from lvg.config import PreprocessConfig

__all__ = [
    "Letterbox",
    "letterbox_geometry",
    "letterbox_mask",
    "preprocess_batch",
    "preprocess_image",
    "unletterbox",
    "unletterbox_mask",
]

#: Resampling filter for images (documented in the module docstring).
IMAGE_RESAMPLE = Image.Resampling.BICUBIC


@dataclass(frozen=True)
class Letterbox:
    """Where an ``orig_w x orig_h`` image sits on the ``size x size`` model canvas.

    ``scale = size / max(orig_w, orig_h)``; the resized image is ``new_w x new_h`` pixels with its
    top-left corner at ``(pad_x, pad_y)`` on the canvas.
    """

    orig_w: int
    orig_h: int
    size: int
    scale: float
    new_w: int
    new_h: int
    pad_x: int
    pad_y: int


def letterbox_geometry(width: int, height: int, size: int) -> Letterbox:
    """The :class:`Letterbox` of a ``width x height`` image on a ``size x size`` canvas.

    ``new_w = round(width * scale)`` (at least 1, at most ``size``), likewise ``new_h``;
    ``pad_x = (size - new_w) // 2``, ``pad_y = (size - new_h) // 2``.
    """
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if size < 1:
        raise ValueError(f"canvas size must be positive, got {size}")
    long_side = max(width, height)
    scale = size / long_side
    # Integer arithmetic for the long side so it is exactly `size` (no float rounding surprises).
    new_w = size if width == long_side else min(size, max(1, round(width * scale)))
    new_h = size if height == long_side else min(size, max(1, round(height * scale)))
    return Letterbox(
        orig_w=int(width),
        orig_h=int(height),
        size=int(size),
        scale=float(scale),
        new_w=int(new_w),
        new_h=int(new_h),
        pad_x=(size - new_w) // 2,
        pad_y=(size - new_h) // 2,
    )


def preprocess_image(image: Image.Image, cfg: PreprocessConfig) -> tuple[np.ndarray, Letterbox]:
    """Letterbox and normalise one image.

    Args:
        image: a ``PIL.Image.Image``; converted to RGB if it is not (use
            :func:`lvg.core.image.load_image` for files: it also applies EXIF orientation).
        cfg: ``size``, ``mean`` and ``std`` are used.

    Returns:
        ``(array, letterbox)``: ``array`` is float32 of shape (3, size, size) holding
        ``(pixel / 255 - mean) / std`` per channel; padding pixels are black (0) before normalisation,
        i.e. ``-mean / std`` after (-1.0 with BEiT-3's 0.5 / 0.5).
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    lb = letterbox_geometry(image.width, image.height, cfg.size)
    if (image.width, image.height) != (lb.new_w, lb.new_h):
        image = image.resize((lb.new_w, lb.new_h), IMAGE_RESAMPLE)
    canvas = np.zeros((lb.size, lb.size, 3), dtype=np.uint8)  # (S, S, 3) black
    canvas[lb.pad_y : lb.pad_y + lb.new_h, lb.pad_x : lb.pad_x + lb.new_w] = np.asarray(image, dtype=np.uint8)
    # A pixel has 256 possible values per channel, so the normalisation is a table lookup: the same float32
    # arithmetic as the formula, done 768 times instead of 3 * S * S (7x faster at S = 480).
    lut = _normalisation_table(tuple(cfg.mean), tuple(cfg.std))  # (3, 256)
    out = np.empty((3, lb.size, lb.size), dtype=np.float32)
    for c in range(3):
        np.take(lut[c], canvas[..., c], out=out[c])  # (S, S) uint8 -> (S, S) float32, channels-first
    return out, lb


@functools.lru_cache(maxsize=8)
def _normalisation_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """float32 (3, 256): ``(v / 255 - mean[c]) / std[c]`` for every byte ``v`` of channel ``c``."""
    values = np.arange(256, dtype=np.float32)[None, :]  # (1, 256)
    m = np.asarray(mean, dtype=np.float32)[:, None]  # (3, 1)
    s = np.asarray(std, dtype=np.float32)[:, None]
    table = (values / np.float32(255.0) - m) / s
    table.flags.writeable = False  # shared by every call through the cache
    return table


def preprocess_batch(images: Sequence[Image.Image], cfg: PreprocessConfig) -> tuple[np.ndarray, list[Letterbox]]:
    """:func:`preprocess_image` over a batch: returns float32 (B, 3, size, size) and B letterboxes."""
    if len(images) == 0:
        return np.zeros((0, 3, cfg.size, cfg.size), dtype=np.float32), []
    arrays: list[np.ndarray] = []
    boxes: list[Letterbox] = []
    for image in images:
        arr, lb = preprocess_image(image, cfg)
        arrays.append(arr)
        boxes.append(lb)
    return np.stack(arrays, axis=0), boxes


def _nearest_index(n_out: int, n_in: int) -> np.ndarray:
    """Source index of each of ``n_out`` output pixels when ``n_in`` pixels are stretched onto them.

    Output pixel ``u`` (centre ``u + 0.5``) reads input pixel ``floor((u + 0.5) * n_in / n_out)``,
    computed exactly in integers.
    """
    u = np.arange(n_out, dtype=np.int64)
    return np.minimum(((2 * u + 1) * n_in) // (2 * n_out), n_in - 1)


def letterbox_mask(mask: np.ndarray, lb: Letterbox, out_size: int | None = None) -> np.ndarray:
    """Move a ground-truth mask of the original image into the letterboxed frame.

    Args:
        mask: (orig_h, orig_w) bool (or 0/1) mask at the original image resolution.
        lb: the image's letterbox.
        out_size: side of the returned square; ``None`` means ``lb.size``.

    Returns:
        float32 (out_size, out_size). At ``out_size == lb.size`` it is binary (nearest neighbour, the
        exact counterpart of :func:`unletterbox`). At any other size it is a soft target in [0, 1]: the
        mask is area-averaged onto the full canvas, then area-averaged (box filter) to ``out_size``
        (e.g. 480 -> 120 for the loss at 1/4 scale). Padding is 0.
    """
    mask = np.asarray(mask)
    if mask.shape != (lb.orig_h, lb.orig_w):
        raise ValueError(f"mask shape {mask.shape} does not match the letterbox's image {lb.orig_h}x{lb.orig_w}")
    out = lb.size if out_size is None else int(out_size)
    if out < 1:
        raise ValueError(f"out_size must be positive, got {out}")
    binary = mask.astype(bool)
    canvas = np.zeros((lb.size, lb.size), dtype=np.float32)  # (S, S)
    region = (slice(lb.pad_y, lb.pad_y + lb.new_h), slice(lb.pad_x, lb.pad_x + lb.new_w))
    if out == lb.size:
        rows = _nearest_index(lb.new_h, lb.orig_h)
        cols = _nearest_index(lb.new_w, lb.orig_w)
        canvas[region] = binary[np.ix_(rows, cols)]  # (new_h, new_w)
        return canvas
    if (lb.new_w, lb.new_h) == (lb.orig_w, lb.orig_h):
        canvas[region] = binary
    else:
        src = Image.fromarray(binary.astype(np.float32))
        canvas[region] = np.asarray(src.resize((lb.new_w, lb.new_h), Image.Resampling.BOX), dtype=np.float32)
    if lb.size % out == 0:
        k = lb.size // out
        # (S, S) -> (out, k, out, k): average each k x k block (exact area pooling).
        pooled = canvas.reshape(out, k, out, k).mean(axis=(1, 3))
    else:
        pooled = np.asarray(
            Image.fromarray(canvas).resize((out, out), Image.Resampling.BOX), dtype=np.float32
        )
    return np.clip(pooled, 0.0, 1.0).astype(np.float32)


def _bilinear_taps(
    n_orig: int, n_new: int, pad: int, size: int, n_map: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear sampling taps along one axis for :func:`unletterbox`.

    Original pixel ``x`` has its centre at canvas coordinate ``c = pad + (x + 0.5) * n_new / n_orig``;
    in a map of ``n_map`` pixels covering the canvas that is pixel-index position
    ``p = c * n_map / size - 0.5``. ``p`` is a rational number, so its floor is taken exactly:
    ``p = num / den`` with ``num = (2 * pad * n_orig + (2x + 1) * n_new) * n_map - n_orig * size`` and
    ``den = 2 * n_orig * size``.

    Taps are clamped to the map pixels that overlap the valid region ``[pad, pad + n_new)`` (the crop),
    so pure padding never bleeds into the border of the result (edge replication inside the crop).

    Returns ``(i0, i1, frac)``: the two neighbouring indices and the weight of ``i1``.
    """
    x = np.arange(n_orig, dtype=np.int64)
    num = (2 * pad * n_orig + (2 * x + 1) * n_new) * n_map - n_orig * size
    den = 2 * n_orig * size
    i0 = num // den  # floor, exact
    frac = (num - i0 * den).astype(np.float64) / den
    lo = (pad * n_map) // size  # first map pixel touching the valid region
    hi = -((-(pad + n_new) * n_map) // size) - 1  # last one: ceil(end) - 1
    i1 = np.clip(i0 + 1, lo, hi)
    i0 = np.clip(i0, lo, hi)
    return i0, i1, frac.astype(np.float32)


def unletterbox(prob: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Map a probability map over the letterbox canvas back onto the original image.

    Args:
        prob: (h, w) float map covering the whole ``lb.size`` canvas at any square scale (the model's
            120 x 120, or ``lb.size`` itself).
        lb: the image's letterbox.

    Returns:
        float32 (orig_h, orig_w): the valid (non-padding) region of ``prob`` resampled bilinearly to the
        original size (point sampling at each original pixel centre, ``align_corners=False`` style,
        edges replicated inside the valid region).

    Round trip with :func:`letterbox_mask` at ``out_size == lb.size`` then ``> 0.5``: exact when the
    letterbox scales each axis by an integer factor (including 1), and exact along an axis for masks
    constant along the other one whenever the letterbox enlarges. In general (non-integer scale, or
    any shrinking) bilinear weights can only disagree near the mask boundary: a pixel whose
    neighbourhood (about ``orig / new + 1`` pixels) is uniform always comes back unchanged.
    """
    prob = np.asarray(prob)
    if prob.ndim != 2:
        raise ValueError(f"prob must be a 2-D (h, w) map, got shape {prob.shape}")
    h, w = prob.shape
    if h != w:
        raise ValueError(f"prob must be square (it covers the square canvas), got {h}x{w}")
    p = prob.astype(np.float32, copy=False)
    r0, r1, fy = _bilinear_taps(lb.orig_h, lb.new_h, lb.pad_y, lb.size, h)
    c0, c1, fx = _bilinear_taps(lb.orig_w, lb.new_w, lb.pad_x, lb.size, w)
    # Separable: rows first ((h, w) -> (orig_h, w)), then columns ((orig_h, w) -> (orig_h, orig_w)).
    fy_col = fy[:, None]  # (orig_h,) -> (orig_h, 1) to broadcast over columns
    rows = p[r0] * (np.float32(1.0) - fy_col) + p[r1] * fy_col  # (orig_h, w)
    out = rows[:, c0] * (np.float32(1.0) - fx) + rows[:, c1] * fx  # (orig_h, orig_w)
    return np.ascontiguousarray(out, dtype=np.float32)


def _nearest_taps(n_orig: int, n_new: int, pad: int, size: int, n_map: int) -> np.ndarray:
    """Nearest map pixel along one axis for :func:`unletterbox_mask`.

    Original pixel ``x`` has its centre at canvas coordinate ``pad + (x + 0.5) * n_new / n_orig``, i.e. in
    a map of ``n_map`` pixels over the ``size`` canvas at ``c = (pad + (x + 0.5) * n_new / n_orig) * n_map / size``;
    the map pixel containing it is ``floor(c)``, taken exactly in integers:
    ``floor((2 * pad * n_orig + (2x + 1) * n_new) * n_map / (2 * n_orig * size))``. Clamped to the map
    pixels that overlap the valid region so padding is never read.
    """
    x = np.arange(n_orig, dtype=np.int64)
    idx = ((2 * pad * n_orig + (2 * x + 1) * n_new) * n_map) // (2 * n_orig * size)
    lo = (pad * n_map) // size
    hi = -((-(pad + n_new) * n_map) // size) - 1
    return np.clip(idx, lo, hi)


def unletterbox_mask(mask: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Map a binary mask over the letterbox canvas back onto the original image (nearest neighbour).

    The mask counterpart of :func:`unletterbox`: each original pixel takes the value of the map pixel
    that contains its centre (same coordinate convention as the module docstring), so no value is
    invented and the result stays binary.

    Args:
        mask: (h, h) mask covering the whole ``lb.size`` canvas at any square scale; bool, or numbers
            where ``> 0.5`` means "in the mask".
        lb: the image's letterbox.

    Returns:
        bool (orig_h, orig_w).

    Exactness of ``unletterbox_mask(letterbox_mask(m, lb), lb) == m`` (``letterbox_mask`` at
    ``out_size == lb.size``), for every mask ``m``:

    - exact whenever the letterbox does not shrink the image (``max(orig_w, orig_h) <= lb.size``: every
      image smaller than the 480 canvas), at any aspect ratio and any non-integer scale. The forward
      nearest map then hits every original row / column, and the canvas pixel this function reads for
      original pixel ``x`` is one of those that copied ``x``.
    - when the letterbox shrinks the image, ``letterbox_mask`` keeps only some original rows / columns
      (nearest-neighbour downsampling discards the others), so *no* function can recover ``m``. This one
      is still exact on every kept row and column; a dropped pixel gets the value of a kept neighbour
      within ``ceil(orig / new)`` pixels.
    - from a coarser map (e.g. the model's 120 x 120) a mask loses detail finer than one map pixel
      (``lb.size / h`` canvas pixels); nothing can restore that either.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be a 2-D (h, w) map, got shape {mask.shape}")
    h, w = mask.shape
    if h != w:
        raise ValueError(f"mask must be square (it covers the square canvas), got {h}x{w}")
    binary = mask if mask.dtype == np.bool_ else mask > 0.5
    rows = _nearest_taps(lb.orig_h, lb.new_h, lb.pad_y, lb.size, h)
    cols = _nearest_taps(lb.orig_w, lb.new_w, lb.pad_x, lb.size, w)
    return np.ascontiguousarray(binary[np.ix_(rows, cols)])  # (orig_h, orig_w)
