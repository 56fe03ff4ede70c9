"""``lvg export``: a checkpoint to ONNX (fp32 / fp16) or a TensorRT engine. Torch is imported when it runs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from lvg._progress import progress
from lvg.cli._common import check_outputs, echo_json, handle_errors
from lvg.core.artifact import ONNX_SUFFIXES, tokenizer_sidecars
from lvg.core.model_file import ModelFile
from lvg.errors import InputError, require
from lvg.export import MASK_AGREEMENT
from lvg.train.domain import TrainingDomain, checkpoint_data, training_domain


@handle_errors
def export(
    ckpt: Path = typer.Option(..., "--ckpt", help="Checkpoint (.safetensors) to export; with --int8 also an fp32 "
                              ".onnx export."),
    fmt: str = typer.Option("onnx", "--format", "-f", help="onnx | trt (TensorRT engine, built via ONNX) | "
                            "safetensors (the weights of an fp32 .onnx export, back as a checkpoint)."),
    fp16: bool = typer.Option(False, "--fp16", help="fp16 compute (IO stays fp32; LayerNorm/softmax kept fp32)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output file (default: beside the checkpoint); with "
                                    "--int8 the int8 file."),
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
    int8: bool = typer.Option(
        False, "--int8", help="Write a static int8 ONNX file (<stem>.int8.onnx) calibrated on --calib; from a "
        "checkpoint the fp32 .onnx is written first, beside it."
    ),
    calib: str | None = typer.Option(
        None, "--calib", help="Calibration data for --int8, named as lvg train --data names it: images and "
        "sentences of the model's own domain (its training split is read)."
    ),
    calib_samples: int = typer.Option(64, "--calib-samples", help="Calibration sentences for --int8."),
    calib_split: str = typer.Option("train", "--calib-split", help="The split of --calib to read."),
    min_agreement: float = typer.Option(
        MASK_AGREEMENT, "--min-agreement", help="--int8: the share of mask pixels that must agree with the fp32 "
        "model on held-back sentences of --calib, or nothing is written."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON report."),
) -> None:
    """Export a checkpoint to ONNX (fp32 / fp16 / int8) or a TensorRT engine.

    Examples:

        lvg export --ckpt model.safetensors --format onnx --fp16

        lvg export --ckpt model.safetensors --format trt --fp16 --batch 8 --out model.engine

        lvg export --ckpt model.onnx --int8 --calib data/synth-train

        lvg export --ckpt model.onnx --format safetensors --out model.safetensors
    """
    fmt = fmt.lower()
    if fmt not in ("onnx", "trt", "tensorrt", "safetensors"):
        raise InputError(f"unknown --format {fmt!r}; choose onnx, trt or safetensors")
    if fmt == "safetensors":
        _to_checkpoint(ckpt, out, json_out=json_out, other=fp16 or int8 or calib is not None or tokenizer is not None)
        return
    request = None
    if int8 or calib is not None:
        request = _int8_request(fmt=fmt, fp16=fp16, int8=int8, calib=calib, samples=calib_samples,
                                split=calib_split, min_agreement=min_agreement, out=out)
        if ckpt.suffix.lower() in ONNX_SUFFIXES:
            if tokenizer is not None or train_data is not None or description is not None:
                raise InputError("--tokenizer, --train-data and --description shape an export from a checkpoint; "
                                 "the int8 file keeps its .onnx source's")
            _int8(ModelFile.open(ckpt), request, json_out=json_out)
            return
    checkpoint = ModelFile.open(ckpt, checkpoint=True)  # torch-free: a bad file is refused before the slow imports
    if fmt != "onnx":
        # Fail before the (slow) ONNX export when TensorRT is missing.
        require("tensorrt", extra="trt", purpose="building TensorRT engines")
    require("torch", extra="export", purpose="lvg export")
    require("onnx", extra="export", purpose="lvg export")
    onnx_out, engine_out, outputs = _output_paths(ckpt, fmt=fmt, fp16=fp16, out=out, batch=batch, int8=int8)
    check_outputs([ckpt, tokenizer, *tokenizer_sidecars(ckpt)], outputs)
    sets = None if request is None else _calibration(request, checkpoint)  # bad data is refused before the export
    domain = _domain(checkpoint, train_data)  # a bad request is refused first, then the data is read
    report, data = _write(checkpoint, onnx_out, engine_out, fmt=fmt, fp16=fp16, opset=opset, batch=batch,
                          workspace=workspace, tokenizer=tokenizer, check=check, simplify=simplify, domain=domain,
                          description=description, int8=(request, sets))
    if domain is None and checkpoint.info.domain.words is None:
        typer.echo("warning: no training words recorded (the checkpoint's training data is not here): the model "
                   "cannot report unknown words; pass --train-data DIR, or run lvg annotate on the export", err=True)
    if json_out:
        echo_json(data)
        return
    _print_export(report, data)
    if request is not None:
        _print_int8(data["int8"])


def _to_checkpoint(source: Path, out: Path | None, *, json_out: bool, other: bool) -> None:
    """``--format safetensors``: an fp32 ``.onnx`` export's weights back as a checkpoint (lvg.export.recover)."""
    if source.suffix.lower() not in ONNX_SUFFIXES:
        raise InputError(f"--format safetensors reads an .onnx export; {source} is not one")
    if other:
        raise InputError("--fp16, --int8, --calib and --tokenizer shape an ONNX export; --format safetensors "
                         "takes the file's weights and tokenizer as they are")
    model_file = ModelFile.open(source)  # torch-free: a bad file is refused before the slow imports
    require("torch", extra="export", purpose="lvg export --format safetensors")
    require("onnx", extra="export", purpose="lvg export --format safetensors")
    target = out if out is not None else source.with_suffix(".safetensors")
    check_outputs([source], {"--out": target})
    from lvg.export.recover import checkpoint_from_onnx

    report = checkpoint_from_onnx(model_file, target)
    if json_out:
        echo_json(report.to_dict())
        return
    typer.echo(f"wrote {report.path}: {report.variant}, {report.tensors} tensors from {report.source}; "
               f"it reproduces the file to {report.max_abs_prob:.2g} (mask probabilities)")


def _write(checkpoint: ModelFile, onnx_out: Path, engine_out: Path, *, fmt: str, fp16: bool, opset: int, batch: int,
           workspace: float, tokenizer: Path | None, check: bool, simplify: bool, domain: TrainingDomain | None,
           description: str | None, int8: tuple[Any, Any]) -> tuple[Any, dict[str, Any]]:
    """Export the ONNX file, then build the engine or the int8 file (``int8``: the request and its calibration
    sets, or ``None`` twice): the export's report and the JSON report."""
    from lvg.export.onnx_export import export_onnx

    request, sets = int8
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
        if request is not None:
            data["int8"] = _int8(ModelFile.open(onnx_out), request, json_out=None, sets=sets).to_dict()
    except BaseException:
        # Each file is written whole or not at all; a failed engine build or int8 step also takes back the ONNX
        # file it was built from, when this command created it: a failed command leaves none of its new outputs.
        if (fmt != "onnx" or request is not None) and not onnx_existed:
            onnx_out.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    return report, data


def _output_paths(ckpt: Path, *, fmt: str, fp16: bool, out: Path | None, batch: int,
                  int8: bool) -> tuple[Path, Path, dict[str, Path]]:
    """The ONNX file, the engine file and the outputs to check (by the option or role that names them)."""
    suffix = ".fp16" if fp16 else ""
    if fmt == "onnx":
        onnx_out = (None if int8 else out) or ckpt.with_name(ckpt.stem + suffix + ".onnx")
    else:
        onnx_out = ckpt.with_name(ckpt.stem + suffix + ".onnx") if out is None else out.with_suffix(".onnx")
    engine_out = out or ckpt.with_name(f"{ckpt.stem}{suffix}.b{batch}.engine")
    if int8:
        return onnx_out, engine_out, {"the fp32 ONNX file": onnx_out, "--out": _int8_path(onnx_out, out)}
    if fmt == "onnx":
        return onnx_out, engine_out, {"--out": onnx_out}
    return onnx_out, engine_out, {"--out": engine_out, "the intermediate ONNX file": onnx_out}


def _print_export(report: Any, data: dict[str, Any]) -> None:
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


@dataclass(frozen=True)
class _Int8Request:
    calib: str
    samples: int
    split: str
    min_agreement: float
    out: Path | None


def _int8_request(*, fmt: str, fp16: bool, int8: bool, calib: str | None, samples: int, split: str,
                  min_agreement: float, out: Path | None) -> _Int8Request:
    """The int8 options, checked before any work."""
    if not 0.0 <= min_agreement <= 1.0:
        raise InputError(f"--min-agreement must lie in [0, 1], got {min_agreement}")
    if not int8:
        raise InputError("--calib is the calibration data of --int8; add --int8")
    if calib is None:
        raise InputError("--int8 needs --calib DATA: images and sentences of the model's own domain (e.g. its "
                         "training data) to measure activation ranges on")
    if fp16 or fmt != "onnx":
        raise InputError("--int8 writes an ONNX file from the fp32 export; it does not combine with --fp16 or "
                         "--format trt")
    if out is not None and out.suffix.lower() not in ONNX_SUFFIXES:
        raise InputError(f"--out {out}: an int8 model is an ONNX file; name it *.onnx")
    return _Int8Request(calib=calib, samples=samples, split=split, min_agreement=min_agreement, out=out)


def _int8_path(fp32: Path, out: Path | None) -> Path:
    """``--out``, else ``<stem>.int8.onnx`` beside the fp32 file."""
    return out if out is not None else fp32.with_name(fp32.stem + ".int8.onnx")


def _calibration(request: _Int8Request, model_file: ModelFile) -> Any:
    from lvg.train.calibration import calibration_sets

    return calibration_sets(request.calib, model_file, samples=request.samples, split=request.split)


def _int8(fp32: ModelFile, request: _Int8Request, *, json_out: bool | None, sets: Any = None) -> Any:
    """Quantise an fp32 ``.onnx`` file (``sets``: its calibration sets, when already drawn); prints the result
    unless ``json_out`` is ``None`` (the caller does)."""
    require("onnx", extra="export", purpose="lvg export --int8")
    from lvg.export.int8 import check_int8_source, quantize_int8

    check_int8_source(fp32)  # an fp16 or int8 file is refused before its data is read
    int8_out = _int8_path(fp32.path, request.out)
    check_outputs([fp32.path], {"--out": int8_out})
    calib_set, check_set, record = sets or _calibration(request, fp32)
    with progress(total=1, desc="int8") as bar:
        report = quantize_int8(fp32, int8_out, calib_set, check=check_set, calibration_info=record,
                               min_agreement=request.min_agreement)
        bar.update(1)
    if json_out:
        echo_json({"int8": report.to_dict()})
    elif json_out is not None:
        _print_int8(report.to_dict())
    return report


def _print_int8(r: dict[str, Any]) -> None:
    c = r["calibration"]
    typer.echo(f"wrote {r['path']} (int8: {r['quantised_nodes']} products in int8, {r['fp32_nodes']} kept fp32; "
               f"calibrated on {c['samples']} sentences of {c['data']} {c['split']}, {r['seconds']:.1f} s)")
    no_target = "" if r["no_target_agreement"] is None else (
        f", no-target decision unchanged on {100 * r['no_target_agreement']:.1f}% of them")
    typer.echo(f"check vs fp32 on {r['check_samples']} held-back sentences: max |prob diff| "
               f"{r['max_abs_prob']:.2e}, mask agreement {100 * r['mask_agreement']:.2f}%{no_target}")


def _domain(checkpoint: ModelFile, train_data: str | None) -> TrainingDomain | None:
    """The training words to record: from ``--train-data``, else ``None`` when the checkpoint records its own
    (``lvg train`` does; the export copies them), else from the data an older checkpoint names, else ``None``
    (the export then warns that the model cannot report unknown words)."""
    if train_data is not None:
        return training_domain(train_data)
    if checkpoint.info.domain.words is not None:
        return None
    found = checkpoint_data(checkpoint)
    return None if found is None else training_domain(*found)


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
