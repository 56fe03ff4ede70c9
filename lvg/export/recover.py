"""Weights back from an exported fp32 ONNX file: ``lvg export --ckpt model.onnx --format safetensors``.

The bundled model ships as ONNX alone; this gives it back to PyTorch, so it can be fine-tuned or a training
recipe continued from it (``lvg train --init model.safetensors``).

torch.onnx keeps most parameters as initializers under their own names, but not all of them: a Linear's
weight is stored transposed under an anonymous name (``onnx::MatMul_N``), a GroupNorm's gain reshaped, a
parameter used row by row as one initializer per row. Which initializer holds which parameter is therefore
found by fingerprint: the file's variant, given distinct random values, is exported again the same way, and
each parameter is looked up by value (as is, transposed, or row by row) among that export's initializers; the
file's initializer at the same input of the same node holds the trained value. The recovered model must then
reproduce the file's outputs in ONNX Runtime, or nothing is written.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lvg.core.artifact import KEY_EXPORTER, tokenizer_metadata
from lvg.core.domain import domain_metadata
from lvg.core.model_file import ModelFile
from lvg.errors import ArtifactError, CheckpointError
from lvg.export.onnx_export import (
    DEFAULT_OPSET,
    EXPORTER_STEP,
    SIMPLIFY_STEP,
    ExportWrapper,
    example_inputs,
    export_onnx,
)
from lvg.modeling import build_model
from lvg.modeling.checkpoint import load_state_strict, save_checkpoint

#: Largest |ONNX Runtime - torch| on the mask probabilities that still counts as the same model (fp32).
TOLERANCE = 1e-4


@dataclass(frozen=True)
class RecoverReport:
    """What :func:`checkpoint_from_onnx` wrote and how closely the checkpoint reproduces the file."""

    path: Path
    source: Path
    variant: str
    tensors: int
    max_abs_prob: float

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "source": str(self.source), "variant": self.variant,
                "tensors": self.tensors, "max_abs_prob": self.max_abs_prob}


def checkpoint_from_onnx(source: str | os.PathLike[str] | ModelFile,
                         out: str | os.PathLike[str]) -> RecoverReport:
    """Write the weights of an fp32 ``lvg export`` ONNX file to a ``.safetensors`` checkpoint at ``out``
    (atomically), with its config, tokenizer, training words and description.

    Raises:
        ArtifactError: the file is not fp32 (an fp16 or int8 file holds rounded weights).
        CheckpointError: a parameter is nowhere in the file (another exporter or torch version wrote it), or
            the recovered model does not reproduce the file's outputs.
    """
    import onnx

    mf = ModelFile.open(source)
    if mf.kind != "onnx":
        raise ArtifactError(f"{mf.path} is not an ONNX file")
    if mf.info.precision != "fp32":
        raise ArtifactError(f"{mf.path} is {mf.info.precision}: only an fp32 export holds the trained weights "
                            "exactly")
    proto = onnx.load(str(mf.path))
    # The opset the graph itself declares (default domain), not a metadata copy of it.
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), DEFAULT_OPSET)
    tok = mf.tokenizer()
    model = build_model(mf.config).eval()
    probe = _fingerprint_export(model, mf, opset=opset, tokenizer=None if tok is None else tok.model_bytes)
    state = _match(model.state_dict(), _by_use(probe, proto.graph), mf)
    load_state_strict(model, state, str(mf.path))
    diff = _max_abs_prob(model, mf)
    if not diff <= TOLERANCE:
        raise CheckpointError(f"the weights recovered from {mf.path} do not reproduce it: mask probabilities "
                              f"differ by up to {diff:.3g} (tolerance {TOLERANCE})")
    header = {} if tok is None else tokenizer_metadata(tok.model_bytes, tok.identity)
    header.update(domain_metadata(mf.info.domain.words, mf.info.domain.description))
    path = save_checkpoint(model, out, metadata=header)
    return RecoverReport(path=path, source=mf.path, variant=mf.config.name, tensors=len(state),
                         max_abs_prob=diff)


def _fingerprint_export(model: nn.Module, mf: ModelFile, *, opset: int, tokenizer: bytes | None) -> Any:
    """The graph of ``model`` exported as ``mf`` was, after giving every parameter distinct values."""
    import onnx

    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    steps = mf.metadata.get(KEY_EXPORTER, "")
    exporter = "dynamo" if EXPORTER_STEP.format(exporter="dynamo") in steps else "torchscript"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "probe.onnx"
        export_onnx(model, out, opset=opset, exporter=exporter, simplify=SIMPLIFY_STEP in steps, check=False,
                    tokenizer=tokenizer)
        return onnx.load(str(out)).graph


def _by_use(probe: Any, trained: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(fingerprint value, trained value)`` of every float initializer, paired by where the graphs use them:
    the same input of the same node. Not by name: an exporter stores equal tensors once (a fresh LayerNorm's
    gains are all ones), so the trained file may name an initializer the fingerprint export does not."""
    from onnx import numpy_helper

    def first_use(graph: Any) -> dict[str, tuple[str, int]]:
        inits = {i.name for i in graph.initializer}
        use: dict[str, tuple[str, int]] = {}
        for node in graph.node:
            for k, name in enumerate(node.input):
                if name in inits:
                    use.setdefault(name, (node.name, k))
        return use

    probe_inits, trained_inits = ({i.name: i for i in g.initializer} for g in (probe, trained))
    trained_input = {(node.name, k): name for node in trained.node for k, name in enumerate(node.input)}
    pairs = []
    for name, (node, k) in first_use(probe).items():
        init = probe_inits[name]
        other = trained_inits.get(trained_input.get((node, k), ""))
        if other is None or init.data_type != other.data_type:
            continue
        a, b = numpy_helper.to_array(init), numpy_helper.to_array(other)
        if a.dtype == np.float32 and a.shape == b.shape:
            pairs.append((a, b))
    return pairs


def _match(state: dict[str, Tensor], pairs: list[tuple[np.ndarray, np.ndarray]],
           mf: ModelFile) -> dict[str, Tensor]:
    """Each tensor of ``state`` (fingerprint values) found among the fingerprints of ``pairs``; its trained
    value is the pair's other half."""
    by_size: dict[int, list[int]] = {}
    for i, (arr, _) in enumerate(pairs):
        by_size.setdefault(arr.size, []).append(i)

    def find(a: np.ndarray) -> np.ndarray | None:
        """``a``'s trained value: stored as is (any shape of the same size) or, for a matrix, transposed."""
        sq = np.squeeze(a)
        transposed = np.ascontiguousarray(sq.T).reshape(-1) if sq.ndim == 2 else None
        for i in by_size.get(a.size, []):
            probe, value = (x.reshape(-1) for x in pairs[i])
            if np.array_equal(probe, a.reshape(-1)):
                return value.reshape(a.shape)
            if transposed is not None and np.array_equal(probe, transposed):
                return value.reshape(sq.T.shape).T.reshape(a.shape)
        return None

    out, missing = {}, []
    for key, tensor in state.items():
        a = tensor.detach().cpu().numpy()
        value = find(a)
        if value is None and a.ndim == 2:  # a parameter indexed row by row: one initializer per row
            rows = [find(a[i]) for i in range(a.shape[0])]
            value = np.stack(rows) if all(r is not None for r in rows) else None
        if value is None:
            missing.append(key)
            continue
        out[key] = torch.from_numpy(np.array(value, dtype=a.dtype))
    if missing:
        raise CheckpointError(f"{mf.path}: {len(missing)} of the model's tensors are not in the file (e.g. "
                              f"{missing[0]}); it was written by {mf.metadata.get('lvg.exporter', 'another exporter')}"
                              f", and torch {torch.__version__} exports this variant otherwise")
    return out


def _max_abs_prob(model: nn.Module, mf: ModelFile) -> float:
    """Largest |ONNX Runtime on the file - torch on ``model``| of the mask probabilities, batch 2."""
    import onnxruntime as ort

    image, ids, mask = example_inputs(mf.config, 2, seed=1)
    sess = ort.InferenceSession(str(mf.path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    got = sess.run(None, dict(zip(names, (image.numpy(), ids.numpy(), mask.numpy()), strict=True)))[0]
    with torch.no_grad():
        want = ExportWrapper(model).eval()(image, ids, mask)[0].numpy()
    return float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max())
