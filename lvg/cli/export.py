"""``lvg export``: a checkpoint to ONNX (fp32 / fp16) or a TensorRT engine. Torch is imported when it runs."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from lvg._progress import progress
from lvg.cli._common import check_outputs, echo_json, handle_errors
from lvg.cli._domain import TrainingDomain, checkpoint_data, training_domain
from lvg.core.artifact import tokenizer_sidecars
from lvg.core.model_file import ModelFile
from lvg.errors import InputError, require


@handle_errors
def export(
    ckpt: Path = typer.Option(..., "--ckpt", help="Checkpoint (.safetensors) to export."),
    fmt: str = typer.Option("onnx", "--format", "-f", help="onnx | trt (TensorRT engine, built via ONNX)."),
    fp16: bool = typer.Option(False, "--fp16", help="fp16 compute (IO stays fp32; LayerNorm/softmax kept fp32)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output file (default: beside the checkpoint)."),
    opset: int = typer.Option(20, "--opset", help="ONNX opset (>= 17)."),
    batch: int = typer.Option(1, "--batch", min=1, help="Static batch size of a TensorRT engine."),
    workspace: float = typer.Option(4.0, "--workspace-gib", help="TensorRT builder workspace limit (GiB)."),
    tokenizer: Path | None = typer.Option(
        None, "--tokenizer", help="Sentencepiece model to embed (default: the checkpoint's, or <ckpt>.spm)."
    ),
    check: bool = typer.Option(True, "--check/--no-check", help="Compare ONNX Runtime against torch."),
    simplify: bool = typer.Option(
        True, "--simplify/--no-simplify", help="Graph simplification (ONNX Runtime basic level)."
    ),
    train_data: str | None = typer.Option(
        None, "--train-data", help="Training data whose sentences give the words the model knows (default: the "
        "data the checkpoint names, when it is here)."
    ),
    description: str | None = typer.Option(
        None, "--description", help="One line on the training domain (default: from the training data)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON report."),
) -> None:
    """Export a checkpoint to ONNX (fp32 / fp16) or a TensorRT engine.

    Examples:

        lvg export --ckpt model.safetensors --format onnx --fp16

        lvg export --ckpt model.safetensors --format trt --fp16 --batch 8 --out model.engine
    """
    fmt = fmt.lower()
    if fmt not in ("onnx", "trt", "tensorrt"):
        raise InputError(f"unknown --format {fmt!r}; choose onnx or trt")
    checkpoint = ModelFile.open(ckpt, checkpoint=True)  # torch-free: a bad file is refused before the slow imports
    if fmt != "onnx":
        # Fail before the (slow) ONNX export when TensorRT is missing.
        require("tensorrt", extra="trt", purpose="building TensorRT engines")
    require("torch", extra="export", purpose="lvg export")
    require("onnx", extra="export", purpose="lvg export")
    from lvg.export.onnx_export import export_onnx

    suffix = ".fp16" if fp16 else ""
    if fmt == "onnx":
        onnx_out = out or ckpt.with_name(ckpt.stem + suffix + ".onnx")
    else:
        onnx_out = ckpt.with_name(ckpt.stem + suffix + ".onnx") if out is None else out.with_suffix(".onnx")
    engine_out = out or ckpt.with_name(f"{ckpt.stem}{suffix}.b{batch}.engine")
    outputs = {"--out": onnx_out} if fmt == "onnx" else {"--out": engine_out, "the intermediate ONNX file": onnx_out}
    check_outputs([ckpt, tokenizer, *tokenizer_sidecars(ckpt)], outputs)
    domain = _domain(checkpoint, train_data)  # a bad request is refused first, then the data is read
    bar = progress(total=1 if fmt == "onnx" else 2, desc="export")
    onnx_existed = os.path.lexists(onnx_out)
    try:
        report = export_onnx(checkpoint, onnx_out, fp16=fp16, opset=opset, tokenizer=tokenizer, simplify=simplify,
                             check=check, words=None if domain is None else domain.words,
                             description=description or (None if domain is None else domain.description))
        bar.update(1)
        data = {"onnx": report.to_dict()}
        if fmt != "onnx":
            from lvg.export.trt import build_engine

            eng = build_engine(onnx_out, engine_out, batch=batch, fp16=fp16, workspace_gib=workspace)
            bar.update(1)
            data["engine"] = eng.to_dict()
    except BaseException:
        # Each file is written whole or not at all; a failed engine build also takes back the ONNX file it was
        # built from, when this command created it: a failed command leaves none of its new outputs.
        if fmt != "onnx" and not onnx_existed:
            onnx_out.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    if domain is None:
        typer.echo("warning: no training words recorded (the checkpoint's training data is not here): the model "
                   "cannot report unknown words; pass --train-data DIR, or run lvg annotate on the export", err=True)
    if json_out:
        echo_json(data)
        return
    c = report.check
    typer.echo(f"wrote {report.path} ({report.precision}, opset {report.opset}, {report.nodes} nodes, "
               f"{report.seconds:.1f} s)")
    if c is not None:
        typer.echo(
            f"check vs torch at batch {','.join(map(str, c.batches))}: max |prob diff| {c.max_abs_prob:.2e} "
            f"(tolerance {c.tolerance:g}), mask agreement {100 * c.mask_agreement:.2f}%"
        )
    if "engine" in data:
        e = data["engine"]
        typer.echo(f"wrote {e['path']} (TensorRT {e['trt_version']}, batch {e['batch']}, {e['precision']}) "
                   f"+ {Path(e['sidecar']).name}")


def _domain(checkpoint: ModelFile, train_data: str | None) -> TrainingDomain | None:
    """The training words to record: from ``--train-data``, else from the data the checkpoint names, else
    ``None`` (the export then warns that the model cannot report unknown words)."""
    if train_data is None:
        found = checkpoint_data(checkpoint)
        return None if found is None else training_domain(*found)
    return training_domain(train_data)


@handle_errors
def annotate(
    model: Path = typer.Argument(..., help="Exported model (.onnx, .engine/.plan) to record the domain in."),
    train_data: str | None = typer.Option(
        None, "--train-data", help="Training data whose training-split sentences give the words the model knows."
    ),
    description: str | None = typer.Option(
        None, "--description", help="One line on the training domain (default: from --train-data)."
    ),
) -> None:
    """Record a model's training words and domain description in an existing exported model.

    Examples:

        lvg annotate model.onnx --train-data data/synth-train

        lvg annotate model.onnx --description "RefCOCO photos (COCO train2014)"
    """
    from lvg.export.annotate import annotate as write

    domain = training_domain(train_data) if train_data is not None else None
    if domain is None and description is None:
        raise InputError("give --train-data, --description or both")
    entries = write(model, words=None if domain is None else domain.words,
                    description=description or (None if domain is None else domain.description))
    what = []
    if domain is not None:
        what.append(f"{len(domain.words)} training words from {domain.sentences} sentences of {domain.source}")
    if "lvg.description" in entries:
        what.append(f"description {entries['lvg.description']!r}")
    typer.echo(f"{model}: recorded {' and '.join(what)}")


def register(app: typer.Typer) -> None:
    """Add ``export`` and ``annotate`` to ``app``."""
    app.command("export")(export)
    app.command("annotate")(annotate)
