"""Named files from their publishers into a local cache: ``lvg fetch`` and the names ``lvg train`` accepts.

- :mod:`lvg.hub.catalog`: what can be fetched (BEiT-3 weights and tokenizer, RefCOCO / RefCOCO+ / RefCOCOg /
  gRefCOCO annotations, COCO train2014 images) and what a good copy looks like;
- :mod:`lvg.hub.download`: resumable HTTP downloads with progress and a lock per file;
- :mod:`lvg.hub.verify`: structural checks (torch imported lazily, for weights only);
- :mod:`lvg.hub.store`: the cache (``$LVG_HOME``), :func:`fetch`, mirrors and offline mode.

This package imports no torch and downloads nothing at import.
"""

from __future__ import annotations

from pathlib import Path

from lvg.errors import ConfigError
from lvg.hub.catalog import Item, annotation_items, get_item, item_names
from lvg.hub.download import FetchError
from lvg.hub.store import cache_home, cached_path, fetch, is_cached

__all__ = [
    "FetchError",
    "Item",
    "cache_home",
    "cached_path",
    "data_needs",
    "fetch",
    "get_item",
    "is_cached",
    "item_names",
    "named_data",
    "resolve_data",
    "resolve_pretrained",
]


def resolve_pretrained(spec: str, **options: object) -> str:
    """A ``pretrained`` setting as a file: an existing path as given, a catalog weights name (``beit3-base``,
    ``beit3-large``) fetched into the cache (``options`` go to :func:`fetch`)."""
    if Path(spec).exists():
        return spec
    try:
        item = get_item(spec)
    except ConfigError:
        return spec  # a path; the loader says it is missing
    if item.kind != "weights":
        raise ConfigError(f"pretrained {spec!r} is not BEiT-3 weights; use one of "
                          f"{', '.join(n for n in item_names() if get_item(n).kind == 'weights')}")
    return str(fetch(item, **options))  # type: ignore[arg-type]


def named_data(spec: str) -> tuple[Item, str] | None:
    """``(annotation item, splitBy)`` when ``spec`` names a dataset by name (``refcoco:unc``, ``refcocog:umd``,
    ``grefcoco``) and no local path matches it; else None."""
    if not spec or Path(spec).exists() or Path(spec.split(":", 1)[0]).is_dir():
        return None
    name, _, split_by = spec.partition(":")
    item = annotation_items().get(name)
    if item is None or ":" in split_by:
        return None
    return item, split_by


def data_needs(spec: str, *, tokenizer: str | None = None) -> tuple[str, list[Item]]:
    """What a data spec stands for, without fetching anything: the local spec, and the items it needs in the
    cache (none for a local spec). ``NAME[:SPLITBY]`` of a known dataset (:func:`named_data`) is
    ``$LVG_HOME/data:NAME[:SPLITBY]`` and needs its annotations, the COCO train2014 images and, with
    ``tokenizer == "beit3.spm"`` (a BEiT-3 variant's), the tokenizer, which the run then finds in the cache
    above the data. Combined specs (``lvg.train.combined``) are resolved part by part."""
    from lvg.train.config import data_parts

    parts = data_parts(spec)
    if len(parts) > 1:
        specs, items = [], []
        for part in parts:
            local, needed = data_needs(part, tokenizer=tokenizer)
            specs.append(local)
            items += [i for i in needed if i not in items]
        return ",".join(specs), items
    named = named_data(spec)
    if named is None:
        return spec, []
    item, split_by = named
    spm = get_item("beit3-spm")
    items = [item, get_item("coco-train2014")] + ([spm] if tokenizer == spm.file else [])
    return f"{cache_home() / 'data'}:{item.dataset}" + (f":{split_by}" if split_by else ""), items


def resolve_data(spec: str, *, tokenizer: str | None = None, **options: object) -> str:
    """A data spec as a local one (:func:`data_needs`), the items it needs fetched first."""
    local, items = data_needs(spec, tokenizer=tokenizer)
    for item in items:
        fetch(item, **options)  # type: ignore[arg-type]
    return local
