"""Fuzzing the readers of files lvg is handed: model files (checkpoints, ONNX files, engine sidecars) and images.

Inputs are real files made by lvg and Pillow, damaged by hypothesis: bytes overwritten or cut, and (for the
parts that are JSON) fields replaced by hostile values. For every input:

- only an :class:`~lvg.errors.LVGError` may escape the reader (anything else is a bug);
- resident memory may not rise more than :data:`MEMORY_BOUND_MIB` above where it stood (the reader checks
  sizes before it allocates);
- nothing is written anywhere: the work folder holds exactly the files the test put there.

Bounded: a fixed number of examples per reader, a deadline per example and no example database, so the module
runs in well under a minute (``pytest tests/core/test_fuzz.py -q --durations=0`` shows it).
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from lvg.core.image import load_image
from lvg.core.model_file import ModelFile
from lvg.errors import LVGError
from tests.helpers.hostile import PeakMemory, read_safetensors_header

#: Largest rise of resident memory any one input may cause.
MEMORY_BOUND_MIB = 300
# The deadline catches a reader that hangs on a hostile input; it is far above an example's normal time (tens of
# milliseconds) because a CI machine shared with other jobs can run an example a hundred times slower.
FUZZ = settings(max_examples=120, deadline=30_000, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

_edits = st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=8)), max_size=6)
_cut = st.one_of(st.none(), st.floats(0, 1))
_hostile_value = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.lists(st.integers(-(2**40), 2**50), max_size=5),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
)


def _damage(data: bytes, edits, cut, region: int | None = None) -> bytes:
    """``data`` with ``edits`` (position as a fraction of ``region`` bytes, new bytes) applied, then cut."""
    out = bytearray(data)
    span = min(region or len(out), len(out))
    for where, new in edits:
        at = int(where * span)
        out[at : at + len(new)] = new
    if cut is not None:
        out = out[: int(cut * len(out))]
    return bytes(out)


class _Work:
    """A folder holding exactly the files a test wrote: any other file appearing in it fails the test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(exist_ok=True)

    def write(self, name: str, data: bytes) -> Path:
        for old in self.root.iterdir():
            old.unlink()
        path = self.root / name
        path.write_bytes(data)
        return path

    def run(self, read) -> LVGError | None:
        """Run ``read``; returns the LVGError it raised, if any (any other exception fails the test)."""
        before = sorted(p.name for p in self.root.iterdir())
        error = None
        with PeakMemory() as peak:
            try:
                read()
            except LVGError as exc:
                assert "\n" not in str(exc)
                error = exc
        assert peak.growth_mib < MEMORY_BOUND_MIB, peak.growth_mib
        assert sorted(p.name for p in self.root.iterdir()) == before
        return error


def _read_model(path: Path) -> None:
    model_file = ModelFile.open(path)
    if model_file.kind == "torch":
        from lvg.modeling.checkpoint import read_checkpoint_tensors

        read_checkpoint_tensors(model_file)
    model_file.tokenizer()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> _Work:
    return _Work(Path(tmp_path_factory.mktemp("fuzz")) / "work")


@FUZZ
@given(edits=_edits, cut=_cut)
def test_checkpoint_bytes(micro, work: _Work, edits, cut) -> None:
    data = micro.ckpt.read_bytes()
    _, start = read_safetensors_header(micro.ckpt)
    path = work.write("model.safetensors", _damage(data, edits, cut, region=start + 64))
    work.run(lambda: _read_model(path))


@FUZZ
@given(tensor=st.integers(0, 10_000), field=st.sampled_from(["dtype", "shape", "data_offsets", None]),
       value=_hostile_value,
       meta_key=st.sampled_from(["config", "format_version", "tensor_crc32", "lvg.tokenizer_spm"]),
       meta_value=st.one_of(st.none(), st.text(max_size=30), _hostile_value.map(json.dumps)))
@example(tensor=0, field="data_offsets", value="\n", meta_key="config", meta_value=None)
@example(tensor=0, field="shape", value="\n", meta_key="config", meta_value=None)
def test_checkpoint_header_fields(micro, work: _Work, tensor, field, value, meta_key, meta_value) -> None:
    header, start = read_safetensors_header(micro.ckpt)
    names = sorted(k for k in header if k != "__metadata__")
    name = names[tensor % len(names)]
    if field is None:
        header.pop(name)
    else:
        header[name][field] = value
    if meta_value is not None:
        header["__metadata__"][meta_key] = meta_value
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path = work.write("model.safetensors", len(raw).to_bytes(8, "little") + raw + micro.ckpt.read_bytes()[start:])
    work.run(lambda: _read_model(path))


@FUZZ
@given(section=st.sampled_from(["encoder", "latent", "head", "preprocess"]), key=st.integers(0, 100),
       value=_hostile_value)
def test_model_config_fields(micro, work: _Work, section, key, value) -> None:
    from tests.helpers.hostile import set_onnx_metadata

    config = json.loads(ModelFile.open(micro.onnx).metadata["lvg.config"])
    fields = sorted(config[section])
    config[section][fields[key % len(fields)]] = value
    path = work.root / "model.onnx"
    work.write("model.onnx", b"")
    set_onnx_metadata(micro.onnx, path, {"lvg.config": json.dumps(config)})
    work.run(lambda: _read_model(path))


@FUZZ
@given(edits=_edits, cut=_cut, near_end=st.booleans())
def test_onnx_bytes(micro, work: _Work, edits, cut, near_end) -> None:
    data = micro.onnx.read_bytes()
    if near_end:  # the metadata is written last, after the graph
        data = data[::-1]
        data = _damage(data, edits, None, region=4096)[::-1]
        edits = []
    path = work.write("model.onnx", _damage(data, edits, cut))
    work.run(lambda: _read_model(path))


@FUZZ
@given(meta=st.dictionaries(st.sampled_from(["lvg.format", "lvg.format_version", "lvg.config", "lvg.trt_batch",
                                             "lvg.precision", "lvg.gflops_per_sample", "lvg.tokenizer_spm"]),
                            st.one_of(st.text(max_size=20), _hostile_value.map(json.dumps)), max_size=4),
       raw=st.one_of(st.none(), st.binary(max_size=64)))
def test_engine_sidecars(micro, work: _Work, meta, raw) -> None:
    base = dict(ModelFile.open(micro.onnx).metadata, **{"lvg.trt_batch": "1"})
    text = raw if raw is not None else json.dumps({**base, **meta}).encode()
    engine = work.write("model.engine", b"engine bytes")
    (work.root / "model.engine.json").write_bytes(text)
    work.run(lambda: _read_model(engine))


def _seed_images() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
    out = {}
    for fmt, mode in (("PNG", "RGB"), ("JPEG", "RGB"), ("GIF", "P"), ("BMP", "RGB"), ("TIFF", "RGB"), ("WEBP", "RGB"),
                      ("PNG", "I;16"), ("PNG", "LA")):
        img = Image.fromarray(arr)
        img = img.convert(mode) if mode != "I;16" else Image.fromarray(arr[..., 0].astype(np.uint16) * 257)
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        out[f"{fmt}-{mode}"] = buf.getvalue()
    return out


_SEEDS = _seed_images()


@settings(FUZZ, max_examples=250)
@given(seed=st.sampled_from(sorted(_SEEDS)), edits=_edits, cut=_cut, header=st.booleans())
def test_image_files(work: _Work, seed, edits, cut, header) -> None:
    data = _damage(_SEEDS[seed], edits, cut, region=64 if header else None)
    path = work.write("image." + seed.split("-")[0].lower(), data)
    work.run(lambda: load_image(path))


@FUZZ
@given(shape=st.lists(st.integers(0, 5000), min_size=0, max_size=4),
       dtype=st.sampled_from([np.uint8, np.uint16, np.float32, np.bool_, np.int64]),
       mode=st.sampled_from(["1", "L", "P", "RGB", "RGBA", "CMYK", "I", "F", "I;16", "LA", "YCbCr"]),
       size=st.tuples(st.integers(1, 30_000), st.integers(1, 30_000)))
def test_arrays_and_pil_images(work: _Work, shape, dtype, mode, size) -> None:
    if math.prod(shape) <= 4_000_000:  # a real array of that shape (its own memory is the caller's)
        arr = np.broadcast_to(np.zeros((), dtype), tuple(shape))
        work.run(lambda: load_image(arr))
    # A PIL image that claims ``size`` before holding its pixels, as Image.open gives one: over the pixel limit
    # it is refused from its size alone; under it, a small one is decoded.
    lazy = Image.new(mode, (1, 1))
    lazy._size = size  # noqa: SLF001 - what a decoder that has read only the header reports
    if size[0] * size[1] > 100_000_000:
        assert "decompression-bomb guard" in str(work.run(lambda: load_image(lazy)))
    elif size[0] * size[1] <= 4_000_000:
        work.run(lambda: load_image(Image.new(mode, size)))
