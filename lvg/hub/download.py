"""Resumable HTTP downloads: a ``.part`` file continued with ``Range`` requests, a SHA-256 computed on the way,
progress on stderr, and a lock so that processes fetching the same file (the ranks of a ``torchrun`` job)
download it once.

Standard library only (``urllib``): redirects (GitHub release assets) are followed with the ``Range`` header
kept. A server that ignores ``Range`` (``200`` instead of ``206``) restarts the file from its first byte; a
connection that drops midway is retried from where it stopped.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from lvg._progress import progress
from lvg._version import __version__
from lvg.errors import LVGError

__all__ = ["FetchError", "download", "sha256_of"]

CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class FetchError(LVGError):
    """A file could not be fetched, or what was fetched is not the file it should be."""


def _hash_file(path: Path) -> Any:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest


def sha256_of(path: Path) -> str:
    """The SHA-256 of ``path``'s bytes, hex."""
    return _hash_file(path).hexdigest()


def _open(url: str, start: int, timeout: float) -> Any:
    headers = {"User-Agent": f"latent-vg/{__version__}"}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _total(resp: Any, start: int) -> int | None:
    """The whole file's size from a response to a request from byte ``start`` (None if the server gives none)."""
    match = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "") or "")
    if match and match.group(3) != "*":
        return int(match.group(3))
    length = resp.headers.get("Content-Length")
    return int(length) + (start if resp.status == 206 else 0) if length and length.isdigit() else None


class _Partial:
    """The ``.part`` file of a download and the SHA-256 of the bytes it holds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.digest = _hash_file(path) if path.exists() else hashlib.sha256()

    @property
    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def reset(self) -> None:
        """Forget what was received: the next bytes start the file."""
        self.path.unlink(missing_ok=True)
        self.digest = hashlib.sha256()


def _attempt(url: str, part: _Partial, *, timeout: float, show: bool | None) -> bool:
    """One request continuing ``part``; True once the file is complete, False to try again at once (the
    partial was dropped). Network errors propagate; an HTTP error status is a :class:`FetchError`."""
    have = part.size
    try:
        resp = _open(url, have, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: complete already, or the partial is not this file
            match = re.fullmatch(r"bytes \*/(\d+)", exc.headers.get("Content-Range") or "")
            if match and int(match.group(1)) == have:
                return True
            part.reset()
            return False
        raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    with resp:
        if have and resp.status != 206:  # the server ignored Range: the body is the whole file
            part.reset()
            have = 0
        total = _total(resp, have)
        got = have
        bar = progress(total=-(-total // CHUNK) if total else None, desc=f"{part.path.name[:-5]} (MiB)",
                       disable=None if show is None else not show)
        with open(part.path, "ab") as out, bar:
            bar.update(have // CHUNK)
            while block := resp.read(CHUNK):
                out.write(block)
                part.digest.update(block)
                bar.update((got + len(block)) // CHUNK - got // CHUNK)
                got += len(block)
            out.flush()
            os.fsync(out.fileno())
    if total is not None and got != total:
        raise ConnectionError(f"connection closed at byte {got} of {total}")
    return True


def download(url: str, part: Path, *, retries: int = 3, timeout: float = 60.0,
             show_progress: bool | None = None) -> str:
    """Download ``url`` into ``part``, continuing what ``part`` already holds; returns the file's SHA-256.

    A dropped connection is retried ``retries`` times, each continuing from the bytes already written (which
    stay in ``part`` if every try fails, for the next call to continue). An HTTP error status is a
    :class:`FetchError` at once.
    """
    part.parent.mkdir(parents=True, exist_ok=True)
    partial = _Partial(part)
    for attempt in range(retries + 1):
        try:
            if _attempt(url, partial, timeout=timeout, show=show_progress):
                return partial.digest.hexdigest()
        except (OSError, http.client.HTTPException) as exc:  # URLError, dropped connections, time-outs
            if attempt == retries:
                reason = getattr(exc, "reason", None) or exc
                raise FetchError(f"{url}: {reason} (after {retries + 1} tries; the {partial.size} bytes received "
                                 f"are kept in {part} and the next fetch continues from there)") from None
            time.sleep(min(0.25 * 2 ** attempt, 8.0))
    raise FetchError(f"{url}: the server's ranges never matched {part}; it was removed, fetch again")
