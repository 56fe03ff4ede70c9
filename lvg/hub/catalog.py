"""The named files ``lvg fetch`` knows: official BEiT-3 weights and tokenizer, the REFER / gREFER annotation
sets and the COCO train2014 images, with where they are published and what a good copy looks like.

Each item's file keeps its official name, so a mirror serves it as ``URL/<file>`` and an offline cache holds
it under that name. The publishers give no checksums; ``sha256`` is None for them and every copy is checked
structurally instead (:mod:`lvg.hub.verify`). What the check expects is part of the item (``encoder``,
``pieces``, ``members``, ``images``), so a site can serve a copy of its own making under the same name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lvg.config import EncoderConfig
from lvg.errors import ConfigError

__all__ = ["BEIT3_RELEASES", "Item", "annotation_items", "get_item", "item_names", "register"]

Kind = Literal["weights", "tokenizer", "annotations", "images"]

#: microsoft/unilm beit3/README.md: the official files since 2024-04 (earlier Azure blob, then SAS tokens).
BEIT3_RELEASES = "https://github.com/addf400/files/releases/download/beit3"
_REFER = "https://bvisionweb1.cs.unc.edu/licheng/referit/data"  # lichengunc/refer's README


@dataclass(frozen=True)
class Item:
    """One fetchable file.

    ``file``: its official name (also its name on a mirror and in the cache). ``url``: where it is
    published (None: no direct link, e.g. a Google Drive file; a mirror or a copy placed in the cache is
    then the way). ``source``: the page that documents it, for messages. ``size``: approximate bytes (for
    the dry run and messages). ``sha256``: the expected digest where known.

    What a good copy holds: ``encoder`` (weights: the BEiT-3 at 224x224 whose state dict, under
    ``beit3.``, the file must hold, every key and shape), ``pieces`` (tokenizer: the sentencepiece size),
    ``dataset`` and ``members`` (annotations: the folder they land in and the files the archive must hold,
    found by base name), ``images`` (images: the number of ``.jpg`` files under ``train2014/``).
    """

    name: str
    kind: Kind
    file: str
    url: str | None
    source: str
    size: int = 0
    sha256: str | None = None
    encoder: EncoderConfig | None = None
    pieces: int = 0
    dataset: str = ""
    members: tuple[str, ...] = ()
    images: int = 0

    @property
    def is_archive(self) -> bool:
        """Whether the file is a zip extracted into the cache (annotations, images)."""
        return self.kind in ("annotations", "images")


def _beit3(size: str, depth: int, width: int, heads: int, nbytes: int) -> Item:
    enc = EncoderConfig(img_size=224, embed_dim=width, depth=depth, num_heads=heads, ffn_dim=4 * width)
    file = f"beit3_{size}_patch16_224.pth"
    return Item(name=f"beit3-{size}", kind="weights", file=file, url=f"{BEIT3_RELEASES}/{file}",
                source="https://github.com/microsoft/unilm/tree/master/beit3", size=nbytes, encoder=enc)


def _refer(dataset: str, members: tuple[str, ...], nbytes: int) -> Item:
    return Item(name=dataset, kind="annotations", file=f"{dataset}.zip", url=f"{_REFER}/{dataset}.zip",
                source="https://github.com/lichengunc/refer", size=nbytes, dataset=dataset,
                members=("instances.json", *members))


_ITEMS: dict[str, Item] = {}


def register(item: Item) -> Item:
    """Add (or replace) a named item; returns it. The catalog below is built with it."""
    _ITEMS[item.name] = item
    return item


for _item in (
    _beit3("base", 12, 768, 12, 900_000_000),
    _beit3("large", 24, 1024, 16, 2_700_000_000),
    Item(name="beit3-spm", kind="tokenizer", file="beit3.spm", url=f"{BEIT3_RELEASES}/beit3.spm",
         source="https://github.com/microsoft/unilm/tree/master/beit3", size=1_400_000, pieces=64000),
    _refer("refcoco", ("refs(unc).p", "refs(google).p"), 44_000_000),
    _refer("refcoco+", ("refs(unc).p",), 44_000_000),
    _refer("refcocog", ("refs(umd).p", "refs(google).p"), 38_000_000),
    # gRefCOCO is published on OneDrive / Google Drive only: no link a program can follow.
    Item(name="grefcoco", kind="annotations", file="grefcoco.zip", url=None,
         source="https://github.com/henghuiding/gRefCOCO", size=60_000_000, dataset="grefcoco",
         members=("instances.json", "grefs(unc).json")),
    Item(name="coco-train2014", kind="images", file="train2014.zip",
         url="http://images.cocodataset.org/zips/train2014.zip", source="https://cocodataset.org/#download",
         size=13_500_000_000, images=82783),
):
    register(_item)


def item_names() -> list[str]:
    """Names ``lvg fetch`` accepts."""
    return list(_ITEMS)


def get_item(name: str) -> Item:
    """The item called ``name`` (:class:`ConfigError` naming the known ones otherwise)."""
    try:
        return _ITEMS[name]
    except KeyError:
        raise ConfigError(f"nothing to fetch called {name!r}; known: {', '.join(_ITEMS)}") from None


def annotation_items() -> dict[str, Item]:
    """The annotation sets by dataset folder name (``refcoco``, ``refcoco+``, ``refcocog``, ``grefcoco``)."""
    return {it.dataset: it for it in _ITEMS.values() if it.kind == "annotations"}
