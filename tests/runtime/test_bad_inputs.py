"""The bad-input matrix, end to end: real files written here, through ``Grounder`` and ``lvg infer``.

Every bad case must give a typed one-line :mod:`lvg.errors` exception in the API, and in the CLI a
one-line ``error: ...`` on stderr, a non-zero exit and no traceback. Every valid case must give a valid
result whose values match a prediction on an independently decoded pixel array. Most CLI cases run
through typer's CliRunner (in-process, fast); a representative subset runs as real subprocesses.

Loader-level details (exact pixel values of each mode) are in test_image.py / test_tokenizer.py; this
file checks the whole path a request takes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from lvg.cli import app
from lvg.core.tokenizer import TextTruncatedWarning
from lvg.errors import ArtifactError, CheckpointError, InputError, LVGError
from lvg.runtime.grounder import Grounder
from tests.helpers.micro_model import Micro

TEXT = "the man on the left"



@pytest.fixture(scope="module")
def grounder(micro: Micro) -> Grounder:
    return Grounder.load(micro.onnx, device="cpu")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    return Path(tmp_path_factory.mktemp("bad-inputs"))


def _rng_image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    arr[:, : w // 2] //= 3  # structure for the random model
    return arr


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` 8-bit gray pixels with almost no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + _png_chunk(b"IEND", b""))


class _Evil:
    """A pickle whose loading would run ``touch <marker>``: proof that nothing unpickles it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ---------------------------------------------------------------------------------------------- images


def _bad_image(kind: str, d: Path) -> Path:
    """Write the bad image ``kind`` under ``d`` and return its path."""
    good = _rng_image(48, 64, seed=1)
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
        (d / "bomb.png").write_bytes(_png_header_only(20000, 10000))  # 200 MP claimed, 1 KB on disk
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


def _valid_image(kind: str, d: Path) -> tuple[Path, np.ndarray]:
    """Write the valid image ``kind``; return its path and the RGB array it must be seen as, derived
    independently of lvg's loader (numpy arithmetic, or Pillow's raw decode plus a numpy rotation)."""
    if kind == "png16":
        rng = np.random.default_rng(2)
        gray16 = rng.integers(0, 65536, size=(30, 50)).astype(np.uint16)
        raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in gray16)
        ihdr = struct.pack(">IIBBBBB", 50, 30, 16, 0, 0, 0, 0)
        path = d / "gray16.png"
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(raw))
                         + _png_chunk(b"IEND", b""))
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
        a, b = _rng_image(32, 40, 4), _rng_image(32, 40, 5)
        path = d / "anim.gif"
        frames = [Image.fromarray(a).quantize(64), Image.fromarray(b).quantize(64)]
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
        with Image.open(path) as im:
            assert im.is_animated and im.tell() == 0
            return path, np.asarray(im.convert("RGB"))  # frame 0 as Pillow decodes it
    if kind == "exif-rotated":
        stored = _rng_image(40, 64, 6)  # stored 64 wide x 40 tall
        path = d / "rot.jpg"
        exif = Image.Exif()
        exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
        Image.fromarray(stored).save(path, exif=exif, quality=95)
        with Image.open(path) as im:
            raw = np.asarray(im.convert("RGB"))  # Pillow does not apply EXIF orientation by itself
        return path, np.ascontiguousarray(np.rot90(raw, k=-1))  # displayed: 40 wide x 64 tall
    raise AssertionError(kind)


VALID_IMAGES = ["png16", "cmyk-jpeg", "palette-transparent", "grayscale", "one-pixel", "animated-gif", "exif-rotated"]


def _check_valid(r, h: int, w: int) -> None:
    assert r.mask.shape == (h, w) and r.mask.dtype == bool
    assert r.prob.shape == (h, w) and np.isfinite(r.prob).all() and (r.prob >= 0).all() and (r.prob <= 1).all()
    if r.box is None:
        assert not r.mask.any() and r.score == 0.0
    else:
        x1, y1, x2, y2 = r.box
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        inside = np.zeros_like(r.mask)
        inside[y1:y2, x1:x2] = True
        assert not (r.mask & ~inside).any()
        assert 0.0 <= r.score <= 1.0


def _one_line_error(exc: BaseException) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg and "Traceback" not in msg
    return msg


@pytest.mark.parametrize("kind", list(BAD_IMAGES))
def test_bad_image_api(grounder: Grounder, files: Path, kind: str) -> None:
    path = _bad_image(kind, files)
    with pytest.raises(InputError, match=BAD_IMAGES[kind]) as info:
        grounder.predict(path, TEXT)
    assert str(path) in _one_line_error(info.value)


@pytest.mark.parametrize("kind", VALID_IMAGES)
def test_valid_image_api(grounder: Grounder, files: Path, kind: str) -> None:
    path, expected = _valid_image(kind, files)
    r = grounder.predict(path, TEXT)
    h, w = expected.shape[:2]
    _check_valid(r, h, w)
    # The same prediction as on the independently decoded pixels: mask aligned with the displayed image.
    ref = grounder.predict(expected, TEXT)
    np.testing.assert_array_equal(r.image, expected)
    np.testing.assert_array_equal(r.prob, ref.prob)
    np.testing.assert_array_equal(r.mask, ref.mask)


def test_exif_rotation_moves_the_mask(grounder: Grounder, files: Path) -> None:
    # Alignment, not just shape: the displayed image is the stored one rotated clockwise, so the
    # prediction on the file must be the prediction on the stored pixels' rotation, which differs
    # from the unrotated one's mask rotated (the model is not rotation-equivariant) - check both ways.
    path, displayed = _valid_image("exif-rotated", files)
    r = grounder.predict(path, TEXT)
    assert r.mask.shape == (64, 40)
    stored = np.ascontiguousarray(np.rot90(displayed, k=1))
    unrotated = grounder.predict(stored, TEXT)
    assert unrotated.mask.shape == (40, 64)
    assert not np.array_equal(r.prob, np.rot90(unrotated.prob, k=-1))  # the file was not read as stored


def test_broken_exif_uses_the_stored_pixels_with_a_warning(grounder: Grounder, files: Path) -> None:
    # The pixels are intact, only the orientation is unreadable: the image is used as stored, and says so.
    stored = (np.random.default_rng(3).random((40, 64, 3)) * 255).astype(np.uint8)
    path = files / "broken-exif.jpg"
    truncated_ifd = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x05\x00\x12\x01\x03\x00"  # 5 entries promised, 1 begun
    Image.fromarray(stored).save(path, exif=truncated_ifd, quality=95)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = grounder.predict(path, TEXT)
    assert any("EXIF" in str(w.message) for w in caught)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reading the reference pixels warns about the EXIF block again
        reference = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(r.image, reference)


# ------------------------------------------------------------------------------------------------ text

BAD_TEXTS = {"empty": "", "whitespace": " \t\n  ", "zero-width": "\u200b\u200c\u200d\ufeff", "control": "\x00\x07\x1b"}


@pytest.mark.parametrize("kind", list(BAD_TEXTS))
def test_bad_text_api(grounder: Grounder, micro: Micro, kind: str) -> None:
    with pytest.raises(InputError, match="text is empty") as info:
        grounder.predict(micro.image, BAD_TEXTS[kind])
    _one_line_error(info.value)


@pytest.mark.parametrize("text", [None, b"the man", 42])
def test_non_string_text(grounder: Grounder, micro: Micro, text) -> None:
    with pytest.raises(InputError, match="must be a string"):
        grounder.predict(micro.image, text)


def test_ten_thousand_characters_truncated_with_a_warning(grounder: Grounder, micro: Micro) -> None:
    room = grounder.config.preprocess.max_text_len - 2
    word = "the"
    assert len(grounder.tokenizer.word_ids(word)) == 1  # one piece per word, so room words fill it exactly
    text = f"{word} " * 2500
    assert len(text) == 10_000
    with pytest.warns(TextTruncatedWarning, match="truncated"):
        r = grounder.predict(micro.image, text)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TextTruncatedWarning)  # exactly `room` pieces: no warning
        ref = grounder.predict(micro.image, " ".join([word] * room))
    np.testing.assert_array_equal(r.prob, ref.prob)
    # The result keeps the text as given and says the model read only its start.
    assert r.text == text and r.text_truncated and r.to_dict()["text_truncated"] is True
    assert not ref.text_truncated and ref.to_dict()["text_truncated"] is False


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        ("the man\u200b on the\u200d left", "the man on the left"),  # zero-width characters vanish
        ("the man\x00 on\x07 the\x1b left", "the man on the left"),  # control characters vanish
        ("\u202ethe man on the left\u202c", "the man on the left"),  # bidi overrides are format chars
        ("the   man\ton\n\nthe left", "the man on the left"),  # whitespace runs collapse
    ],
)
def test_invisible_characters_are_ignored(grounder: Grounder, micro: Micro, text: str, clean: str) -> None:
    np.testing.assert_array_equal(grounder.predict(micro.image, text).prob, grounder.predict(micro.image, clean).prob)


@pytest.mark.parametrize("text", ["the dog 🐶 on the left 😀", "الرجل على اليسار", "האיש משמאל", "左边的男人",
                                  "👍🏽" * 30])
def test_emoji_and_right_to_left_give_valid_output(grounder: Grounder, micro: Micro, text: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TextTruncatedWarning)
        r = grounder.predict(micro.image, text)
    _check_valid(r, 120, 200)


def test_bad_threshold(grounder: Grounder, micro: Micro) -> None:
    for t in (float("nan"), -0.1, 1.0, "high"):
        with pytest.raises(InputError, match="threshold"):
            grounder.predict(micro.image, TEXT, mask_threshold=t)


# ---------------------------------------------------------------------------------------------- models


def _bad_model(kind: str, micro: Micro, d: Path) -> Path:
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
        path.write_bytes(pickle.dumps({"state_dict": _Evil(d / "PWNED")}))
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


@pytest.mark.parametrize("kind", list(BAD_MODELS))
def test_bad_model_api(micro: Micro, files: Path, kind: str) -> None:
    path = _bad_model(kind, micro, files)
    etype, pattern = BAD_MODELS[kind]
    with pytest.raises(etype, match=pattern) as info:
        # Some mismatches only show when the graph runs: load, then predict.
        Grounder.load(path, device="cpu").predict(micro.image, TEXT)
    _one_line_error(info.value)
    assert not (files / "PWNED").exists()  # nothing was unpickled


@pytest.mark.parametrize("kind", ["onnx-missing-inputs", "onnx-wrong-text-length", "onnx-wrong-size",
                                  "onnx-wrong-head"])
def test_onnx_graph_contradicting_its_metadata_is_refused_at_load(micro: Micro, files: Path, kind: str) -> None:
    # A server must fail when it starts, not on its first request.
    with pytest.raises(ArtifactError, match=BAD_MODELS[kind][1]) as info:
        Grounder.load(_bad_model(kind, micro, files), device="cpu")
    _one_line_error(info.value)


def test_pickle_never_executed_anywhere(micro: Micro, grounder: Grounder, tmp_path: Path) -> None:
    # The same code-running pickle offered as a model, an image and a tokenizer: all refused, none run.
    marker = tmp_path / "PWNED"
    blob = pickle.dumps(_Evil(marker))
    pickle.loads(pickle.dumps(_Evil(tmp_path / "proof")))  # the payload really works when unpickled
    assert (tmp_path / "proof").exists()
    for suffix in (".pth", ".pt", ".ckpt", ".bin", ".pkl", ".safetensors", ".onnx"):
        p = tmp_path / f"evil{suffix}"
        p.write_bytes(blob)
        with pytest.raises(ArtifactError):
            Grounder.load(p, device="cpu")
    (tmp_path / "evil.jpg").write_bytes(blob)
    with pytest.raises(InputError, match="not an image"):
        grounder.predict(tmp_path / "evil.jpg", TEXT)
    (tmp_path / "evil.spm").write_bytes(blob)
    with pytest.raises(ArtifactError, match="not a sentencepiece model"):
        Grounder.load(micro.onnx, tokenizer=tmp_path / "evil.spm")
    assert not marker.exists()


def test_expected_variant(micro: Micro) -> None:
    assert Grounder.load(micro.onnx, variant="lvg-tiny").config.name == "lvg-tiny"
    with pytest.raises(ArtifactError, match="holds variant 'lvg-tiny', not the expected 'lvg-tiny-gres'"):
        Grounder.load(micro.onnx, variant="lvg-tiny-gres")
    with pytest.raises(InputError, match="unknown variant"):
        Grounder.load(micro.onnx, variant="lvg-xxl")


# ------------------------------------------------------------------------------------------------- CLI


def _cli(args: list[str]):
    return CliRunner().invoke(app, ["infer", *args])


def _assert_cli_error(res, pattern: str) -> None:
    assert res.exit_code != 0, res.output
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)  # handled, not escaped
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and pattern in lines[0], res.stderr
    assert res.stdout == ""


def test_cli_matrix(micro: Micro, files: Path) -> None:
    model = str(micro.onnx)
    # On the command line a directory is a folder of inputs (lvg infer DIR): an empty one is the error.
    cli_patterns = {**BAD_IMAGES, "directory": "holds no image file"}
    for kind, pattern in cli_patterns.items():
        _assert_cli_error(_cli([str(_bad_image(kind, files)), TEXT, "--model", model]), pattern)
    for text in BAD_TEXTS.values():
        _assert_cli_error(_cli([str(micro.image), text, "--model", model]), "text is empty")
    for kind, (_, pattern) in BAD_MODELS.items():
        _assert_cli_error(_cli([str(micro.image), TEXT, "--model", str(_bad_model(kind, micro, files))]), pattern)
    _assert_cli_error(_cli([str(micro.image), TEXT, "--model", model, "--threshold", "1.5"]), "threshold")
    _assert_cli_error(_cli([str(micro.image), TEXT, "--model", model, "--out", str(files)]), "is a directory")
    assert not (files / "PWNED").exists()


def test_cli_valid_cases(micro: Micro, files: Path) -> None:
    model = str(micro.onnx)
    for kind in VALID_IMAGES:
        path, expected = _valid_image(kind, files)
        res = _cli([str(path), TEXT, "--model", model, "--json"])
        assert res.exit_code == 0, res.output
        data = json.loads(res.stdout)
        assert data["image_size"] == [expected.shape[1], expected.shape[0]]
        assert data["mask_rle"]["size"] == [expected.shape[0], expected.shape[1]]
    res = _cli([str(micro.image), " ".join(["the"] * 2500), "--model", model])
    assert res.exit_code == 0 and res.stderr.startswith("warning: text truncated"), res.output
    assert "mask" in res.stdout
    res = _cli([str(micro.image), " ".join(["the"] * 2500), "--model", model, "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["text_truncated"] is True


def test_cli_unexpected_exception_is_one_line(monkeypatch) -> None:
    # A bug (any non-LVGError exception) becomes one line and exit 1; LVG_DEBUG=1 shows the traceback.
    from lvg.cli._common import handle_errors

    probe = typer.Typer()

    @probe.command()
    @handle_errors
    def crash(kind: str) -> None:
        if kind == "bug":
            raise KeyError("multi\nline")
        if kind == "memory":
            raise MemoryError()
        if kind == "exit":
            raise typer.Exit(7)

    runner = CliRunner()
    res = runner.invoke(probe, ["bug"])
    assert res.exit_code == 1 and res.stderr.count("\n") == 1
    assert res.stderr.startswith("error: internal error: KeyError: 'multi") and "LVG_DEBUG=1" in res.stderr
    res = runner.invoke(probe, ["memory"])
    assert res.exit_code == 1 and res.stderr.startswith("error: out of memory")
    assert runner.invoke(probe, ["exit"]).exit_code == 7  # typer's own exits pass through
    monkeypatch.setenv("LVG_DEBUG", "1")
    res = runner.invoke(probe, ["bug"])
    assert isinstance(res.exception, KeyError)  # re-raised for the traceback


def _lvg() -> list[str]:
    exe = shutil.which("lvg")
    return [exe] if exe else [sys.executable, "-m", "lvg.cli"]


@pytest.mark.parametrize(
    "case",
    ["truncated-jpeg", "pickle-pth", "onnx-wrong-size", "valid-exif"],
)
def test_cli_subprocess(micro: Micro, files: Path, case: str) -> None:
    # Real processes for a representative subset: an image error, a refused pickle, a model that only
    # fails when run (the runtime error path), and a valid EXIF-rotated photo.
    model, image = str(micro.onnx), str(micro.image)
    if case in BAD_IMAGES:
        image, pattern = str(_bad_image(case, files)), BAD_IMAGES[case]
    elif case in BAD_MODELS:
        model, pattern = str(_bad_model(case, micro, files)), BAD_MODELS[case][1]
    else:
        path, expected = _valid_image("exif-rotated", files)
        image, pattern = str(path), ""
    proc = subprocess.run([*_lvg(), "infer", image, TEXT, "--model", model, "--json"], capture_output=True, text=True,
                          timeout=120)
    assert "Traceback" not in proc.stderr
    if pattern:
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and pattern in proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["image_size"] == [expected.shape[1], expected.shape[0]]
    assert not (files / "PWNED").exists()
