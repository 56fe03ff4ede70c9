"""Shared CLI plumbing: one-line errors instead of tracebacks, progress bars, JSON output."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import typer
from typer.exceptions import TyperException

from lvg.errors import InputError, LVGError

F = TypeVar("F", bound=Callable[..., Any])


#: Exit status of an unexpected exception (a bug): distinct from an :class:`LVGError`'s 2.
INTERNAL_ERROR_EXIT = 1

#: Set to ``1`` to get the full traceback of an unexpected exception instead of the one-line message.
DEBUG_ENV = "LVG_DEBUG"


def one_line(text: str) -> str:
    """Join a message's non-empty lines with ``"; "`` so the CLI always prints exactly one line."""
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def handle_errors(fn: F) -> F:
    """Decorate a typer command so that it never prints a traceback.

    - :class:`LVGError` -> ``error: <message>`` on stderr, exit ``exc.exit_code`` (2);
    - ``KeyboardInterrupt`` -> ``interrupted``, exit 130;
    - ``MemoryError`` -> ``error: out of memory ...``, exit 1;
    - any other exception (a bug) -> ``error: internal error: <Type>: <first line>``, exit 1, unless the
      environment sets ``LVG_DEBUG=1``, which re-raises it (full traceback) for debugging.

    typer's own ``Exit`` / ``Abort`` / usage errors pass through unchanged.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LVGError as exc:
            typer.echo(f"error: {one_line(str(exc)) or type(exc).__name__}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, TyperException):
            raise
        except Exception as exc:
            if os.environ.get(DEBUG_ENV, "") == "1":
                raise
            if isinstance(exc, MemoryError):
                typer.echo("error: out of memory (use a smaller image or batch, or a machine with more memory)", err=True)
            else:
                lines = one_line(str(exc)).split("; ")
                detail = lines[0][:300] if lines[0] else ""
                what = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
                typer.echo(f"error: internal error: {what} (set {DEBUG_ENV}=1 for the traceback)", err=True)
            raise typer.Exit(INTERNAL_ERROR_EXIT) from None

    return wrapper  # type: ignore[return-value]


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)  # also catches hard and symbolic links
    return a.resolve() == b.resolve()


def check_outputs(inputs: Iterable[Path | None], outputs: dict[str, Path | None]) -> None:
    """Refuse, before any work is done, an output path that is a directory, names one of the command's
    input files or another output (``outputs`` maps an option name such as ``"--out"`` to its path): the input would be
    lost, or one output silently replaced by the other."""
    named = [(opt, Path(p)) for opt, p in outputs.items() if p is not None]
    for opt, out in named:
        if out.is_dir():
            raise InputError(f"cannot write {out}: it is a directory")
        for src in inputs:
            if src is not None and _same_file(out, Path(src)):
                raise InputError(f"{opt} {out} is an input of this command; choose another output path")
    for i, (opt, out) in enumerate(named):
        for other, path in named[i + 1:]:
            if _same_file(out, path):
                raise InputError(f"{opt} and {other} name the same file {out}")


def echo_json(data: Any) -> None:
    """Print ``data`` as JSON on stdout (the ``--json`` output mode)."""
    typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def progress(iterable: Any = None, *, total: int | None = None, desc: str = "", disable: bool | None = None):
    """A progress bar on stderr (hidden when stderr is not a terminal unless forced)."""
    from lvg._progress import Progress

    if disable is None:
        disable = not sys.stderr.isatty()
    return Progress(iterable, total=total, desc=desc, disable=disable)
