"""Structural checks of fetched files: each kind is opened the way its user opens it and compared with what
the catalog item expects. A file that fails is refused with one line saying what is wrong.

- weights: ``torch.load(weights_only=True)`` (never a full unpickle) holds ``{"model": state_dict}`` with every
  key of the item's BEiT-3 under ``beit3.`` at its shape (the loader's own key check); torch is imported
  here only, and its absence names the extra to install.
- tokenizer: sentencepiece opens it and it has the item's number of pieces.
- annotations: every expected file was in the archive; refs pickles through the REFER reader's restricted
  unpickler, JSON files parse, and hold what REFER / gREFER / COCO files hold.
- images: the zip's central directory lists the item's number of ``train2014/*.jpg`` and every member's
  CRC-32 matches.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from lvg.errors import LVGError, require
from lvg.hub.catalog import Item
from lvg.hub.download import FetchError

__all__ = ["check_annotations", "check_file", "expected_state_shapes", "image_members"]


def expected_state_shapes(item: Item) -> dict[str, tuple[int, ...]]:
    """Every key an official BEiT-3 state dict of ``item.encoder``'s size holds, with its shape (needs torch:
    the shapes are read off this package's encoder, built without memory on the meta device)."""
    import torch

    from lvg.modeling.checkpoint import IGNORED_PRETRAINED
    from lvg.modeling.encoder import BEiT3

    assert item.encoder is not None
    with torch.device("meta"):
        enc = BEiT3(item.encoder)
    shapes = {f"beit3.{k}": tuple(v.shape) for k, v in enc.state_dict().items()}
    # The tokens of BEiT-3's own pretraining that the loader skips are still in every official file.
    shapes.update({k: (1, 1, item.encoder.embed_dim) for k in IGNORED_PRETRAINED})
    return shapes


def _check_weights(path: Path, item: Item) -> None:
    require("torch", extra="torch", purpose=f"checking {item.file}")
    from lvg.modeling.checkpoint import read_pth, state_mismatch

    try:
        state = read_pth(path)  # the loader's own reader: weights_only, memory-mapped
    except LVGError as exc:
        raise FetchError(f"{item.file} is not a readable PyTorch state dict ({exc})") from None
    problems = state_mismatch(expected_state_shapes(item), state, allow_extra=True)
    if problems:
        raise FetchError(f"{item.file} is not the {item.name} state dict: BEiT-3 keys {problems}")


def _check_tokenizer(path: Path, item: Item) -> None:
    from lvg.core.tokenizer import Tokenizer

    try:
        pieces = Tokenizer.from_file(path).vocab_size
    except LVGError as exc:
        raise FetchError(f"{item.file} is not a sentencepiece model ({exc})") from None
    if pieces != item.pieces:
        raise FetchError(f"{item.file} has {pieces} pieces; the {item.name} tokenizer has {item.pieces}")


def image_members(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The ``train2014/<name>.jpg`` members of a COCO image archive (nothing nested deeper)."""
    return [m for m in zf.infolist() if not m.is_dir() and m.filename.count("/") == 1
            and m.filename.startswith("train2014/") and m.filename.lower().endswith(".jpg")]


def _check_images(path: Path, item: Item) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            found = len(image_members(zf))
            if found != item.images:
                raise FetchError(f"{item.file} holds {found} train2014/*.jpg images; COCO train2014 has {item.images}")
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise FetchError(f"{item.file} is not a readable zip archive ({exc})") from None
    if bad is not None:
        raise FetchError(f"{item.file} is damaged: {bad} does not match its CRC-32")


def check_file(path: Path, item: Item) -> None:
    """Refuse ``path`` (:class:`FetchError`) unless it is a good copy of ``item``'s file (the archive itself for
    annotations: its members are checked once extracted, by :func:`check_annotations`)."""
    if item.kind == "weights":
        _check_weights(path, item)
    elif item.kind == "tokenizer":
        _check_tokenizer(path, item)
    elif item.kind == "images":
        _check_images(path, item)
    elif not zipfile.is_zipfile(path):
        raise FetchError(f"{item.file} is not a zip archive")


def check_annotations(folder: Path, item: Item) -> None:
    """Refuse an extracted annotation folder unless every expected file is there and reads as its format."""
    from lvg.train.refer_files import read_json, read_refs_pickle

    for name in item.members:
        path = folder / name
        if not path.is_file():
            raise FetchError(f"{item.file} has no {name}")
        try:
            data = read_refs_pickle(path) if name.endswith(".p") else read_json(path, name)
        except LVGError as exc:
            raise FetchError(f"{item.file}: {name} is unreadable ({exc})") from None
        if name == "instances.json":
            ok = isinstance(data, dict) and all(isinstance(data.get(k), list) for k in ("images", "annotations"))
        else:
            ok = isinstance(data, list) and all(isinstance(r, dict) and "sentences" in r and "split" in r
                                                for r in data)
        if not ok:
            raise FetchError(f"{item.file}: {name} does not hold what "
                             f"{'COCO instances' if name == 'instances.json' else 'REFER refs'} hold")
