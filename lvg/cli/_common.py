"""What every command shares: one-line errors instead of tracebacks, warnings as lines, JSON output, and the
refusal of output paths that would overwrite an input.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from typer.exceptions import TyperException

from lvg.errors import InputError, LVGError, first_line

F = TypeVar("F", bound=Callable[..., Any])

#: Exit status of an unexpected exception (a bug): distinct from an :class:`LVGError`'s 2.
INTERNAL_ERROR_EXIT = 1

#: Set to ``1`` to get the full traceback of an unexpected exception instead of the one-line message.
DEBUG_ENV = "LVG_DEBUG"


class Terminated(KeyboardInterrupt):
    """SIGTERM while a command runs (:func:`lvg.cli.main` raises it from the signal handler): unwinds like Ctrl-C,
    so every ``finally`` and context manager removes its temporary files, then exits 143."""


#: Signals delivered while a command ran (:func:`on_signal`): an exception that follows one is its echo.
_received: list[int] = []


#: Help of every command's ``--precision``.
PRECISION_HELP = ("auto (an int8 file: int8; else bf16 on CPUs with bf16 instructions, else fp32) | fp32 | bf16 | "
                  "int8 (an int8 file: lvg export --int8).")


def on_signal(signum: int, frame: object) -> None:
    """:func:`lvg.cli.main`'s handler of SIGINT / SIGTERM while a command runs: remember the signal, then unwind
    like Ctrl-C (``KeyboardInterrupt``, or :class:`Terminated` for SIGTERM) so temporary files are removed.

    Remembering matters because the unwinding exception is not always the one that arrives: an extension
    module whose initialisation it interrupts reports ``ImportError: initialization failed`` instead.
    """
    _received.append(signum)
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def redeliver_lost_signal(unraisable: Any) -> bool:
    """For ``sys.unraisablehook``: a signal's ``KeyboardInterrupt`` raised inside a finalizer (a ``__del__``,
    a weakref callback) cannot unwind anything; Python would print it as "Exception ignored" and carry on.
    Send the signal again from another thread instead, so that it lands in the command's own code 50 ms
    later. Returns whether ``unraisable`` was such a case (otherwise the previous hook should report it)."""
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        return False
    sig = signal.SIGTERM if isinstance(unraisable.exc_value, Terminated) else signal.SIGINT
    # A moment later, not at once: a signal handled while this hook still runs would be lost in it again.
    timer = threading.Timer(0.05, os.kill, args=(os.getpid(), sig))
    timer.daemon = True
    timer.start()
    return True


def _exit_interrupted(terminated: bool) -> NoReturn:
    typer.echo("terminated" if terminated else "interrupted", err=True)
    raise typer.Exit(143 if terminated else 130) from None


def one_line(text: str) -> str:
    """Join a message's non-empty lines with ``"; "`` so the CLI always prints exactly one line."""
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def handle_errors(fn: F) -> F:
    """Decorate a typer command so that it never prints a traceback.

    - :class:`LVGError` -> ``error: <message>`` on stderr, exit ``exc.exit_code`` (2);
    - ``KeyboardInterrupt`` -> ``interrupted``, exit 130; :class:`Terminated` (SIGTERM) -> ``terminated``, 143;
    - ``OSError`` (a path the system refused that no check named first) -> ``error: <reason>: <path>``, exit 2;
    - ``MemoryError`` -> ``error: out of memory ...``, exit 1;
    - any other exception (a bug) -> ``error: internal error: <Type>: <first line>``, exit 1, unless the
      environment sets ``LVG_DEBUG=1``, which re-raises it (full traceback) for debugging.

    typer's own ``Exit`` / ``Abort`` / usage errors pass through unchanged.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _received.clear()  # signals of an earlier command in this process (a test suite) are not this one's
        try:
            return fn(*args, **kwargs)
        except LVGError as exc:
            typer.echo(f"error: {one_line(str(exc)) or type(exc).__name__}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt as exc:
            _exit_interrupted(isinstance(exc, Terminated))
        except (typer.Exit, typer.Abort, TyperException):
            raise
        except Exception as exc:
            if _received:  # whatever a signal's unwinding turned into, the user interrupted the command
                _exit_interrupted(_received[-1] == signal.SIGTERM)
            _report(exc)

    return wrapper  # type: ignore[return-value]


def _report(exc: Exception) -> NoReturn:
    """One line and the exit status for an exception no other branch of :func:`handle_errors` took."""
    if isinstance(exc, OSError):
        # A path the system refuses (a name over its limit, a folder that is a file, no permission) that no
        # check named first: still the user's to fix, so one line and exit 2 like any LVGError.
        where = f": {exc.filename}" if exc.filename else ""
        typer.echo(f"error: {exc.strerror or first_line(exc)}{where}", err=True)
        raise typer.Exit(2) from None
    if os.environ.get(DEBUG_ENV, "") == "1":
        raise exc
    if isinstance(exc, MemoryError):
        typer.echo("error: out of memory (use a smaller image or batch, or a machine with more memory)", err=True)
    else:
        detail = first_line(exc) if str(exc).strip() else ""
        what = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
        typer.echo(f"error: internal error: {what} (set {DEBUG_ENV}=1 for the traceback)", err=True)
    raise typer.Exit(INTERNAL_ERROR_EXIT) from None


def echo_json(data: Any) -> None:
    """Print ``data`` as JSON on stdout (the ``--json`` output mode)."""
    typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def echo_warnings(caught: Iterable[warnings.WarningMessage]) -> None:
    """Recorded warnings as ``warning: <message>`` lines on stderr (deprecations of other packages left out)."""
    for w in caught:
        if not issubclass(w.category, DeprecationWarning):
            typer.echo(f"warning: {w.message}", err=True)


@contextmanager
def messages_as_lines(logger_name: str = "lvg.train", limit: int = 3) -> Iterator[None]:
    """For a long-running command: warnings as ``warning: <message>`` lines and ``logger_name``'s info log on
    stderr, as they happen (no tracebacks).

    Repetitive warnings (e.g. one truncated expression after another) are shown ``limit`` times per kind;
    the rest are counted and summarised at the end.
    """
    shown: dict[str, int] = {}

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        kind = getattr(category, "__name__", "Warning")
        shown[kind] = shown.get(kind, 0) + 1
        if shown[kind] <= limit:
            sys.stderr.write(f"warning: {message}\n")

    logger = logging.getLogger(logger_name)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    old_show = warnings.showwarning
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = show
            yield
    finally:
        warnings.showwarning = old_show
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        for kind, count in shown.items():
            if count > limit:
                sys.stderr.write(f"warning: {count - limit} more {kind} warnings not shown\n")


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)  # also catches hard and symbolic links
    return a.resolve() == b.resolve()


def check_outputs(inputs: Iterable[Path | None], outputs: dict[str, Path | None]) -> None:
    """Refuse, before any work is done, an output path that is a directory, names one of the command's
    input files or another output (``outputs`` maps an option name such as ``"--out"`` to its path): the
    input would be lost, or one output silently replaced by the other."""
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
