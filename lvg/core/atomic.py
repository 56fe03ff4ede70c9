"""Outputs written whole or not at all: every file lvg writes goes to a temporary file in the same folder and
is renamed over its name once complete.

- :func:`atomic_output`: one file. The caller writes the yielded temporary path; on success it is renamed
  over the destination (an existing file is replaced in one step, never left half-written); on every exit
  path that is not a success (an exception, ``KeyboardInterrupt``, the ``SystemExit`` a handled SIGTERM
  raises) the temporary file is removed.
- :func:`scratch_path`: a temporary file beside an output for intermediate data (an exporter's own file),
  removed on every exit path.
- :class:`OutputSet`: several files of one command (an overlay and a mask, an engine and its sidecar): all
  are written to temporary files first and renamed only when every one was written, so a command that fails
  leaves none of its new outputs.
- :func:`file_lock`: an exclusive lock between processes, for work whose result another process must not
  see half done (a download, a compile cache that a library writes in place).
- Temporary names are ``.<name>.<pid>.<random>.tmp``. A process killed outright (SIGKILL, power loss) cannot
  remove its own; the next write of the same output removes those whose process is gone
  (:func:`remove_stale`).
"""

from __future__ import annotations

import glob
import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lvg.errors import InputError, LVGError

__all__ = ["OutputSet", "atomic_output", "file_lock", "remove_stale", "scratch_path", "temp_path"]


def temp_path(dest: Path) -> Path:
    """A fresh temporary name beside ``dest``: ``.<name>.<pid>.<random>.tmp``."""
    return dest.parent / f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process, or a number that is no pid: leave its file alone
    return True


def remove_stale(dest: Path) -> list[Path]:
    """Remove the temporary files of ``dest`` left by processes that no longer run; returns them."""
    removed = []
    prefix = f".{dest.name}."
    try:
        candidates = glob.glob(glob.escape(str(dest.parent / prefix)) + "*.tmp")
    except OSError:
        return removed
    for name in candidates:
        pid = Path(name).name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            try:
                os.unlink(name)
                removed.append(Path(name))
            except OSError:
                pass
    return removed


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


@contextmanager
def atomic_output(dest: str | os.PathLike[str], *, error: type[LVGError] = InputError) -> Iterator[Path]:
    """``with atomic_output(path) as tmp: write(tmp)``: ``path`` appears complete or not at all.

    An ``OSError`` while renaming becomes ``error`` (writing is the caller's: it converts its own errors).
    """
    with OutputSet(error=error) as outputs:
        yield outputs.stage(dest)


@contextmanager
def scratch_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """``with scratch_path(out) as tmp``: a temporary file beside ``out`` (named like its temporaries, so the
    next write of ``out`` removes it if this process is killed outright), removed when the block ends."""
    dest = Path(dest)
    remove_stale(dest)
    tmp = temp_path(dest)
    try:
        yield tmp
    finally:
        _unlink(tmp)


class OutputSet:
    """The files one command writes, renamed into place together (see the module docstring).

    ``with OutputSet() as out: write(out.stage(a)); write(out.stage(b))``: on a normal exit every staged
    file is renamed over its destination; if a rename fails, the destinations already renamed that did not
    exist before are removed again. On any other exit nothing is renamed and every temporary file is removed.
    """

    def __init__(self, *, error: type[LVGError] = InputError) -> None:
        self._error = error
        self._staged: list[tuple[Path, Path]] = []

    def stage(self, dest: str | os.PathLike[str]) -> Path:
        """The temporary path to write ``dest``'s content to."""
        dest = Path(dest)
        remove_stale(dest)
        tmp = temp_path(dest)
        self._staged.append((tmp, dest))
        return tmp

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()

    def discard(self) -> None:
        """Remove every temporary file (nothing is renamed)."""
        for tmp, _ in self._staged:
            _unlink(tmp)
        self._staged.clear()

    def commit(self) -> None:
        """Rename every staged file over its destination (see the class docstring)."""
        created: list[Path] = []
        try:
            for tmp, dest in self._staged:
                existed = os.path.lexists(dest)
                os.replace(tmp, dest)
                if not existed:
                    created.append(dest)
        except OSError as exc:
            for dest in created:
                _unlink(dest)
            raise self._error(f"cannot write {exc.filename or dest}: {exc.strerror or exc}") from None
        except BaseException:
            for dest in created:
                _unlink(dest)
            raise
        finally:
            self.discard()


@contextmanager
def file_lock(path: Path, *, waiting: str = "") -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block; waits for another holder, first
    printing "waiting for ``waiting`` ..." to stderr when ``waiting`` is given.

    ``fcntl.flock`` where it exists (Linux, macOS); elsewhere the block runs unlocked. The lock goes with the
    process: one killed while holding it holds it no more.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting:
                print(f"waiting for {waiting} ...", file=sys.stderr, flush=True)
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
