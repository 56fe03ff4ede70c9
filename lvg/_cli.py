"""Shared CLI plumbing: one-line errors instead of tracebacks, progress bars, JSON output."""

from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable, TypeVar

import typer

from lvg.errors import LVGError

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(fn: F) -> F:
    """Decorate a typer command: an :class:`LVGError` becomes ``error: <message>`` and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LVGError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def echo_json(data: Any) -> None:
    """Print ``data`` as JSON on stdout (the ``--json`` output mode)."""
    typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def progress(iterable: Any = None, *, total: int | None = None, desc: str = "", disable: bool | None = None):
    """A progress bar on stderr (hidden when stderr is not a terminal unless forced)."""
    from lvg._progress import Progress

    if disable is None:
        disable = not sys.stderr.isatty()
    return Progress(iterable, total=total, desc=desc, disable=disable)
