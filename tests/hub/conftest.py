"""Files in the official layout at test sizes, a publisher and a mirror on 127.0.0.1, and a fresh cache.

The files are what the publishers serve, made small: a BEiT-3 state dict (``{"model": ...}`` with the official
``beit3.*`` keys) of lvg-tiny's encoder at 224x224, a sentencepiece model, REFER / gREFER archives and a
``train2014.zip`` of a synthetic dataset's files. The catalog items keep their names and file names; only
what their checks expect (and the publisher's address) is set to the small files'.
"""

from __future__ import annotations

import dataclasses
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from lvg.config import get_config
from lvg.core.tokenizer import Tokenizer
from lvg.hub import catalog
from lvg.modeling.encoder import BEiT3
from lvg.train.synth import SynthSummary, generate
from tests.helpers.http_server import Served, serve

TINY_224 = dataclasses.replace(get_config("lvg-tiny").encoder, img_size=224)


def beit3_state_bytes(enc=TINY_224, *, seed: int = 0) -> bytes:
    """An official-layout BEiT-3 checkpoint of encoder ``enc``, as torch.save writes it."""
    torch.manual_seed(seed)
    state = {f"beit3.{k}": v for k, v in BEiT3(enc).state_dict().items()}
    state["beit3.vision_embed.mask_token"] = torch.zeros(1, 1, enc.embed_dim)
    buf = io.BytesIO()
    torch.save({"model": state}, buf)
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture(scope="session")
def hub_synth(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    return generate(tmp_path_factory.mktemp("hub-synth"), images=4, seed=7, size_range=(96, 128),
                    splits=(("train", 0.5), ("val", 0.5)))


@pytest.fixture(scope="session")
def official_files(hub_synth: SynthSummary) -> dict[str, bytes]:
    """File name -> bytes, as the publishers name them."""
    out = hub_synth.out_dir
    refer, grefer = out / "refcoco-synth", out / "grefcoco-synth"
    return {
        "beit3_base_patch16_224.pth": beit3_state_bytes(),
        "beit3.spm": (out / "synthetic.spm").read_bytes(),
        "refcoco.zip": zip_bytes({f"refcoco/{n}": (refer / n).read_bytes() for n in ("instances.json", "refs(unc).p")}),
        "refcoco+.zip": zip_bytes({f"refcoco+/{n}": (refer / n).read_bytes()
                                   for n in ("instances.json", "refs(unc).p")}),
        "grefcoco.zip": zip_bytes({f"grefcoco/{n}": (grefer / n).read_bytes()
                                   for n in ("instances.json", "grefs(unc).json")}),
        "train2014.zip": zip_bytes({f"train2014/{p.name}": p.read_bytes() for p in sorted((out / "images").iterdir())}),
    }


@pytest.fixture
def publisher(official_files: dict[str, bytes], hub_synth: SynthSummary,
              monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Served]:
    """The publishers' servers (one, on 127.0.0.1), the catalog pointed at it with checks for the small files,
    and an empty cache in ``LVG_HOME``."""
    monkeypatch.setenv("LVG_HOME", str(tmp_path / "lvg-home"))
    monkeypatch.delenv("LVG_MIRROR", raising=False)
    monkeypatch.delenv("LVG_OFFLINE", raising=False)
    with serve(Served(files=dict(official_files))) as served:
        small = {
            "beit3-base": {"encoder": TINY_224},
            "beit3-spm": {"pieces": Tokenizer.from_file(hub_synth.tokenizer).vocab_size},
            "refcoco": {"members": ("instances.json", "refs(unc).p")},
            "refcoco+": {},
            "grefcoco": {},
            "coco-train2014": {"images": hub_synth.images},
        }
        for name, changes in small.items():
            item = catalog.get_item(name)
            url = None if item.url is None else f"{served.url}/{item.file}"
            monkeypatch.setitem(catalog._ITEMS, name, dataclasses.replace(item, url=url, **changes))
        yield served
