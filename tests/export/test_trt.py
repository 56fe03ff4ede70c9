"""TensorRT: engine build and run where tensorrt is installed; otherwise the errors name the extra."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from lvg.cli import app
from lvg.core import artifact as art
from lvg.errors import MissingDependencyError

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed: the missing-dependency path cannot be exercised")
def test_cli_export_trt_names_the_extra(artifacts):
    res = CliRunner().invoke(app, ["export", "--ckpt", str(artifacts.ckpt["lvg-tiny"]), "--format", "trt"])
    assert res.exit_code == 2
    assert "pip install 'latent-vg[trt]'" in res.output
    assert "Traceback" not in res.output


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed")
def test_build_engine_and_engine_backend_name_the_extra(artifacts, tmp_path):
    from lvg.export.trt import build_engine
    from lvg.runtime.backends import open_backend

    with pytest.raises(MissingDependencyError, match=r"latent-vg\[trt\]"):
        build_engine(artifacts.onnx[("lvg-tiny", False)], tmp_path / "m.engine")
    # An engine file with its sidecar: the backend gets as far as importing tensorrt.
    import onnxruntime as ort

    sess = ort.InferenceSession(str(artifacts.onnx[("lvg-tiny", False)]), providers=["CPUExecutionProvider"])
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not really an engine")
    meta = dict(sess.get_modelmeta().custom_metadata_map, **{art.KEY_TRT_BATCH: "1"})
    art.engine_sidecar(engine).write_text(json.dumps(meta))
    with pytest.raises(MissingDependencyError, match=r"latent-vg\[trt\]"):
        open_backend(engine)


@pytest.mark.skipif(not HAS_TRT, reason="tensorrt is not installed (pip install 'latent-vg[trt]')")
@pytest.mark.gpu
@pytest.mark.parametrize("fp16", [False, True])
def test_engine_matches_onnxruntime(artifacts, tmp_path, fp16):  # pragma: no cover - needs a GPU and TensorRT
    from lvg.export.onnx_export import example_inputs
    from lvg.export.trt import build_engine
    from lvg.runtime.backends import open_backend

    src = artifacts.onnx[("lvg-tiny-gres", fp16)]
    report = build_engine(src, tmp_path / "m.engine", batch=2, fp16=fp16)
    assert report.sidecar.is_file()
    engine = open_backend(report.path)
    onnx_be = open_backend(src, device="cpu")
    image, ids, mask = example_inputs(engine.info.config, 2, seed=5)
    a = engine.run(image.numpy(), ids.numpy(), mask.numpy())
    b = onnx_be.run(image.numpy(), ids.numpy(), mask.numpy())
    assert np.abs(a.prob - b.prob).max() < (2e-2 if fp16 else 1e-3)
