"""The cache and :func:`fetch`: where each item lives, whether it is there, and how it gets there.

Layout under ``$LVG_HOME`` (default ``~/.cache/lvg``)::

    beit3_base_patch16_224.pth, beit3.spm ...   single files under their official names
    .<file>.lvg.json                            what was verified: size, mtime, sha256, where it came from
    data/<dataset>/                             extracted annotations (refs / grefs files, instances.json)
    data/images/                                COCO train2014 images (REFER's image_dir for data/)
    downloads/<file>[.part|.lock]               archives and partial downloads

So ``$LVG_HOME/data:refcoco:unc`` is a data spec ``lvg train`` reads, with ``beit3.spm`` found in a parent
folder of the data as the tokenizer of BEiT-3 variants. A file placed in the cache by hand (its name above,
or an archive in ``downloads/``) is verified once and then used like a fetched one.

Nothing here runs at import: files move only when :func:`fetch` (``lvg fetch``, or ``lvg train`` given a
name) is called. ``LVG_MIRROR=URL`` (or ``mirror=``) fetches each file from ``URL/<its file name>``;
``LVG_OFFLINE=1`` (or ``offline=True``) never touches the network and names the file and where to put it.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.parse
import uuid
import zipfile
from pathlib import Path
from typing import Any

from lvg.core.atomic import OutputSet, file_lock
from lvg.core.home import cache_home
from lvg.hub.catalog import Item, get_item
from lvg.hub.download import FetchError, download
from lvg.hub.verify import check_annotations, check_file, image_members

__all__ = ["cache_home", "cached_path", "fetch", "is_cached", "mirror_url", "offline"]

MARKER = ".lvg-fetched.json"


def offline(flag: bool | None = None) -> bool:
    """``flag`` if given, else whether ``LVG_OFFLINE`` is set to 1 / true / yes."""
    if flag is not None:
        return flag
    return os.environ.get("LVG_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def mirror_url(item: Item, mirror: str | None = None) -> str | None:
    """Where ``item`` is downloaded from: ``<mirror>/<file>`` (``mirror`` or ``LVG_MIRROR``), else its URL."""
    base = mirror or os.environ.get("LVG_MIRROR") or ""
    if base:
        return f"{base.rstrip('/')}/{urllib.parse.quote(item.file)}"
    return item.url


def cached_path(item: Item, home: Path | None = None) -> Path:
    """Where ``item`` is once fetched: its file, or the folder its archive was extracted into."""
    home = home or cache_home()
    if item.kind == "annotations":
        return home / "data" / item.dataset
    if item.kind == "images":
        return home / "data" / "images"
    return home / item.file


def _marker(item: Item, home: Path) -> Path:
    target = cached_path(item, home)
    return target / MARKER if item.is_archive else target.with_name(f".{item.file}.lvg.json")


def _read_marker(item: Item, home: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(_marker(item, home).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def is_cached(item: Item | str, home: Path | None = None) -> bool:
    """Whether ``item`` is in the cache, verified (a single file also unchanged since: same size and mtime)."""
    item = get_item(item) if isinstance(item, str) else item
    home = home or cache_home()
    record = _read_marker(item, home)
    if record is None or record.get("file") != item.file:
        return False
    if item.is_archive:
        return cached_path(item, home).is_dir()
    try:
        st = cached_path(item, home).stat()
    except OSError:
        return False
    return record.get("size") == st.st_size and record.get("mtime_ns") == st.st_mtime_ns


def _where_to_put(item: Item, home: Path) -> Path:
    return home / "downloads" / item.file if item.is_archive else cached_path(item, home)


def _no_source(item: Item, home: Path, why: str) -> FetchError:
    origin = f"from {item.url}" if item.url else f"(see {item.source})"
    return FetchError(f"{why}: {item.file} is not in the cache; get it {origin} and put it at "
                      f"{_where_to_put(item, home)}, or set LVG_MIRROR to a server holding it")


def _record(item: Item, path: Path, sha: str, origin: str) -> dict[str, Any]:
    st = path.stat()
    return {"file": item.file, "name": item.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha,
            "from": origin}


def _check_sha(item: Item, sha: str, path: Path) -> None:
    if item.sha256 and sha != item.sha256:
        path.unlink(missing_ok=True)
        raise FetchError(f"{item.file}: SHA-256 {sha} is not the published {item.sha256}; the file was removed")


def _land_file(item: Item, src: Path, home: Path, sha: str, origin: str) -> Path:
    """Verify ``src`` and move it under its name with its marker, both or neither (``src`` is removed if bad)."""
    try:
        _check_sha(item, sha, src)
        check_file(src, item)
    except BaseException:
        src.unlink(missing_ok=True)
        raise
    target = cached_path(item, home)
    with OutputSet(error=FetchError) as out:
        tmp = out.stage(target)
        os.replace(src, tmp)
        marker = out.stage(_marker(item, home))
        marker.write_text(json.dumps(_record(item, tmp, sha, origin)))
    # The rename keeps the mtime the marker recorded.
    return target


def _extract(item: Item, archive: Path, home: Path, sha: str, origin: str) -> Path:
    """Verify ``archive``, extract what the item needs next to its place, check it, and rename it into place."""
    target = cached_path(item, home)
    staging = target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    staging.mkdir(parents=True)
    try:
        _check_sha(item, sha, archive)
        check_file(archive, item)
        with zipfile.ZipFile(archive) as zf:
            if item.kind == "images":
                members = {Path(m.filename).name: m for m in image_members(zf)}
            else:  # by base name, wherever the archive keeps them (refcoco/refs(unc).p, grefs(unc).json ...)
                found = {Path(m.filename).name: m for m in zf.infolist() if not m.is_dir()}
                members = {n: found[n] for n in item.members if n in found}
            for name, member in members.items():  # written by name: nothing lands outside staging
                with zf.open(member) as src, open(staging / name, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        if item.kind == "annotations":
            check_annotations(staging, item)
        (staging / MARKER).write_text(json.dumps({**_record(item, archive, sha, origin), "mtime_ns": None}))
        if target.exists():  # an unverified or older copy: replaced as a whole
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        archive.unlink(missing_ok=True)  # a bad archive does not stay in the cache
        raise
    archive.unlink()
    return target


def fetch(item: Item | str, *, mirror: str | None = None, offline_only: bool | None = None,
          show_progress: bool | None = None, retries: int = 3) -> Path:
    """``item`` in the cache, downloading, verifying and landing it first if it is not there; returns its path.

    Processes fetching the same item wait for each other (one lock per file). A partial download is
    continued; a copy placed in the cache by hand is verified before use. Raises :class:`FetchError` (a file
    that fails its checks is removed first) or, offline, one naming the file and where to put it.
    """
    item = get_item(item) if isinstance(item, str) else item
    home = cache_home()
    if is_cached(item, home):
        return cached_path(item, home)
    downloads = home / "downloads"
    with file_lock(downloads / f"{item.file}.lock", waiting=f"another process fetching {item.file}"):
        if is_cached(item, home):  # another process fetched it while this one waited
            return cached_path(item, home)
        placed = _where_to_put(item, home)
        land = _extract if item.is_archive else _land_file
        if placed.is_file():  # a complete file put there by hand (or an archive not yet extracted)
            from lvg.hub.download import sha256_of

            if not item.is_archive:  # verified where it is: moved onto itself with its marker
                check = downloads / f".{item.file}.check"
                os.replace(placed, check)
                return _land_file(item, check, home, sha256_of(check), "placed in the cache")
            return land(item, placed, home, sha256_of(placed), "placed in the cache")
        if offline(offline_only):
            raise _no_source(item, home, "offline (LVG_OFFLINE=1)")
        url = mirror_url(item, mirror)
        if url is None:
            raise _no_source(item, home, f"{item.name} has no direct download")
        part = downloads / f"{item.file}.part"
        sha = download(url, part, retries=retries, show_progress=show_progress)
        return land(item, part, home, sha, url)
