"""ONNX export of any Latent-VG variant (fp32 or fp16), with a check against the torch model.

Decisions (SPEC section 5):

- **Exporter**: the TorchScript-based ``torch.onnx.export(..., dynamo=False)``. With torch 2.13 it exports
  every variant in about a second and matches the torch model to ~1e-7; the dynamo exporter also gives
  exact results but needs the ``onnxscript`` package (not a dependency) and takes ~30 s for ``lvg-tiny``.
  ``exporter="dynamo"`` selects it when onnxscript is installed.
- **Opset 20**: the newest opset both exporters and ONNX Runtime >= 1.17 support; it has native
  ``LayerNormalization`` (17+), ``Gelu`` (20) and ``GroupNormalization``-free GroupNorm lowering.
- **The wrapper** (:class:`ExportWrapper`) calls the live model and only selects outputs: ``prob`` and,
  for GRES, ``no_target`` (the raw logit). The model is rebuilt with ``impl="reference"`` (the Triton
  kernels cannot be traced) from the same weights.
- **IO**: ``image`` float32 (B, 3, S, S), ``text_ids`` int64 (B, L), ``text_mask`` bool (B, L); batch dynamic.
- **Simplification**: ONNX Runtime's *basic* offline optimisation (constant folding, redundant node
  elimination; provider-independent, standard ops only) when it removes nodes; onnxsim is not required.
- **fp16**: :func:`lvg.export.fp16.convert_to_fp16` on the fp32 graph (IO stays fp32).
- **Metadata**: the ``lvg.*`` keys of :mod:`lvg.core.artifact` in ``metadata_props``, tokenizer bytes
  included, so one ``.onnx`` file is self-contained.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lvg.config import ModelConfig
from lvg.core import artifact as art
from lvg.core.atomic import atomic_output, scratch_path
from lvg.core.domain import domain_metadata
from lvg.core.model_file import ModelFile
from lvg.core.tokenizer import Tokenizer, check_vocabulary
from lvg.errors import InputError, LVGError, require
from lvg.export import MASK_AGREEMENT
from lvg.export.annotate import replace_onnx_metadata

__all__ = [
    "DEFAULT_OPSET",
    "CheckReport",
    "ExportReport",
    "ExportWrapper",
    "check_onnx",
    "export_onnx",
    "load_for_export",
]

DEFAULT_OPSET = 20
#: How ``lvg.exporter`` names the steps that made a file (lvg.export.recover reads them back).
EXPORTER_STEP = "torch.onnx.export[{exporter}]"
SIMPLIFY_STEP = "onnxruntime basic optimisation"

#: Tolerances of :func:`check_onnx` per precision: max |prob_onnx - prob_torch|, and mask agreement.
PROB_TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2}


class ExportWrapper(nn.Module):
    """The live model with a tuple output for export: ``(prob,)`` or ``(prob, no_target_logit)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.gres = bool(model.cfg.head.gres)

    def forward(self, image: Tensor, text_ids: Tensor, text_mask: Tensor) -> tuple[Tensor, ...]:
        out = self.model(image, text_ids, text_mask)
        if self.gres:
            return out["prob"], out["no_target_logit"]
        return (out["prob"],)


def load_for_export(ckpt: str | os.PathLike[str] | ModelFile | nn.Module) -> nn.Module:
    """A model in eval mode on CPU with the reference kernels, from a checkpoint (path or opened
    :class:`~lvg.core.model_file.ModelFile`) or a live model.

    A live model is rebuilt with ``impl="reference"`` and its weights copied, so the caller's module
    (which may use the Triton kernels, or be on a GPU) is left untouched.
    """
    from lvg.modeling import build_model
    from lvg.modeling.checkpoint import load_checkpoint

    if isinstance(ckpt, nn.Module):
        cfg: ModelConfig = ckpt.cfg  # type: ignore[assignment]
        model = build_model(cfg, impl="reference")
        model.load_state_dict({k: v.detach().float().cpu() for k, v in ckpt.state_dict().items()})
        return model.eval()
    return load_checkpoint(ckpt, impl="reference", device="cpu").eval()


def example_inputs(cfg: ModelConfig, batch: int, *, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Deterministic model inputs: images in [-1, 1], ``bos ids.. eos pad..`` texts of varied lengths."""
    g = torch.Generator().manual_seed(seed)
    s, length = cfg.encoder.img_size, cfg.preprocess.max_text_len
    image = torch.rand(batch, 3, s, s, generator=g) * 2 - 1
    lengths = torch.randint(3, length + 1, (batch,), generator=g)
    ids = torch.randint(4, cfg.encoder.vocab_size, (batch, length), generator=g)
    mask = torch.arange(length)[None] < lengths[:, None]  # (B, L)
    ids[:, 0] = 0
    ids[torch.arange(batch), lengths - 1] = 2
    ids = ids.masked_fill(~mask, 1)
    return image, ids, mask


@dataclass(frozen=True)
class CheckReport:
    """ONNX Runtime vs torch on the same inputs, per batch size."""

    precision: str
    batches: tuple[int, ...]
    max_abs_prob: float
    mask_agreement: float
    max_abs_no_target: float | None
    tolerance: float
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "batches": list(self.batches),
            "max_abs_prob": self.max_abs_prob,
            "mask_agreement": self.mask_agreement,
            "max_abs_no_target": self.max_abs_no_target,
            "tolerance": self.tolerance,
            "passed": self.passed,
        }


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_onnx` wrote."""

    path: Path
    precision: str
    opset: int
    nodes: int
    seconds: float
    simplified: bool
    check: CheckReport | None
    metadata: dict[str, str] = field(repr=False, default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "precision": self.precision,
            "opset": self.opset,
            "nodes": self.nodes,
            "seconds": round(self.seconds, 3),
            "simplified": self.simplified,
            "size_bytes": self.path.stat().st_size if self.path.exists() else None,
            "gflops_per_sample": self.metadata.get(art.KEY_GFLOPS),
            "check": self.check.to_dict() if self.check else None,
        }


def check_onnx(
    path: str | os.PathLike[str],
    model: nn.Module,
    *,
    batches: tuple[int, ...] = (1, 3),
    tolerance: float | None = None,
    seed: int = 1,
) -> CheckReport:
    """Run the exported file in ONNX Runtime (CPU) and the torch model on the same inputs.

    Passes when ``max |prob_onnx - prob_torch| < tolerance`` (1e-4 fp32, 2e-2 fp16 by default) and the
    ``prob > mask_threshold`` masks agree on >= 99.5% of pixels.
    """
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    precision = meta.get(art.KEY_PRECISION, "fp32")
    tol = PROB_TOLERANCE.get(precision, 2e-2) if tolerance is None else tolerance
    cfg: ModelConfig = model.cfg  # type: ignore[assignment]
    thr = cfg.preprocess.mask_threshold
    names = [o.name for o in sess.get_outputs()]
    worst, worst_nt, agree_num, agree_den = 0.0, None, 0, 0
    for i, b in enumerate(batches):
        image, ids, mask = example_inputs(cfg, b, seed=seed + i)
        with torch.inference_mode():
            ref = model(image, ids, mask)
        feeds = {"image": image.numpy(), "text_ids": ids.numpy(), "text_mask": mask.numpy()}
        got = dict(zip(names, sess.run(None, feeds)))
        p_ref, p_got = ref["prob"].float().numpy(), got[art.OUTPUT_PROB]
        worst = max(worst, float(np.abs(p_got.astype(np.float64) - p_ref).max()))
        agree_num += int(((p_got > thr) == (p_ref > thr)).sum())
        agree_den += p_ref.size
        if art.OUTPUT_NO_TARGET in got:
            d = float(np.abs(got[art.OUTPUT_NO_TARGET] - ref["no_target_logit"].float().numpy()).max())
            worst_nt = d if worst_nt is None else max(worst_nt, d)
    agreement = agree_num / max(agree_den, 1)
    passed = worst < tol and agreement >= MASK_AGREEMENT and (worst_nt is None or worst_nt < max(tol * 10, 1e-3))
    return CheckReport(precision, tuple(batches), worst, agreement, worst_nt, tol, passed)


def _torch_export(wrapper: nn.Module, cfg: ModelConfig, out: Path, opset: int, exporter: str) -> None:
    names_out = [art.OUTPUT_PROB] + ([art.OUTPUT_NO_TARGET] if cfg.head.gres else [])
    # Batch 2 while tracing: a traced batch of 1 lets exporters specialise the batch dimension.
    inputs = example_inputs(cfg, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        if exporter == "dynamo":
            require("onnxscript", extra="export", purpose="the dynamo ONNX exporter")
            batch = torch.export.Dim("batch", min=1, max=4096)
            torch.onnx.export(
                wrapper, inputs, str(out), dynamo=True, opset_version=opset,
                input_names=list(art.INPUT_NAMES), output_names=names_out,
                dynamic_shapes=({0: batch}, {0: batch}, {0: batch}), external_data=False,
            )
        else:
            axes = {name: {0: "batch"} for name in (*art.INPUT_NAMES, *names_out)}
            torch.onnx.export(
                wrapper, inputs, str(out), dynamo=False, opset_version=opset,
                input_names=list(art.INPUT_NAMES), output_names=names_out, dynamic_axes=axes,
                do_constant_folding=True,
            )


def _newest_opset(exporter: str) -> int:
    """The newest opset ``exporter`` writes (torch keeps it in a private module; the fallbacks are torch
    2.x's values)."""
    from torch.onnx import _constants

    name = "ONNX_MAX_OPSET" if exporter == "dynamo" else "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET"
    return int(getattr(_constants, name, 23 if exporter == "dynamo" else 20))


def _simplify(model_proto):
    """ONNX Runtime basic-level offline optimisation; returns the optimised proto (or the input if not smaller)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(model_proto, str(src))
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(dst)
        opts.log_severity_level = 3
        ort.InferenceSession(str(src), sess_options=opts, providers=["CPUExecutionProvider"])
        simplified = onnx.load(str(dst))
    if len(simplified.graph.node) < len(model_proto.graph.node):
        return simplified, True
    return model_proto, False


def _source_id(source: ModelFile | nn.Module) -> str:
    if isinstance(source, ModelFile):
        p = source.path
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return f"{p.name} sha256:{h.hexdigest()[:16]}"
    return "<in-memory model>"


def _domain_entries(source: ModelFile | nn.Module, words: Iterable[str] | None,
                    description: str | None) -> dict[str, str]:
    """The domain metadata to record: what the caller gives, else a checkpoint's own (``lvg train`` records it)."""
    if isinstance(source, ModelFile):
        own = source.info.domain
        words = own.words if words is None else words
        description = own.description if description is None else description
    return domain_metadata(words, description)


def _gflops(model: nn.Module) -> float | None:
    try:
        from lvg.modeling.cost import count_flops
    except ImportError:  # pragma: no cover - the cost module ships with lvg.modeling
        return None
    return float(count_flops(model, batch=1).total_gflops)


def _tokenizer(source: ModelFile | nn.Module, explicit: str | os.PathLike[str] | bytes | None) -> Tokenizer:
    """The tokenizer to embed: ``explicit`` (a file or bytes), else the checkpoint's own (header or sidecar)."""
    if isinstance(source, ModelFile):
        tok = source.tokenizer(explicit)
        if tok is None:
            raise InputError(f"no tokenizer for this model: pass --tokenizer PATH (or put {source.path.name}.spm "
                             "beside the checkpoint)")
        return tok
    if explicit is None:
        raise InputError("no tokenizer for this model: pass a sentencepiece file (or its bytes) as tokenizer")
    tok = Tokenizer.from_bytes(explicit) if isinstance(explicit, bytes) else Tokenizer.from_file(explicit)
    check_vocabulary(tok, source.cfg, what="the given tokenizer")  # type: ignore[arg-type]
    return tok


def _make_parent(out: Path) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the folder for {out}: {exc.strerror or exc}") from None


def export_onnx(
    ckpt: str | os.PathLike[str] | ModelFile | nn.Module,
    out: str | os.PathLike[str],
    *,
    fp16: bool = False,
    opset: int = DEFAULT_OPSET,
    tokenizer: str | os.PathLike[str] | bytes | None = None,
    simplify: bool = True,
    check: bool = True,
    exporter: str = "torchscript",
    words: Iterable[str] | None = None,
    description: str | None = None,
) -> ExportReport:
    """Export a checkpoint (or a live model) to a self-contained ``.onnx`` file.

    Args:
        ckpt: a ``.safetensors`` checkpoint (its path or opened :class:`~lvg.core.model_file.ModelFile`) or a
            ``LatentVG`` module.
        out: the ``.onnx`` file to write (atomically: temp file + rename).
        fp16: convert the graph to fp16 compute (fp32 IO; see :mod:`lvg.export.fp16`).
        opset: ONNX opset (20 by default; 17 is the lowest with native LayerNormalization).
        tokenizer: a sentencepiece file or bytes; default: the checkpoint's (header or ``.spm`` sidecar).
        simplify: run ONNX Runtime's basic graph optimisation when it removes nodes.
        check: compare ONNX Runtime with torch at batch 1 and 3 (raises :class:`LVGError` on failure).
        exporter: ``"torchscript"`` (default) or ``"dynamo"`` (needs onnxscript).
        words: the words of the training sentences (``lvg.train_words``, see :mod:`lvg.core.domain`), so the
            runtime can name the words of a request the model never read; ``None``: the checkpoint's own,
            if it records them (``lvg train`` does), else none.
        description: one line on the training domain (``lvg.description``); ``None``: likewise.

    Returns:
        An :class:`ExportReport` (path, node count, check numbers).
    """
    onnx = require("onnx", extra="export", purpose="ONNX export")
    if exporter not in ("torchscript", "dynamo"):
        raise InputError(f"unknown exporter {exporter!r}; choose torchscript or dynamo")
    if opset < 17:
        raise InputError(f"opset {opset} is too old: LayerNormalization needs opset 17 or newer")
    newest = _newest_opset(exporter)
    if opset > newest:
        raise InputError(f"opset {opset} is newer than the {exporter} exporter of torch {torch.__version__} "
                         f"writes (at most {newest})")
    start = time.perf_counter()
    out = Path(out)
    source = ckpt if isinstance(ckpt, nn.Module) else ModelFile.open(ckpt, checkpoint=True)
    domain = _domain_entries(source, words, description)  # a bad description is refused before the slow load
    model = load_for_export(source)  # first: a broken checkpoint is the error to report, not its tokenizer
    tok = _tokenizer(source, tokenizer)
    cfg: ModelConfig = model.cfg  # type: ignore[assignment]
    wrapper = ExportWrapper(model).eval()
    _make_parent(out)
    # The exporter's own file is a temporary file beside the output (never a folder): removed on every exit
    # path, and by the next export of the same output if this process is killed outright.
    with scratch_path(out) as raw:
        _torch_export(wrapper, cfg, raw, opset, exporter)
        proto = onnx.load(str(raw))
    simplified = False
    if simplify:
        proto, simplified = _simplify(proto)
    precision = "fp32"
    steps = [f"{EXPORTER_STEP.format(exporter=exporter)} torch {torch.__version__}"]
    if simplified:
        steps.append(SIMPLIFY_STEP)
    if fp16:
        from lvg.export.fp16 import convert_to_fp16

        proto = convert_to_fp16(proto)
        precision = "fp16"
        steps.append("fp16 (onnxruntime.transformers.float16 + lvg fp32 block list)")
    meta = art.build_metadata(
        cfg,
        tokenizer_bytes=tok.model_bytes,
        tokenizer_identity=tok.identity,
        precision=precision,
        gflops_per_sample=_gflops(model),
        params=sum(p.numel() for p in model.parameters()),
        extra={
            art.KEY_OPSET: str(opset),
            art.KEY_EXPORTER: "; ".join(steps),
            art.KEY_SOURCE: _source_id(source),
            **domain,
        },
    )
    replace_onnx_metadata(proto, meta)
    onnx.checker.check_model(proto)
    with atomic_output(out) as tmp_out:
        try:
            onnx.save(proto, str(tmp_out))
        except OSError as exc:
            raise InputError(f"cannot write {out}: {exc.strerror or exc}") from None
        report_check = check_onnx(tmp_out, model) if check else None
        if report_check is not None and not report_check.passed:
            raise LVGError(
                f"exported {precision} model does not match torch: max |prob diff| {report_check.max_abs_prob:.3g} "
                f"(tolerance {report_check.tolerance:g}), mask agreement {report_check.mask_agreement:.4f}"
            )
    return ExportReport(
        path=out, precision=precision, opset=opset, nodes=len(proto.graph.node),
        seconds=time.perf_counter() - start, simplified=simplified, check=report_check, metadata=meta,
    )
