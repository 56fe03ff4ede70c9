"""The ``lvg`` command line: one typer app, one module per command group, and the only place that imports typer.

=============  ========================================================
module         commands
=============  ========================================================
``info``       ``lvg info``
``infer``      ``lvg infer``, ``lvg bench`` (torch-free)
``export``     ``lvg export``
``train``      ``lvg train``, ``lvg eval``
``data``       ``lvg data synth``, ``lvg data stats``
``fetch``      ``lvg fetch`` (official weights, tokenizer, datasets into the cache)
``_common``    one-line errors, warnings, JSON output, output-path checks
=============  ========================================================

Command modules import torch (or anything heavy) only inside their command bodies. Examples::

    lvg info --variant lvg-b --json
    lvg infer photo.jpg "man on left" --out overlay.png
    lvg export --ckpt model.safetensors --format onnx --fp16
    lvg train --variant lvg-tiny --data data/ --out runs/tiny
"""

from __future__ import annotations

# Only modules the interpreter has already loaded come before the SIGINT handler below.
import os
import signal
import sys


def _owns_process() -> bool:
    """Whether this process is the ``lvg`` command (the console script or ``python -m lvg.cli``), not a program
    that imports the CLI (a test suite): only then may it take over the process's signal handling."""
    orig = list(getattr(sys, "orig_argv", []))
    if "-m" in orig and orig[orig.index("-m") + 1 : orig.index("-m") + 2] == ["lvg.cli"]:
        return True
    main_file = getattr(sys.modules.get("__main__"), "__file__", None) or ""
    return os.path.basename(main_file) in ("lvg", "lvg.exe", "lvg-script.py")


def _exit_at_once(signum: int, frame: object) -> None:
    """A signal while nothing needs cleaning up (imports, or after the command): leave at once, no traceback."""
    try:
        sys.stdout.flush()
        sys.stderr.write("interrupted\n" if signum == signal.SIGINT else "terminated\n")
        sys.stderr.flush()
    finally:
        os._exit(128 + signum)


# Before the (slow) imports below: a Ctrl-C while the command starts must not print a traceback from inside
# an import. main() replaces this handler once the command's own error handling is in place.
if _owns_process() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, _exit_at_once)

import typer  # noqa: E402

from lvg._version import __version__  # noqa: E402
from lvg.cli import data, export, fetch, infer, info, train  # noqa: E402
from lvg.cli._common import Terminated, on_signal, one_line, redeliver_lost_signal  # noqa: E402

__all__ = ["app", "main"]

app = typer.Typer(
    name="lvg",
    help="Latent-VG: referring image segmentation (RIS), comprehension (REC) and generalized RIS (GRES).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: flags read as flags (`--json`), not `--json <bool>` as the rich layout shows every option.
    rich_markup_mode=None,
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


for _group in (info, infer, export, train, data, fetch):
    _group.register(app)


def main() -> None:
    """The ``lvg`` console script (and ``python -m lvg.cli``).

    Signals: SIGINT raises ``KeyboardInterrupt`` and SIGTERM :class:`~lvg.cli._common.Terminated` while the
    command runs, so its temporary files are removed on the way out; the command then exits 130 / 143 with
    one line (``interrupted`` / ``terminated``), never a traceback. When this process is the ``lvg`` command,
    a signal after the command has finished ends the process at once with the same status.
    """
    # Before any command imports torch (its OpenMP runtime reads this once, when it loads): the default
    # spin-waiting makes CPU inference several times slower whenever another process holds a core. An
    # explicit setting by the user wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    owns = _owns_process()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    previous_hook = sys.unraisablehook

    def unraisable(info: object) -> None:
        if not redeliver_lost_signal(info):
            previous_hook(info)

    sys.unraisablehook = unraisable
    try:
        code = _run()
    except KeyboardInterrupt as exc:  # outside a command body: while parsing, or in an error handler
        terminated = isinstance(exc, Terminated)
        sys.stderr.write("terminated\n" if terminated else "interrupted\n")
        code = 143 if terminated else 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, _exit_at_once if owns else handler)
        sys.unraisablehook = previous_hook
    sys.exit(code if isinstance(code, int) else 0)


def _run() -> int | None:
    # Not standalone: typer would draw usage errors (a bad option value, a missing argument) as a boxed
    # multi-line panel; here they get the one-line "error: ..." of every other error, still exit 2.
    try:
        return app(prog_name="lvg", standalone_mode=False)
    except typer.TyperException as exc:  # click's usage errors (typer vendors click and subclasses this)
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `lvg` (or a bare group): the help is the answer
            typer.echo(exc.format_message())
            return 0
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        typer.echo(f"error: {one_line(exc.format_message())}{hint}", err=True)
        return getattr(exc, "exit_code", 2)
    except typer.Abort:  # end of input at a prompt
        typer.echo("aborted", err=True)
        return 1
