"""The synthetic generator's output pinned by hash, so that restructuring its code cannot change a dataset.

A training run is a function of (data seed, training seed): the same ``lvg data synth`` arguments must give
the same scenes, masks, sentences and files. The digests below were taken from the generator as shipped.
They depend only on the generator, numpy's ``default_rng`` streams, Pillow's rasteriser and sentencepiece's
trainer; a dependency upgrade that changes one of those needs the pins re-derived (after checking that the
scenes still look and read right), a code change needs none.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from lvg.train.synth import generate, make_scene

#: (seed, index, size_range) -> sha256 of the scene (see _scene_digest).
SCENES = {
    (0, 0, (320, 640)): "1aae724dabf7a423a02040c9eddaafbb676c58a74b94741cf94f9e73bfd639c0",
    (0, 1, (320, 640)): "11633ae7d645fe035f019e692a9b0b8540972462ffa71713247590022a7027e5",
    (7, 3, (96, 192)): "fb08a83478bf2f5c0a54060b848bc7a4d5198b8eb620ea7e263a91569435ed7c",
    (123, 42, (320, 640)): "eaeb8a38775d4b7611229cb415340539a982157f951e4fa94b1d60c494565051",
}
#: sha256 of every file a small generate() call writes (images by their decoded pixels).
DATASET = "47ea40fa4b908936e68b15cbf32e428832815b08e669d9f92017ae003bc431cb"


def _update(h: hashlib._Hash, *parts: object) -> None:
    for part in parts:
        data = part if isinstance(part, bytes) else repr(part).encode()
        h.update(len(data).to_bytes(8, "little") + data)


def _scene_digest(seed: int, index: int, size_range: tuple[int, int]) -> str:
    scene = make_scene(seed, index, size_range=size_range)
    h = hashlib.sha256()
    _update(h, scene.image.shape, scene.image.tobytes())
    for obj, mask in zip(scene.objects, scene.masks):
        # repr of a float is exact, so the geometry is pinned to the last bit.
        _update(h, dataclasses.astuple(obj), mask.shape, np.packbits(mask).tobytes())
    for t, exprs in sorted(scene.single.items()):
        _update(h, t, [(e.text, e.kind, sorted(e.targets)) for e in exprs])
    _update(h, [(e.text, e.kind, sorted(e.targets)) for e in scene.multi])
    _update(h, [(e.text, e.kind, sorted(e.targets)) for e in scene.none])
    return h.hexdigest()


def _dataset_digest(out: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = path.relative_to(out).as_posix()
        if path.suffix == ".png":
            pixels = np.asarray(Image.open(path).convert("RGB"))
            _update(h, rel, pixels.shape, pixels.tobytes())
        else:
            _update(h, rel, path.read_bytes())
    return h.hexdigest()


def test_scenes_are_pinned() -> None:
    got = {key: _scene_digest(*key) for key in SCENES}
    assert got == SCENES


def test_generated_dataset_is_pinned(tmp_path: Path) -> None:
    summary = generate(tmp_path / "d", images=5, seed=11, size_range=(96, 160), image_format="png",
                       splits=(("train", 0.6), ("val", 0.4)))
    assert summary.images == 5
    assert _dataset_digest(tmp_path / "d") == DATASET
