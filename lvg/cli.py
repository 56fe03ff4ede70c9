"""The ``lvg`` command line: one typer app; each area registers its own commands.

Examples::

    lvg info --variant lvg-b --json
    lvg infer photo.jpg "man on left" --out overlay.png
    lvg export --ckpt model.safetensors --format onnx --fp16
    lvg train --variant lvg-tiny --data data/ --out runs/tiny
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from lvg import __version__
from lvg._cli import one_line, echo_json, handle_errors
from lvg.errors import ConfigError, require

app = typer.Typer(
    name="lvg",
    help="Latent-VG: referring image segmentation (RIS), comprehension (REC) and generalized RIS (GRES).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lvg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Latent-VG command line."""


@app.command("info")
@handle_errors
def info(
    variant: Optional[str] = typer.Option(None, "--variant", "-v", help="Named variant (see --list)."),
    ckpt: Optional[Path] = typer.Option(None, "--ckpt", help="A Latent-VG safetensors checkpoint."),
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


def _register() -> None:
    # Command modules import torch (or anything heavy) only inside their command bodies.
    from lvg.export import commands as export_commands
    from lvg.runtime import commands as runtime_commands
    from lvg.train import commands as train_commands
    from lvg.train import data_commands

    for module in (runtime_commands, export_commands, train_commands, data_commands):
        module.register(app)


_register()


def main() -> None:
    # Before any command imports torch (its OpenMP runtime reads this once, when it loads): the default
    # spin-waiting makes CPU inference several times slower whenever another process holds a core. An
    # explicit setting by the user wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Not standalone: typer would draw usage errors (a bad option value, a missing argument) as a boxed
    # multi-line panel; here they get the one-line "error: ..." of every other error, still exit 2.
    try:
        code = app(prog_name="lvg", standalone_mode=False)
    except typer.TyperException as exc:  # click's usage errors (typer vendors click and subclasses this)
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        typer.echo(f"error: {one_line(exc.format_message())}{hint}", err=True)
        code = getattr(exc, "exit_code", 2)
    except typer.Abort:  # end of input at a prompt
        typer.echo("aborted", err=True)
        code = 1
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
