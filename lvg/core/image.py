"""Image loading: any file Pillow can decode (or an array / PIL image) -> an RGB ``PIL.Image.Image``.

What every loaded image goes through (SPEC section 4, "Preprocessing"):

- EXIF orientation is applied (``ImageOps.exif_transpose``), so sizes and masks refer to the image as
  it is displayed.
- Any mode becomes 8-bit RGB: alpha (RGBA, LA, palette transparency) is composited onto black, 16/32-bit
  integer images (``I;16``, ``I``) are scaled to 0..255 by their bit depth, float images (``F``) are
  clipped to 0..1 then scaled, CMYK / YCbCr / LAB / 1-bit are converted by Pillow.
- Animated images (GIF, APNG, WebP) use their first frame.

Every failure is an :class:`lvg.errors.InputError` with a one-line message naming the path. Pixel-count
guarding is done here for every kind of input, before any pixel is decoded or converted: a file from its
header, a ``PIL.Image`` from its size (a lazily opened one is not decoded first), an array from its shape;
images over :data:`MAX_PIXELS` are refused. Pillow's process-wide ``Image.MAX_IMAGE_PIXELS`` is never
changed.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lvg.errors import InputError, first_line

__all__ = ["MAX_PIXELS", "ImageSource", "check_pixels", "load_image"]

#: Largest accepted image, in pixels (width * height): 100 megapixels.
MAX_PIXELS = 100_000_000

ImageSource = Union[str, "os.PathLike[str]", Image.Image, np.ndarray]


def load_image(src: ImageSource) -> Image.Image:
    """Load ``src`` as an RGB image with EXIF orientation applied.

    Args:
        src: a file path, a ``PIL.Image.Image`` (any mode), or a numpy array of shape (H, W, 3) uint8 (RGB)
            or (H, W) uint8 (grayscale).

    Returns:
        A fully decoded ``PIL.Image.Image`` in mode ``"RGB"``; its ``size`` is (width, height) as displayed.

    Raises:
        InputError: missing path, a directory, an empty file, not an image, a truncated or corrupt image,
            an image over :data:`MAX_PIXELS`, or an array of the wrong shape / dtype.
    """
    if isinstance(src, np.ndarray):
        return _from_array(src)
    if isinstance(src, Image.Image):
        check_pixels(src.width, src.height, "<PIL image>")
        return _to_rgb(src, name="<PIL image>")
    if not isinstance(src, (str, os.PathLike)):
        raise InputError(f"cannot load an image from a {type(src).__name__}: pass a path, PIL image or numpy array")
    path = Path(src)
    return _from_path(path)


def check_pixels(width: int, height: int, name: str) -> None:
    """The decompression-bomb guard every image input passes: :class:`InputError` over :data:`MAX_PIXELS`."""
    if width * height > MAX_PIXELS:
        raise InputError(
            f"image too large (decompression-bomb guard, limit {MAX_PIXELS:,} pixels): "
            f"{width}x{height} = {width * height:,} pixels: {name}"
        )


def _from_array(arr: np.ndarray) -> Image.Image:
    if arr.dtype != np.uint8:
        raise InputError(f"image array must be uint8, got {arr.dtype}")
    if arr.ndim == 2:
        mode = "L"
    elif arr.ndim == 3 and arr.shape[2] == 3:
        mode = "RGB"
    else:
        raise InputError(f"image array must be HxWx3 (RGB) or HxW (grayscale) uint8, got shape {tuple(arr.shape)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"image array is empty (shape {tuple(arr.shape)})")
    check_pixels(int(arr.shape[1]), int(arr.shape[0]), "<image array>")
    img = Image.fromarray(np.ascontiguousarray(arr))
    return img.convert("RGB") if mode != "RGB" else img


def _from_path(path: Path) -> Image.Image:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputError(f"image not found: {path}") from None
    except OSError as exc:  # a name over the system's limit, a loop of links, no permission on a folder
        raise InputError(f"cannot read image {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"image path is a directory: {path}")
    if not stat.S_ISREG(st.st_mode):
        # A FIFO, socket or device: opening it could block forever or never reach the end.
        raise InputError(f"image path is not a regular file: {path}")
    if st.st_size == 0:
        raise InputError(f"image file is empty (0 bytes): {path}")
    try:
        # Our own MAX_PIXELS check below replaces Pillow's bomb *warning* (it starts at ~89 MP, below
        # our 100 MP limit), silenced for this call only; Pillow's bomb *error* is still caught below.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                check_pixels(img.width, img.height, str(path))
                if getattr(img, "is_animated", False):
                    img.seek(0)
                # Force the full decode here so truncated data fails now, inside this try.
                img.load()
                return _to_rgb(img, name=str(path))
    except InputError:
        raise
    except Image.DecompressionBombError:
        # Pillow refuses over twice its own limit before we see the size.
        raise InputError(f"image too large (decompression-bomb guard, limit {MAX_PIXELS:,} pixels): {path}") from None
    except UnidentifiedImageError:
        raise InputError(f"not an image or unrecognised image format: {path}") from None
    except PermissionError:
        raise InputError(f"permission denied reading image: {path}") from None
    except MemoryError:
        raise InputError(f"image too large to decode in the available memory: {path}") from None
    except Exception as exc:
        # Pillow reports truncated / corrupt data as OSError ("image file is truncated"), SyntaxError
        # (bad headers in some plugins), ValueError, EOFError, and its plugins' parsers (EXIF, ICC, TIFF
        # tags) can raise struct.error, KeyError, ZeroDivisionError... on hostile files: every one means
        # "this file is not a usable image". Keep only the first line of its message.
        raise InputError(f"corrupt or truncated image ({first_line(exc, 200)}): {path}") from None


def _to_rgb(img: Image.Image, *, name: str) -> Image.Image:
    """Orientation, first frame, any mode -> 8-bit RGB. ``img`` must be loadable."""
    if getattr(img, "is_animated", False):
        img.seek(0)
    try:
        img.load()
        oriented = ImageOps.exif_transpose(img)
    except InputError:
        raise
    except MemoryError:
        raise InputError(f"image too large to decode in the available memory: {name}") from None
    except Exception as exc:  # see _from_path: hostile EXIF / data raises many types
        raise InputError(f"corrupt or truncated image ({first_line(exc, 200)}): {name}") from None
    # exif_transpose returns a new image (a copy when there is nothing to rotate), so the caller's
    # image is never modified and a file-backed image may be closed after this.
    img = oriented if oriented is not None else img.copy()
    if img.width == 0 or img.height == 0:
        raise InputError(f"image has zero size: {name}")
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        # Palette transparency (tRNS) only survives through RGBA.
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)  # (H, W, 4)
        alpha = rgba[..., 3:4] / 255.0
        # Composite on black: colour * alpha; round to the nearest 8-bit value.
        rgb = np.clip(np.rint(rgba[..., :3] * alpha), 0, 255).astype(np.uint8)
        return Image.fromarray(rgb)
    if mode.startswith("I;16") or mode in ("I", "I;32", "I;32B", "I;32L"):
        arr = np.asarray(img)
        if mode.startswith("I;16"):
            maxval = 65535.0
        else:
            # Pillow loads 16-bit PNGs as mode "I" (int32). Scale by the bit depth the data fits in.
            top = int(arr.max()) if arr.size else 0
            maxval = 255.0 if top <= 255 else 65535.0 if top <= 65535 else float(2**32 - 1)
            arr = np.clip(arr.astype(np.float64), 0, maxval)
        gray = np.clip(np.rint(arr.astype(np.float64) * (255.0 / maxval)), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=1.0, neginf=0.0)
        gray = np.clip(np.rint(np.clip(arr, 0.0, 1.0) * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise InputError(f"unsupported image mode {mode!r}: {name}") from exc

