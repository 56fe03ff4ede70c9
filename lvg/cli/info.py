"""``lvg info``: parameters, FLOPs, token counts and the config of a variant or a checkpoint."""

from __future__ import annotations

from pathlib import Path

import typer

from lvg.cli._common import echo_json, handle_errors
from lvg.errors import ConfigError, require


@handle_errors
def info(
    variant: str | None = typer.Option(None, "--variant", "-v", help="Named variant (see --list)."),
    ckpt: Path | None = typer.Option(None, "--ckpt", help="A Latent-VG safetensors checkpoint."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    list_: bool = typer.Option(False, "--list", help="List the named variants and exit."),
) -> None:
    """Parameters (total and per part), GFLOPs at the model's input size, token counts and the config.

    Examples:

        lvg info --variant lvg-b

        lvg info --ckpt runs/tiny/last.safetensors --json
    """
    from lvg.config import get_config, list_variants

    if list_:
        for name in list_variants():
            typer.echo(name)
        return
    if (variant is None) == (ckpt is None):
        raise ConfigError("give exactly one of --variant NAME or --ckpt PATH")
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
