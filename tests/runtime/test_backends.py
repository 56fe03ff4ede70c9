"""Backends behind one contract: chosen by suffix, clear errors, torch and ONNX Runtime agree."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lvg.core import artifact as art
from lvg.core.headers import read_safetensors_metadata
from lvg.core.model_file import ModelFile
from lvg.errors import ArtifactError, InputError
from lvg.runtime.backends import open_backend
from lvg.runtime.backends.ort_backend import OnnxRuntimeBackend, providers_for


def _inputs(cfg, batch, seed=0):
    rng = np.random.default_rng(seed)
    s, length = cfg.encoder.img_size, cfg.preprocess.max_text_len
    image = rng.uniform(-1, 1, (batch, 3, s, s)).astype(np.float32)
    ids = np.ones((batch, length), dtype=np.int64)
    ids[:, 0], ids[:, 1:5], ids[:, 5] = 0, rng.integers(4, 100, (batch, 4)), 2
    return image, ids, ids != 1


def test_suffix_selects_backend(artifacts):
    onnx_be = open_backend(artifacts.onnx[("lvg-tiny", False)], device="cpu")
    assert onnx_be.name == "onnxruntime" and onnx_be.device == "onnxruntime:CPUExecutionProvider"
    torch_be = open_backend(artifacts.ckpt["lvg-tiny"], device="cpu")
    assert torch_be.name == "torch" and torch_be.supports_attention
    assert onnx_be.info.config == torch_be.info.config
    with pytest.raises(InputError, match="cannot run"):
        open_backend(artifacts.onnx[("lvg-tiny", False)], backend="torch")
    with pytest.raises(InputError, match="unknown backend"):
        open_backend(artifacts.onnx[("lvg-tiny", False)], backend="tflite")


@pytest.mark.parametrize("variant", ["lvg-tiny", "lvg-tiny-gres"])
def test_onnxruntime_and_torch_backends_agree(artifacts, variant):
    a = open_backend(artifacts.onnx[(variant, False)], device="cpu")
    b = open_backend(artifacts.ckpt[variant], device="cpu")
    image, ids, mask = _inputs(a.info.config, 2)
    oa, ob = a.run(image, ids, mask), b.run(image, ids, mask)
    assert oa.prob.shape == (2, 120, 120)
    np.testing.assert_allclose(oa.prob, ob.prob, atol=1e-4)
    if variant.endswith("gres"):
        np.testing.assert_allclose(oa.no_target_logit, ob.no_target_logit, atol=1e-4)
    else:
        assert oa.no_target_logit is None and ob.no_target_logit is None


def test_torch_backend_attention(artifacts):
    be = open_backend(artifacts.ckpt["lvg-tiny"], device="cpu")
    image, ids, mask = _inputs(be.info.config, 1)
    out = be.run(image, ids, mask, return_attention=True)
    g = be.info.config.encoder.grid
    assert out.attention.shape == (1, 1 + be.info.config.latent.num_expressions, g, g)
    # Each map is a head/layer average of softmax rows restricted to patches: positive, sums <= 1.
    sums = out.attention.reshape(1, 3, -1).sum(-1)
    assert np.all(out.attention > 0) and np.all(sums <= 1 + 1e-5)
    with pytest.raises(InputError, match="torch backend"):
        open_backend(artifacts.onnx[("lvg-tiny", False)], device="cpu").run(image, ids, mask, return_attention=True)


def test_input_checks(artifacts):
    be = open_backend(artifacts.onnx[("lvg-tiny", False)], device="cpu")
    image, ids, mask = _inputs(be.info.config, 1)
    with pytest.raises(InputError, match="image batch"):
        be.run(image[:, :, :100], ids, mask)
    with pytest.raises(InputError, match="text_ids"):
        be.run(image, ids.astype(np.int32), mask)
    with pytest.raises(InputError, match="text_mask"):
        be.run(image, ids, mask.astype(np.int64))


def test_bad_files(tmp_path, artifacts):
    with pytest.raises(ArtifactError, match="unknown model file type"):
        open_backend(tmp_path / "model.pt")
    with pytest.raises(ArtifactError, match="not found"):
        open_backend(tmp_path / "missing.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(ArtifactError, match="not a loadable ONNX model"):
        open_backend(garbage)
    # A valid ONNX graph without lvg metadata is refused with a clear message.
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), str(foreign))
    with pytest.raises(ArtifactError, match="not a Latent-VG model"):
        open_backend(foreign)
    # A safetensors file that is not a checkpoint, and one that is not safetensors at all.
    notst = tmp_path / "x.safetensors"
    notst.write_bytes(b"\xff" * 32)
    with pytest.raises(ArtifactError, match="not a safetensors checkpoint"):
        open_backend(notst)


def test_engine_sidecar_errors(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    with pytest.raises(ArtifactError, match="sidecar"):
        open_backend(engine)
    art.engine_sidecar(engine).write_text(json.dumps({"lvg.format": "other"}))
    with pytest.raises(ArtifactError, match="not a Latent-VG model"):
        open_backend(engine)


def test_providers_for():
    assert providers_for("cpu", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert providers_for("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers_for("auto", both)[0] == ("CUDAExecutionProvider", {})
    assert providers_for("cuda:1", both)[0] == ("CUDAExecutionProvider", {"device_id": 1})
    with pytest.raises(InputError, match=r"latent-vg\[gpu\]"):
        providers_for("cuda", ["CPUExecutionProvider"])
    with pytest.raises(InputError, match="unknown device"):
        providers_for("tpu", both)


def test_safetensors_header_read_is_torch_free_and_matches(artifacts):
    from safetensors import safe_open

    ours = read_safetensors_metadata(artifacts.ckpt["lvg-tiny"])
    with safe_open(str(artifacts.ckpt["lvg-tiny"]), framework="numpy") as fh:
        assert ours == fh.metadata()
    info = ModelFile.open(artifacts.ckpt["lvg-tiny"]).info
    assert info.tokenizer_bytes == artifacts.spm.read_bytes()


def test_onnx_backend_is_thread_safe(artifacts):
    from concurrent.futures import ThreadPoolExecutor

    be = OnnxRuntimeBackend(artifacts.onnx[("lvg-tiny", False)], device="cpu")
    batches = [_inputs(be.info.config, 1, seed=s) for s in range(6)]
    serial = [be.run(*b).prob for b in batches]
    with ThreadPoolExecutor(3) as pool:
        parallel = list(pool.map(lambda b: be.run(*b).prob, batches))
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a, b)
