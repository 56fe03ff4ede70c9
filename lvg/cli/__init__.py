"""The ``lvg`` command line: one typer app, one module per command group, and the only place that imports typer.

=============  ========================================================
module         commands
=============  ========================================================
``info``       ``lvg info``
``infer``      ``lvg infer``, ``lvg bench`` (torch-free)
``export``     ``lvg export``
``train``      ``lvg train``, ``lvg eval``
``data``       ``lvg data synth``, ``lvg data stats``
``_common``    one-line errors, warnings, JSON output, output-path checks
=============  ========================================================

Command modules import torch (or anything heavy) only inside their command bodies. Examples::

    lvg info --variant lvg-b --json
    lvg infer photo.jpg "man on left" --out overlay.png
    lvg export --ckpt model.safetensors --format onnx --fp16
    lvg train --variant lvg-tiny --data data/ --out runs/tiny
"""

from __future__ import annotations

import os
import sys

import typer

from lvg._version import __version__
from lvg.cli import data, export, infer, info, train
from lvg.cli._common import one_line

__all__ = ["app", "main"]

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


for _group in (info, infer, export, train, data):
    _group.register(app)


def main() -> None:
    """The ``lvg`` console script (and ``python -m lvg.cli``)."""
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
