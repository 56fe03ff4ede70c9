"""``lvg info``: parameters, FLOPs, token counts and the config of a variant, or what a model file says about
itself (``--model``: any ``.onnx``, engine or ``.safetensors``, read without torch)."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from lvg.cli._common import echo_json, handle_errors
from lvg.errors import ConfigError, require


def describe_model(path: Path) -> dict[str, object]:
    """What ``path`` (an exported model or a checkpoint) says about itself, read without torch: its
    :meth:`~lvg.core.artifact.ArtifactInfo.summary`, plus parameters, GFLOPs (recorded at export; for a
    checkpoint counted with torch when it is installed), tokenizer size, calibration and provenance."""
    from lvg.core import artifact as art
    from lvg.core.model_file import ModelFile
    from lvg.core.tokenizer import Tokenizer

    mf = ModelFile.open(path)
    info, meta, cfg = mf.info, mf.metadata, mf.config
    if mf.tensors:  # a checkpoint: count the elements its header declares
        params: int | None = sum(math.prod(t.shape) for t in mf.tensors.values())
    else:
        params = int(meta[art.KEY_PARAMS]) if meta.get(art.KEY_PARAMS, "").isdigit() else None
    gflops = info.gflops_per_sample
    if gflops is None and mf.kind == "torch":
        try:
            from lvg.modeling.cost import count_flops

            gflops = round(float(count_flops(cfg).to_dict()["gflops"]["total"]), 3)
        except ImportError:  # no torch: the header alone cannot say
            gflops = None
    tok = Tokenizer.from_bytes(info.tokenizer_bytes) if info.tokenizer_bytes is not None else None
    return {
        **info.summary(),
        "file_mb": round(info.path.stat().st_size / 1e6, 2),
        "params": params,
        "gflops_per_sample": gflops,
        "calibration": _calibration(meta, info.path),
        # Word pieces as sentencepiece counts them; the ids the embedding table indexes add <pad>.
        "tokenizer_pieces": None if tok is None else tok.num_pieces,
        "tokenizer_ids": None if tok is None else tok.vocab_size,
        "exporter": meta.get(art.KEY_EXPORTER),
        "source": meta.get(art.KEY_SOURCE),
        "version": meta.get(art.KEY_VERSION),
        "config": cfg.to_dict(),
    }


def _calibration(meta: dict[str, str], path: Path) -> dict[str, object] | None:
    """An int8 file's ``lvg.calibration`` entry (how it was calibrated), ``None`` for other files."""
    from lvg.core.artifact import KEY_CALIBRATION
    from lvg.core.limits import parse_json_object

    text = meta.get(KEY_CALIBRATION)
    return None if text is None else parse_json_object(text, f"{path}: {KEY_CALIBRATION}")


def _precision_line(data: dict[str, object]) -> str:
    c = data["calibration"]
    if not isinstance(c, dict):
        return str(data["precision"])
    return (f"{data['precision']} (calibrated on {c.get('samples', '?')} sentences of {c.get('data', '?')}, "
            f"{c.get('split', '?')} split, seed {c.get('seed', '?')})")


def _echo_model(data: dict[str, object]) -> None:
    params, gf = data["params"], data["gflops_per_sample"]
    rows = [
        ("model", f"{data['path']} ({data['kind']}, {data['file_mb']} MB)"),
        ("variant", data["variant"]),
        ("parameters", "not recorded" if params is None else f"{params / 1e6:.2f}M"),
        ("GFLOPs", "not recorded (a checkpoint needs torch to count them)" if gf is None else f"{gf} per sample"),
        ("input", f"{data['input_size']}x{data['input_size']}, text length {data['max_text_len']}"),
        ("precision", _precision_line(data)),
        ("task", "gres (no-target head)" if data["gres"] else "ris / rec"),
        ("tokenizer", "none (pass --tokenizer)" if data["tokenizer_pieces"] is None
         else f"{data['tokenizer_pieces']} pieces, {data['tokenizer_ids']} ids ({data['tokenizer']})"),
        ("trained on", data["description"] or "not recorded"),
        ("train words", "not recorded" if data["train_words"] is None else data["train_words"]),
    ]
    if data["batch"] is not None:
        rows.insert(5, ("batch", f"{data['batch']} (static)"))
    for key, value in rows:
        typer.echo(f"{key:<13}{value}")


@handle_errors
def info(
    variant: str | None = typer.Option(None, "--variant", "-v", help="Named variant (see --list)."),
    ckpt: Path | None = typer.Option(None, "--ckpt", help="A Latent-VG safetensors checkpoint (needs torch)."),
    model: Path | None = typer.Option(
        None, "--model", "-m", help="Describe a model file (.onnx, .engine/.plan, .safetensors) without torch."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    list_: bool = typer.Option(False, "--list", help="List the named variants and exit."),
) -> None:
    """Parameters (total and per part), GFLOPs at the model's input size, token counts and the config.

    Examples:

        lvg info --variant lvg-b

        lvg info --ckpt runs/tiny/last.safetensors --json

        lvg info --model model.onnx
    """
    from lvg.config import get_config, list_variants

    if list_:
        for name in list_variants():
            typer.echo(name)
        return
    if sum(x is not None for x in (variant, ckpt, model)) != 1:
        raise ConfigError("give exactly one of --variant NAME, --ckpt PATH or --model PATH")
    if model is not None:
        data = describe_model(model)
        if as_json:
            echo_json(data)
        else:
            _echo_model(data)
        return
    if ckpt is not None:
        from lvg.core.model_file import ModelFile

        cfg = ModelFile.open(ckpt, checkpoint=True).config
    else:
        cfg = get_config(variant)  # type: ignore[arg-type]
    require("torch", extra="torch", purpose="counting parameters and FLOPs")
    from lvg.modeling.cost import count_flops

    data = count_flops(cfg).to_dict()
    data["config"] = cfg.to_dict()
    if as_json:
        echo_json(data)
        return
    typer.echo(f"variant      {cfg.name}")
    typer.echo(f"input        {cfg.encoder.img_size}x{cfg.encoder.img_size}, text length {cfg.preprocess.max_text_len}")
    tok = data["tokens"]
    typer.echo(f"tokens       {tok['total']} (vision {tok['vision']}, text {tok['text']}, latent {tok['latent']})")
    typer.echo(f"{'part':<20}{'params (M)':>12}{'GFLOPs':>10}{'GMACs':>10}")
    for part in ("backbone", "latent_expressions", "heads", "total"):
        typer.echo(f"{part:<20}{data['params_m'][part]:>12.2f}{data['gflops'][part]:>10.2f}{data['gmacs'][part]:>10.2f}")
    typer.echo("FLOPs: 1 multiply-add = 2 FLOPs (GMACs = multiply-adds); attention matmuls counted.")


def register(app: typer.Typer) -> None:
    """Add ``info`` to ``app``."""
    app.command("info")(info)
