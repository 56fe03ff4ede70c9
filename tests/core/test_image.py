"""load_image on real files written with Pillow: modes, EXIF orientation, animation and bad input."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lvg.core.image import MAX_PIXELS, load_image
from lvg.errors import InputError


def _gradient(w: int, h: int) -> np.ndarray:
    """(h, w, 3) uint8 with distinct, smoothly varying channels."""
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([xs * 255 // max(w - 1, 1), ys * 255 // max(h - 1, 1), np.full_like(xs, 128)], -1).astype(np.uint8)


def test_rgb_png_round_trips_exactly(tmp_path: Path) -> None:
    arr = _gradient(37, 21)
    path = tmp_path / "a.png"
    Image.fromarray(arr).save(path)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (37, 21)
    np.testing.assert_array_equal(np.asarray(img), arr)
    # str path and PathLike behave the same
    np.testing.assert_array_equal(np.asarray(load_image(str(path))), arr)


def test_jpeg_loads_close_to_source(tmp_path: Path) -> None:
    arr = _gradient(64, 48)
    path = tmp_path / "a.jpg"
    Image.fromarray(arr).save(path, quality=95)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (64, 48)
    assert np.abs(np.asarray(img).astype(int) - arr.astype(int)).mean() < 3


def test_exif_rotated_jpeg_has_display_orientation(tmp_path: Path) -> None:
    # Stored 40 wide x 20 tall with the left half white; orientation 6 = "rotate 90 CW to display",
    # so the displayed image is 20 wide x 40 tall and the white half ends up on top.
    stored = np.zeros((20, 40, 3), dtype=np.uint8)
    stored[:, :20] = 255
    img = Image.fromarray(stored)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif, quality=95)
    out = load_image(path)
    assert out.size == (20, 40)
    a = np.asarray(out).astype(int)
    assert a[:18].mean() > 240 and a[22:].mean() < 15


def test_grayscale_and_one_bit(tmp_path: Path) -> None:
    gray = (np.arange(30 * 10) % 256).astype(np.uint8).reshape(10, 30)
    Image.fromarray(gray).save(tmp_path / "g.png")
    out = np.asarray(load_image(tmp_path / "g.png"))
    assert out.shape == (10, 30, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)

    bits = np.zeros((8, 8), dtype=bool)
    bits[:, 4:] = True
    Image.fromarray(bits).save(tmp_path / "b.png")
    out = np.asarray(load_image(tmp_path / "b.png"))
    assert out[:, :4].max() == 0 and out[:, 4:].min() == 255


def test_rgba_composited_on_black(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[..., 1] = 100
    rgba[0, :, 3] = 255  # opaque row
    rgba[1, :, 3] = 0  # transparent row
    rgba[2:, :, 3] = 128  # half
    Image.fromarray(rgba).save(tmp_path / "a.png")
    out = np.asarray(load_image(tmp_path / "a.png")).astype(int)
    assert out[0, 0].tolist() == [200, 100, 0]
    assert out[1, 0].tolist() == [0, 0, 0]
    # 200 * 128 / 255 = 100.4 -> 100; 100 * 128 / 255 = 50.2 -> 50
    assert out[2, 0].tolist() == [100, 50, 0]


def test_palette_with_transparency(tmp_path: Path) -> None:
    img = Image.new("P", (6, 3))
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * (254 * 3))
    px = np.zeros((3, 6), dtype=np.uint8)
    px[:, 3:] = 1
    img.putdata(px.ravel().tolist())
    img.info["transparency"] = 1  # palette entry 1 (green) is fully transparent
    img.save(tmp_path / "p.png", transparency=1)
    out = np.asarray(load_image(tmp_path / "p.png")).astype(int)
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[0, 5].tolist() == [0, 0, 0]  # transparent green -> black, not green


def test_cmyk_jpeg(tmp_path: Path) -> None:
    cmyk = Image.new("CMYK", (10, 10), (0, 255, 255, 0))  # pure red in CMYK
    cmyk.save(tmp_path / "c.jpg", quality=95)
    out = load_image(tmp_path / "c.jpg")
    assert out.mode == "RGB"
    r, g, b = np.asarray(out).reshape(-1, 3).mean(0)
    assert r > 200 and g < 50 and b < 50


def _png_bytes(width: int, height: int, bit_depth: int, raw: bytes) -> bytes:
    """A grayscale PNG assembled chunk by chunk (independent of Pillow's writer)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(raw))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


def _write_png16(path: Path, gray16: np.ndarray) -> None:
    """A 16-bit grayscale PNG: each row is filter byte 0 then big-endian samples."""
    h, w = gray16.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in gray16)
    path.write_bytes(_png_bytes(w, h, 16, raw))


def test_sixteen_bit_png_scaled_to_eight_bit(tmp_path: Path) -> None:
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)  # 0, 1, 128, 255 in 8-bit
    _write_png16(tmp_path / "d.png", values)
    out = np.asarray(load_image(tmp_path / "d.png"))
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_i16_pil_image() -> None:
    img = Image.frombytes("I;16", (2, 1), np.array([0, 65535], dtype="<u2").tobytes())
    assert img.mode == "I;16"
    out = np.asarray(load_image(img))
    assert out[0, :, 0].tolist() == [0, 255]


def test_animated_gif_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(tmp_path / "anim.gif") as check:
        assert check.is_animated  # the fixture really is animated
    out = np.asarray(load_image(tmp_path / "anim.gif")).astype(int)
    assert out[..., 0].mean() > 200 and out[..., 2].mean() < 50


def test_numpy_inputs() -> None:
    arr = _gradient(5, 4)
    np.testing.assert_array_equal(np.asarray(load_image(arr)), arr)
    gray = np.full((3, 2), 7, dtype=np.uint8)
    assert np.asarray(load_image(gray)).shape == (3, 2, 3)
    with pytest.raises(InputError, match="uint8"):
        load_image(arr.astype(np.float32))
    with pytest.raises(InputError, match="shape"):
        load_image(np.zeros((4, 4, 4), dtype=np.uint8))


def test_pil_input_not_modified() -> None:
    src = Image.new("RGBA", (3, 3), (10, 20, 30, 255))
    out = load_image(src)
    assert out.mode == "RGB" and src.mode == "RGBA"


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda p: p, "not found"),
        (lambda p: (p.mkdir(), p)[1], "directory"),
        (lambda p: (p.write_bytes(b""), p)[1], "empty"),
        (lambda p: (p.write_bytes(b"hello, this is text, not pixels\n" * 10), p)[1], "not an image"),
    ],
    ids=["missing", "directory", "zero-byte", "text-file"],
)
def test_bad_paths_raise_input_error_naming_the_path(tmp_path: Path, make, pattern: str) -> None:
    path = make(tmp_path / "x.jpg")
    with pytest.raises(InputError, match=pattern) as info:
        load_image(path)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg


def test_truncated_jpeg(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    full = tmp_path / "full.jpg"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(full, quality=90)
    data = full.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated|corrupt") as info:
        load_image(cut)
    assert str(cut) in str(info.value)


def test_too_many_pixels_refused_from_header(tmp_path: Path) -> None:
    # A valid PNG header claiming 20000 x 10000 = 200 MP; the IDAT is tiny, so any attempt to decode
    # would fail differently (truncated) - the message proves the header check ran first.
    w, h = 20000, 10000
    assert w * h > MAX_PIXELS
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_bytes(w, h, 8, b"\x00" * 100))
    with pytest.raises(InputError, match="too large") as info:
        load_image(path)
    assert str(path) in str(info.value)
    assert Image.MAX_IMAGE_PIXELS is not None  # global Pillow state left alone


def test_wrong_type() -> None:
    with pytest.raises(InputError):
        load_image(12345)  # type: ignore[arg-type]


def test_pillow_bomb_warning_range_not_refused(tmp_path: Path) -> None:
    # 10000 x 9500 = 95 MP: over Pillow's warning level (~89 MP) but under our 100 MP limit, so it is
    # decoded (and then fails only because the pixel data is missing), not refused as too large.
    path = tmp_path / "big.png"
    path.write_bytes(_png_bytes(10000, 9500, 1, b"\x00" * 100))
    with pytest.raises(InputError, match="truncated|corrupt"):
        load_image(path)


def test_pil_and_array_inputs_pass_the_same_pixel_guard(tmp_path: Path) -> None:
    # 11000 x 11000 = 121 MP, claimed by a PNG header over almost no data: opened lazily, a PIL image knows its
    # size before any pixel is decoded, so it is refused as a file is, without decoding 121 MP.
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_bytes(11000, 11000, 8, b"\x00" * 100))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        lazy = Image.open(path)
    with pytest.raises(InputError, match="decompression-bomb guard"):
        load_image(lazy)
    one_bit = Image.new("1", (11000, 11000))  # 15 MB in memory, 363 MB once converted to RGB
    with pytest.raises(InputError, match="decompression-bomb guard"):
        load_image(one_bit)
    with pytest.raises(InputError, match="decompression-bomb guard"):
        load_image(np.broadcast_to(np.zeros((1, 1), np.uint8), (11000, 11000)))
