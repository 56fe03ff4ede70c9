"""Static int8: a QDQ copy of an fp32 export, calibrated on the model's domain, checked against its source,
and run by the runtime at int8 only (OpenVINO where installed, else ONNX Runtime)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from lvg import Grounder
from lvg.core import artifact as art
from lvg.core.model_file import ModelFile
from lvg.errors import InputError, LVGError
from lvg.export import MASK_AGREEMENT
from lvg.export.int8 import FP32_SCOPES, QUANTISED_OPS, quantize_int8
from lvg.runtime.backends import open_backend
from lvg.train.calibration import calibration_sets

TINY_AGREEMENT = 0.95


def _meta(path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


@pytest.fixture(scope="module", params=["lvg-tiny", "lvg-tiny-gres"])
def quantised(request, artifacts, synth_dataset, tmp_path_factory):
    src = artifacts.onnx[(request.param, False)]
    calib, check, record = calibration_sets(str(synth_dataset.out_dir), ModelFile.open(src), samples=16,
                                            check_samples=8)
    out = tmp_path_factory.mktemp("int8") / f"{request.param}.int8.onnx"
    # Random weights put many probabilities near the mask threshold, where int8 rounding flips pixels that a
    # trained model is sure of: the tiny models are held to 95% (the bundled model measures 99.95%).
    report = quantize_int8(src, out, calib, check=check, calibration_info=record, min_agreement=TINY_AGREEMENT)
    return src, out, report, _batch(check)


def _batch(feeds) -> dict[str, np.ndarray]:
    """Held-back samples (real scenes, not calibrated on) as one batch: (1, ...) each -> (N, ...)."""
    items = list(feeds)
    return {k: np.concatenate([f[k] for f in items]) for k in items[0]}


def test_metadata_is_the_source_s_with_int8_and_how_it_was_calibrated(quantised):
    src, out, report, _ = quantised
    before, after = _meta(src), _meta(out)
    assert after.pop(art.KEY_PRECISION) == "int8" and before.pop(art.KEY_PRECISION) == "fp32"
    calibration = json.loads(after.pop(art.KEY_CALIBRATION))
    assert after == before  # config, tokenizer, domain words, source ...: all carried over unchanged
    assert calibration["samples"] == 16 and calibration["check_samples"] == 8
    assert calibration["split"] == "train"
    assert report.calibration == calibration and report.check_samples == 8
    gres = ModelFile.open(src).info.gres
    assert calibration["data"] == ("grefcoco-synth(unc)" if gres else "refcoco-synth(unc)")
    assert (report.no_target_agreement is None) == (not gres)
    assert gres is False or 0.5 <= report.no_target_agreement <= 1.0
    assert report.mask_agreement >= TINY_AGREEMENT and MASK_AGREEMENT == 0.995
    info = ModelFile.open(out).info
    assert info.precision == "int8" and info.config == ModelFile.open(src).config


def test_encoder_products_are_int8_and_the_sensitive_scopes_stay_fp32(quantised):
    _, out, report, _ = quantised
    graph = onnx.load(str(out)).graph
    producer = {o: n for n in graph.node for o in n.output}

    def int8_input(node) -> bool:
        return any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in node.input)

    products = [n for n in graph.node if n.op_type in QUANTISED_OPS]
    sensitive = [n for n in products if any(s in n.name for s in FP32_SCOPES)]
    encoder = [n for n in products if "/layers." in n.name]
    assert sensitive and encoder
    assert not any(int8_input(n) for n in sensitive)
    assert all(int8_input(n) for n in encoder)
    assert report.quantised == len(products) - len(sensitive) and report.kept_fp32 == len(sensitive)


def test_masks_agree_with_fp32_on_new_inputs(quantised):
    src, out, _, x = quantised
    fp32 = open_backend(src, precision="fp32")
    int8 = open_backend(out, backend="onnxruntime")
    assert (int8.name, int8.precision) == ("onnxruntime", "int8")
    thr = fp32.info.config.preprocess.mask_threshold
    a = fp32.run(x["image"], x["text_ids"], x["text_mask"]).prob  # batch 8, where the check ran one by one
    b = int8.run(x["image"], x["text_ids"], x["text_mask"]).prob
    assert float(((a > thr) == (b > thr)).mean()) >= TINY_AGREEMENT
    assert 0 < float(np.abs(a - b).mean()) < 0.02  # really quantised, and close


def test_openvino_runs_the_same_int8_file(quantised, tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    monkeypatch.setenv("LVG_HOME", str(tmp_path))
    _, out, _, x = quantised
    ov = open_backend(out)
    ort = open_backend(out, backend="onnxruntime")
    assert (ov.name, ov.precision, ov.device) == ("openvino", "int8", "openvino:CPU")
    a = ort.run(x["image"], x["text_ids"], x["text_mask"]).prob
    b = ov.run(x["image"], x["text_ids"], x["text_mask"]).prob
    thr = ov.info.config.preprocess.mask_threshold
    assert float(((a > thr) == (b > thr)).mean()) >= TINY_AGREEMENT and float(np.abs(a - b).mean()) < 0.02


def test_the_runtime_answers_at_int8_and_refuses_other_precisions(quantised, artifacts):
    _, out, _, _ = quantised
    g = Grounder.load(out, backend="onnxruntime")
    result = g.predict(artifacts.image, "the red cup")
    assert result.model["precision"] == "int8" and result.mask.shape == (120, 200)
    for precision in ("fp32", "bf16"):
        with pytest.raises(InputError, match="quantised to int8"):
            Grounder.load(out, precision=precision)
    with pytest.raises(InputError, match="--int8 --calib"):
        Grounder.load(artifacts.onnx[("lvg-tiny", False)], precision="int8")


def test_refusals_leave_nothing_behind(artifacts, synth_dataset, tmp_path):
    src = artifacts.onnx[("lvg-tiny", False)]
    calib, check, _ = calibration_sets(str(synth_dataset.out_dir), ModelFile.open(src), samples=4, check_samples=4)
    out = tmp_path / "m.int8.onnx"
    with pytest.raises(LVGError, match="mask pixels"):
        quantize_int8(src, out, calib, check=check, min_agreement=1.01)  # no file can meet this
    with pytest.raises(InputError, match="no calibration sample"):
        quantize_int8(src, out, [], check=check)
    with pytest.raises(InputError, match="no held-back sample"):
        quantize_int8(src, out, calib, check=[])  # a file no check has passed is never written
    with pytest.raises(InputError, match="name it"):
        quantize_int8(src, tmp_path / "m.int8.bin", calib, check=check)
    with pytest.raises(InputError, match="starts from an fp32 .onnx"):
        quantize_int8(artifacts.onnx[("lvg-tiny", True)], out, calib, check=check)
    with pytest.raises(InputError, match="starts from an fp32 .onnx"):
        quantize_int8(artifacts.ckpt["lvg-tiny"], out, calib, check=check)
    assert list(tmp_path.iterdir()) == []
    copy = tmp_path / "m.onnx"
    copy.write_bytes(src.read_bytes())
    with pytest.raises(InputError, match="must not replace"):
        quantize_int8(copy, copy, calib, check=check)
    assert copy.read_bytes() == src.read_bytes()
