"""``lvg fetch``: official BEiT-3 weights and tokenizer, the RefCOCO family's annotations and the COCO
train2014 images, into the cache ``lvg train`` reads them from (``$LVG_HOME``, default ``~/.cache/lvg``).

Examples::

    lvg fetch beit3-base beit3-spm refcoco coco-train2014
    lvg fetch --list
    LVG_MIRROR=http://mirror.local/lvg lvg fetch beit3-large     # each file at URL/<official file name>
    LVG_OFFLINE=1 lvg fetch refcoco                              # the cache only: says where to put the file
"""

from __future__ import annotations

import typer

from lvg.cli._common import echo_json, handle_errors


@handle_errors
def fetch_command(
    names: list[str] | None = typer.Argument(None, help="What to fetch (see --list)."),
    mirror: str | None = typer.Option(None, "--mirror", help="Fetch each file from URL/<its file name> "
                                      "(default: $LVG_MIRROR, else the publisher)."),
    offline: bool | None = typer.Option(None, "--offline/--online", help="Use only the cache (default: "
                                        "$LVG_OFFLINE)."),
    list_: bool = typer.Option(False, "--list", help="List what can be fetched and what is in the cache."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Download named files into the cache, resumably, and verify them; a second call downloads nothing."""
    from lvg.errors import ConfigError
    from lvg.hub import cache_home, cached_path, fetch, get_item, is_cached, item_names

    if list_:
        rows = [{"name": n, "file": get_item(n).file, "kind": get_item(n).kind, "cached": is_cached(n),
                 "path": str(cached_path(get_item(n))), "approx_bytes": get_item(n).size,
                 "url": get_item(n).url} for n in item_names()]
        if json_out:
            echo_json({"home": str(cache_home()), "items": rows})
            return
        typer.echo(f"cache: {cache_home()}")
        for r in rows:
            typer.echo(f"{r['name']:<16}{r['file']:<30}{r['approx_bytes'] / 1e9:>7.2f} GB  "
                       f"{'cached' if r['cached'] else '-'}")
        return
    if not names:
        raise ConfigError(f"name what to fetch: {', '.join(item_names())} (or --list)")
    items = [get_item(n) for n in names]  # every name checked before any download
    paths = {it.name: str(fetch(it, mirror=mirror, offline_only=offline)) for it in items}
    if json_out:
        echo_json(paths)
    else:
        for name, path in paths.items():
            typer.echo(f"{name}: {path}")


def register(app: typer.Typer) -> None:
    """Add ``fetch`` to ``app``."""
    app.command("fetch")(fetch_command)
