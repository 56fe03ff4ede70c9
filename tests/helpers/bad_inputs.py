"""Bad and unusual inputs written as real files, for the bad-input matrix of the runtime and the CLI.

- :func:`bad_image` / :data:`BAD_IMAGES`: images the runtime must refuse, and the words of each refusal;
- :func:`valid_image` / :data:`VALID_IMAGES`: unusual images it must accept, with the pixels they must be
  seen as, decoded independently of lvg's loader;
- :data:`BAD_TEXTS`: expressions that are empty once invisible characters are dropped;
- :func:`bad_model` / :data:`BAD_MODELS`: model files it must refuse (built from the micro model's), with
  the error type and words of each refusal;
- :class:`Evil`: a pickle whose loading would run a command, proof that nothing unpickles.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from lvg.errors import ArtifactError, CheckpointError, LVGError
from tests.helpers.micro_model import Micro

#: The expression every case asks about.
TEXT = "the man on the left"


def rng_image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    arr[:, : w // 2] //= 3  # structure for the random model
    return arr


def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` 8-bit gray pixels with almost no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + png_chunk(b"IEND", b""))


class Evil:
    """A pickle whose loading would run ``touch <marker>``: proof that nothing unpickles it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))

# ---------------------------------------------------------------------------------------------- images


def bad_image(kind: str, d: Path) -> Path:
    """Write the bad image ``kind`` under ``d`` and return its path."""
    good = rng_image(48, 64, seed=1)
    if kind == "zero-byte":
        (d / "zero.jpg").write_bytes(b"")
        return d / "zero.jpg"
    if kind in ("truncated-jpeg", "truncated-png"):
        fmt = "jpg" if kind == "truncated-jpeg" else "png"
        full = d / f"full.{fmt}"
        Image.fromarray(good).save(full)
        data = full.read_bytes()
        cut = d / f"cut.{fmt}"
        cut.write_bytes(data[: len(data) // 2])
        return cut
    if kind == "text-named-jpg":
        (d / "notes.jpg").write_text("this is a text file, not a photo\n" * 20)
        return d / "notes.jpg"
    if kind == "directory":
        (d / "folder.jpg").mkdir(exist_ok=True)
        return d / "folder.jpg"
    if kind == "missing":
        return d / "missing.jpg"
    if kind == "fifo":
        fifo = d / "pipe.png"
        if not fifo.exists():
            os.mkfifo(fifo)  # opening it for reading would block forever: must be refused first
        return fifo
    if kind == "huge":
        (d / "bomb.png").write_bytes(png_header_only(20000, 10000))  # 200 MP claimed, 1 KB on disk
        return d / "bomb.png"
    raise AssertionError(kind)


BAD_IMAGES = {
    "zero-byte": "empty",
    "truncated-jpeg": "truncated",
    "truncated-png": "truncated",
    "text-named-jpg": "not an image",
    "directory": "directory",
    "missing": "not found",
    "fifo": "not a regular file",
    "huge": "decompression-bomb guard",
}


def valid_image(kind: str, d: Path) -> tuple[Path, np.ndarray]:
    """Write the valid image ``kind``; return its path and the RGB array it must be seen as, derived
    independently of lvg's loader (numpy arithmetic, or Pillow's raw decode plus a numpy rotation)."""
    if kind == "png16":
        rng = np.random.default_rng(2)
        gray16 = rng.integers(0, 65536, size=(30, 50)).astype(np.uint16)
        raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in gray16)
        ihdr = struct.pack(">IIBBBBB", 50, 30, 16, 0, 0, 0, 0)
        path = d / "gray16.png"
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw))
                         + png_chunk(b"IEND", b""))
        g8 = np.rint(gray16.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)
        return path, np.repeat(g8[..., None], 3, axis=2)
    if kind == "cmyk-jpeg":
        cmyk = np.random.default_rng(3).integers(0, 256, size=(40, 56, 4), dtype=np.uint8)
        path = d / "cmyk.jpg"
        Image.fromarray(cmyk, mode="CMYK").save(path, quality=95)
        with Image.open(path) as im:
            assert im.mode == "CMYK"
            return path, np.asarray(im.convert("RGB"))
    if kind == "palette-transparent":
        idx = (np.arange(36 * 60) % 4).astype(np.uint8).reshape(36, 60)
        im = Image.fromarray(idx, mode="P")
        palette = [200, 30, 30, 30, 200, 30, 30, 30, 200, 250, 250, 250]
        im.putpalette(palette + [0] * (768 - len(palette)))
        im.info["transparency"] = 1  # index 1 (green) is fully transparent
        path = d / "palette.png"
        im.save(path, transparency=1)
        rgb = np.asarray(palette, dtype=np.uint8).reshape(4, 3)[idx]
        rgb[idx == 1] = 0  # transparent pixels composite onto black
        return path, rgb
    if kind == "grayscale":
        gray = (np.add.outer(np.arange(33), np.arange(70)) * 3 % 256).astype(np.uint8)
        path = d / "gray.png"
        Image.fromarray(gray, mode="L").save(path)
        return path, np.repeat(gray[..., None], 3, axis=2)
    if kind == "one-pixel":
        path = d / "one.png"
        Image.fromarray(np.array([[[10, 200, 30]]], dtype=np.uint8)).save(path)
        return path, np.array([[[10, 200, 30]]], dtype=np.uint8)
    if kind == "animated-gif":
        a, b = rng_image(32, 40, 4), rng_image(32, 40, 5)
        path = d / "anim.gif"
        frames = [Image.fromarray(a).quantize(64), Image.fromarray(b).quantize(64)]
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
        with Image.open(path) as im:
            assert im.is_animated and im.tell() == 0
            return path, np.asarray(im.convert("RGB"))  # frame 0 as Pillow decodes it
    if kind == "exif-rotated":
        stored = rng_image(40, 64, 6)  # stored 64 wide x 40 tall
        path = d / "rot.jpg"
        exif = Image.Exif()
        exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
        Image.fromarray(stored).save(path, exif=exif, quality=95)
        with Image.open(path) as im:
            raw = np.asarray(im.convert("RGB"))  # Pillow does not apply EXIF orientation by itself
        return path, np.ascontiguousarray(np.rot90(raw, k=-1))  # displayed: 40 wide x 64 tall
    raise AssertionError(kind)


VALID_IMAGES = ["png16", "cmyk-jpeg", "palette-transparent", "grayscale", "one-pixel", "animated-gif", "exif-rotated"]

BAD_TEXTS = {"empty": "", "whitespace": " \t\n  ", "zero-width": "\u200b\u200c\u200d\ufeff", "control": "\x00\x07\x1b"}


# ---------------------------------------------------------------------------------------------- models


def bad_model(kind: str, micro: Micro, d: Path) -> Path:
    """Write the bad model ``kind`` under ``d`` (real files, built from the micro model's)."""
    import onnx
    from onnx import TensorProto, helper

    if kind == "missing":
        return d / "nothing.onnx"
    if kind == "directory":
        (d / "dir.onnx").mkdir(exist_ok=True)
        return d / "dir.onnx"
    if kind == "zero-byte":
        (d / "empty.safetensors").write_bytes(b"")
        return d / "empty.safetensors"
    if kind == "truncated-safetensors":
        data = micro.ckpt.read_bytes()
        (d / "cut.safetensors").write_bytes(data[: len(data) * 2 // 3])  # header intact, tensors cut
        return d / "cut.safetensors"
    if kind == "truncated-onnx":
        data = micro.onnx.read_bytes()
        (d / "cut.onnx").write_bytes(data[: len(data) // 2])
        return d / "cut.onnx"
    if kind == "foreign-onnx":
        graph = helper.make_graph(
            [helper.make_node("Relu", ["image"], ["prob"])], "not-lvg",
            [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["B", 3, 96, 96])],
            [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["B", 3, 96, 96])],
        )
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(d / "foreign.onnx"))
        return d / "foreign.onnx"
    if kind == "onnx-missing-inputs":
        # Valid Latent-VG metadata on a graph that takes only the image.
        graph = helper.make_graph(
            [helper.make_node("Relu", ["image"], ["prob"])], "image-only",
            [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["B", 3, 96, 96])],
            [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["B", 3, 96, 96])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.metadata_props.extend(onnx.load(str(micro.onnx)).metadata_props)
        onnx.save(model, str(d / "image-only.onnx"))
        return d / "image-only.onnx"
    if kind in ("onnx-wrong-text-length", "onnx-wrong-size", "onnx-wrong-head"):
        from lvg.config import get_config
        from tests.helpers.micro_model import micro_config

        if kind == "onnx-wrong-text-length":
            base = micro_config("lvg-tiny")
            cfg = base.replace(preprocess=dataclasses.replace(base.preprocess, max_text_len=20))
        elif kind == "onnx-wrong-size":
            cfg = get_config("lvg-tiny")  # metadata says 480 x 480, the graph takes 96 x 96
        else:
            cfg = micro_config("lvg-tiny-gres")  # metadata promises a no-target head the graph lacks
        model = onnx.load(str(micro.onnx))
        for prop in model.metadata_props:
            if prop.key == "lvg.config":
                prop.value = cfg.to_json()
        onnx.save(model, str(d / f"{kind}.onnx"))
        return d / f"{kind}.onnx"
    if kind == "other-variant-tensors":
        from safetensors.numpy import load_file, save_file

        from lvg.core.model_file import ModelFile

        # lvg-tiny's tensors under lvg-tiny-gres's header: a checkpoint of another variant.
        save_file(load_file(str(micro.ckpt)), str(d / "mixed.safetensors"),
                  metadata=ModelFile.open(micro.gres_ckpt).metadata)
        return d / "mixed.safetensors"
    if kind.startswith("pickle"):
        suffix = kind.split("-", 1)[1]
        path = d / f"weights.{suffix}"
        path.write_bytes(pickle.dumps({"state_dict": Evil(d / "PWNED")}))
        return path
    raise AssertionError(kind)


BAD_MODELS: dict[str, tuple[type[LVGError], str]] = {
    "missing": (ArtifactError, "not found"),
    "directory": (ArtifactError, "directory"),
    "zero-byte": (ArtifactError, "empty"),
    "truncated-safetensors": (CheckpointError, "safetensors"),
    "truncated-onnx": (ArtifactError, "not a loadable ONNX model"),
    "foreign-onnx": (ArtifactError, "not a Latent-VG model"),
    "onnx-missing-inputs": (ArtifactError, "lacks the Latent-VG inputs/outputs text_ids, text_mask"),
    "onnx-wrong-text-length": (ArtifactError, "does not match its metadata"),
    "onnx-wrong-size": (ArtifactError, "does not match its metadata"),
    "onnx-wrong-head": (ArtifactError, "no no_target output"),
    "other-variant-tensors": (CheckpointError, "does not fit"),
    "pickle-pth": (ArtifactError, "pickles, which can run code"),
    "pickle-safetensors": (ArtifactError, "not a safetensors checkpoint"),
    "pickle-onnx": (ArtifactError, "not a loadable ONNX model"),
}
