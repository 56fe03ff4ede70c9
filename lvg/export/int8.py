"""fp32 ONNX -> static int8 ONNX (QDQ), calibrated on inputs from the model's own domain.

Why static and QDQ: dynamic int8 (``quantize_dynamic``) re-measures activation ranges on every call and was
slower than fp32 on our CPUs; static int8 fixes the ranges once, from real images and sentences of the
training domain, and stores them as ``QuantizeLinear`` / ``DequantizeLinear`` pairs around each quantised
product. OpenVINO and ONNX Runtime both fuse those pairs into int8 kernels (VNNI / AMX-INT8), and the graph
stays a plain ONNX graph that TensorRT reads too.

What is quantised: ``MatMul`` / ``Conv`` / ``Gemm`` (int8 weights per output channel, symmetric; uint8
activations per tensor; MinMax ranges) in the shared encoder and the patch embedding, i.e. almost all of
the FLOPs. What stays fp32: every other op (LayerNorm, softmax, GELU, reductions) and whole modules where a
few FLOPs decide the answer (:data:`FP32_SCOPES`): the pixel decoder and the heads that draw the mask, the
visual concept injectors (their ``score >= mean(score)`` threshold flips under rounding), the latent
initialiser (argmax subject selection) and the GRES no-target head.

The file keeps every metadata entry of its source, with ``lvg.precision = "int8"`` and ``lvg.calibration``
(what it was calibrated on). The result is checked against its source on held-back samples of the same
data before it is kept: a file whose masks move on more than ``1 - min_agreement`` of the pixels is refused.
Torch-free: needs ``onnx`` (the ``export`` extra) and ONNX Runtime's quantisation tools.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lvg.core import artifact as art
from lvg.core.atomic import atomic_output, scratch_path
from lvg.core.model_file import ModelFile
from lvg.errors import InputError, LVGError, require
from lvg.export import MASK_AGREEMENT
from lvg.export.annotate import replace_onnx_metadata

__all__ = ["FP32_SCOPES", "QUANTISED_OPS", "Int8Report", "check_int8_source", "quantize_int8"]

Feeds = Mapping[str, np.ndarray]

#: Op types whose products run in int8.
QUANTISED_OPS = ("MatMul", "Conv", "Gemm")
#: Node-name fragments (the exporter names nodes by module path) whose nodes all stay fp32.
FP32_SCOPES = ("/pixel_decoder/", "/text_head/", "/latent_heads.", "/empty_head/", "/concept_injectors.",
               "/latent_init/", "/subject_distributor/", "/mask_refiner/",
               "/candidate_position/")


@dataclass(frozen=True)
class Int8Report:
    """What :func:`quantize_int8` wrote: ``path``; ``calibration`` (the ``lvg.calibration`` entry);
    ``quantised`` / ``kept_fp32`` node counts of the quantisable op types; and the check against the fp32
    source on ``check_samples`` held-back samples (ONNX Runtime, CPU): ``max_abs_prob``, ``mask_agreement``
    (share of pixels whose ``prob > mask_threshold`` is unchanged) and, for GRES models,
    ``no_target_agreement`` (share of samples whose no-target decision is unchanged; ``None`` otherwise);
    ``seconds`` in all."""

    path: Path
    calibration: dict[str, Any]
    quantised: int
    kept_fp32: int
    check_samples: int
    max_abs_prob: float
    mask_agreement: float
    no_target_agreement: float | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path), "precision": "int8", "calibration": self.calibration,
            "quantised_nodes": self.quantised, "fp32_nodes": self.kept_fp32, "check_samples": self.check_samples,
            "max_abs_prob": self.max_abs_prob, "mask_agreement": self.mask_agreement,
            "no_target_agreement": self.no_target_agreement, "seconds": round(self.seconds, 3),
            "size_bytes": self.path.stat().st_size if self.path.exists() else None,
        }


def _reader(feeds: Iterable[Feeds], count: list[int]) -> Any:
    """An ONNX Runtime ``CalibrationDataReader`` over ``feeds`` (one sample each), counting what it gave."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Iterator[Feeds] = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self._it, None)
            if item is None:
                return None
            count[0] += 1
            return {k: np.asarray(v) for k, v in item.items()}

    return _Reader()


class _QuietQuantiser(logging.Filter):
    """Drops the quantiser's advisory warnings (sent to the root logger, so they would reach a CLI's
    stderr as ``WARNING:root:``); its errors still pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or "onnxruntime" not in record.pathname


@dataclass(frozen=True)
class _Check:
    samples: int
    max_abs_prob: float
    mask_agreement: float
    no_target_agreement: float | None  # share of samples whose GRES no-target decision is unchanged


def _compare(fp32: Path, int8: Path, feeds: Iterable[Feeds], mask_threshold: float,
             no_target_threshold: float) -> _Check:
    """``int8`` against ``fp32`` on ``feeds``, both on ONNX Runtime's CPU provider (the int8 file's
    floating-point parts at fp32 there; OpenVINO runs them at bf16 on a bf16 CPU, which measured the same)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    a = ort.InferenceSession(str(fp32), opts, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(int8), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in a.get_outputs() if o.name in (art.OUTPUT_PROB, art.OUTPUT_NO_TARGET)]
    # The no-target decision, as postprocessing takes it: sigmoid(logit) > threshold, i.e. logit > logit(t).
    cut = float(np.log(no_target_threshold / (1.0 - no_target_threshold)))
    n, worst, agree, total, same_decision = 0, 0.0, 0, 0, 0
    for item in feeds:
        feed = {k: np.asarray(v) for k, v in item.items()}
        ra, rb = dict(zip(names, a.run(names, feed))), dict(zip(names, b.run(names, feed)))
        pa, pb = ra[art.OUTPUT_PROB], rb[art.OUTPUT_PROB]
        worst = max(worst, float(np.abs(pa.astype(np.float64) - pb).max()))
        agree += int(((pa > mask_threshold) == (pb > mask_threshold)).sum())
        total += pa.size
        if art.OUTPUT_NO_TARGET in ra:
            same_decision += int(((ra[art.OUTPUT_NO_TARGET] > cut) == (rb[art.OUTPUT_NO_TARGET] > cut)).all())
        n += 1
    gres = art.OUTPUT_NO_TARGET in names
    return _Check(n, worst, agree / max(total, 1), same_decision / max(n, 1) if gres else None)


def check_int8_source(model_file: ModelFile) -> None:
    """Refuse (:class:`InputError`) a model file that is not an fp32 ``.onnx`` export."""
    info = model_file.info
    if info.kind != "onnx" or info.precision != "fp32":
        raise InputError(f"{info.path}: int8 quantisation starts from an fp32 .onnx export (lvg export); this is "
                         f"{'an' if info.precision == 'int8' else 'a'} {info.precision} {info.kind} file")


def quantize_int8(
    src: str | os.PathLike[str] | ModelFile,
    out: str | os.PathLike[str],
    calibration: Iterable[Feeds],
    *,
    check: Iterable[Feeds],
    calibration_info: Mapping[str, Any] | None = None,
    min_agreement: float = MASK_AGREEMENT,
) -> Int8Report:
    """Write a static int8 copy of an fp32 ``.onnx`` model, calibrated on ``calibration``.

    Args:
        src: an fp32 ``.onnx`` file exported by lvg (``lvg export``).
        out: the int8 ``.onnx`` file to write (atomically; never the source itself).
        calibration: model inputs, one sample each: ``{"image": float32 (1, 3, S, S), "text_ids": int64
            (1, L), "text_mask": bool (1, L)}``, preprocessed as the runtime does, from the model's own domain.
        check: more such samples (at least one), not among ``calibration``, to compare the result with
            ``src`` on.
        calibration_info: what the samples are (data, split, seed, ...), recorded in ``lvg.calibration``.
        min_agreement: the result is refused (nothing written) when fewer mask pixels than this share agree
            with ``src`` on ``check``.

    Raises:
        InputError: ``src`` is not an fp32 ONNX model, ``out`` is ``src`` or not an ``.onnx`` path, or no
            calibration or check sample came.
        LVGError: the int8 model's masks disagree with the fp32 model's beyond ``min_agreement``.
    """
    onnx = require("onnx", extra="export", purpose="int8 quantisation of ONNX models")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    start = time.perf_counter()
    model_file = src if isinstance(src, ModelFile) else ModelFile.open(src)
    check_int8_source(model_file)
    info = model_file.info
    out = Path(out)
    if out.exists() and out.resolve() == info.path.resolve():
        raise InputError(f"{out}: the int8 file must not replace its fp32 source")
    if out.suffix.lower() not in art.ONNX_SUFFIXES:
        raise InputError(f"{out}: an int8 model is an ONNX file; name it *.onnx")
    graph = onnx.load(str(info.path), load_external_data=False).graph
    candidates = [n for n in graph.node if n.op_type in QUANTISED_OPS]
    excluded = [n.name for n in candidates if any(s in n.name for s in FP32_SCOPES)]
    samples = iter(calibration)
    first = next(samples, None)
    if first is None:
        raise InputError("no calibration sample: int8 needs real inputs from the model's domain")
    count = [0]
    with atomic_output(out) as tmp, scratch_path(out) as quantised:
        # quantize_static writes the file itself (not atomically): into scratch, and the result goes through
        # atomic_output once its metadata is set.
        quiet = _QuietQuantiser()
        logging.getLogger().addFilter(quiet)
        try:
            quantize_static(
                str(info.path), str(quantised), _reader(itertools.chain([first], samples), count),
                quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTISED_OPS), per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
            )
        finally:
            logging.getLogger().removeFilter(quiet)
        record = {**dict(calibration_info or {}), "samples": count[0], "method": "minmax",
                  "ops": list(QUANTISED_OPS), "fp32_scopes": list(FP32_SCOPES),
                  "source": info.path.name, "weights": "int8 per channel, symmetric",
                  "activations": "uint8 per tensor"}
        proto = onnx.load(str(quantised))
        replace_onnx_metadata(proto, {**dict(info.metadata), art.KEY_PRECISION: "int8",
                                      art.KEY_CALIBRATION: json.dumps(record, sort_keys=True)})
        try:
            onnx.save(proto, str(tmp))
        except OSError as exc:
            raise InputError(f"cannot write {out}: {exc.strerror or exc}") from None
        result = _compare(info.path, tmp, check, info.config.preprocess.mask_threshold,
                          info.config.preprocess.no_target_threshold)
        if result.samples == 0:
            raise InputError("no held-back sample to check the int8 file on: give check samples the calibration "
                             "did not use")
        if result.mask_agreement < min_agreement:
            raise LVGError(f"int8 moves {100 * (1 - result.mask_agreement):.2f}% of mask pixels on "
                           f"{result.samples} held-back samples (at most {100 * (1 - min_agreement):.2f}% allowed): "
                           "keep the fp32 file (bf16 on OpenVINO) or calibrate on more samples of the model's domain")
    return Int8Report(path=out, calibration=record, quantised=len(candidates) - len(excluded),
                      kept_fp32=len(excluded), check_samples=result.samples, max_abs_prob=result.max_abs_prob,
                      mask_agreement=result.mask_agreement, no_target_agreement=result.no_target_agreement,
                      seconds=time.perf_counter() - start)
