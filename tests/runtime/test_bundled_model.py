"""The bundled default model: `lvg infer` works out of the box, without torch and without --model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from lvg.runtime.grounder import Grounder, default_model_path
from lvg.train.synth import make_scene

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "shapes.jpg"

# Runs the CLI with torch made unimportable, as on a runtime-only install.
NO_TORCH = "import sys; sys.modules['torch'] = None; from lvg.cli import main; sys.argv[0] = 'lvg'; main()"


def test_bundled_model_is_a_self_contained_small_artifact():
    path = default_model_path()
    assert path.stat().st_size < 30 * 2**20  # the repository's size budget for it
    info = Grounder.load(path).info
    assert info.config.name == "lvg-s" and info.config.head.gres
    assert info.tokenizer_bytes  # no sentencepiece file needed beside it


def test_infer_without_model_or_torch(tmp_path):
    overlay = tmp_path / "overlay.png"
    proc = subprocess.run(
        [sys.executable, "-c", NO_TORCH, "infer", str(EXAMPLE), "the big red shape", "--out", str(overlay), "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    height, width = data["mask_rle"]["size"]
    from PIL import Image

    with Image.open(EXAMPLE) as img:
        assert (width, height) == img.size
        with Image.open(overlay) as out:
            assert out.size == img.size
    assert data["box"] is not None
    x1, y1, x2, y2 = data["box"]
    assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height


def test_python_api_uses_the_bundled_model_by_default():
    grounder = Grounder.load()
    result = grounder.predict(EXAMPLE, "the big red shape")
    assert result.mask.dtype == np.bool_ and result.mask.any()
    ys, xs = np.nonzero(result.mask)
    assert result.box == (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def test_readme_example_mask_is_the_big_red_shape():
    # examples/shapes.jpg is scene 2 of `lvg data synth --seed 9000` (the held-out seed, never trained on), so
    # the generator gives its ground truth: "the big red shape" is the one large red object.
    scene = make_scene(9000, 2)
    from PIL import Image

    with Image.open(EXAMPLE) as img:
        pixels = np.asarray(img.convert("RGB"), dtype=np.int16)
    assert pixels.shape == scene.image.shape and np.abs(pixels - scene.image).mean() < 4  # only JPEG noise
    (target,) = [i for i, o in enumerate(scene.objects) if o.size == "large" and o.colour == "red"]
    truth = scene.masks[target]
    mask = Grounder.load().predict(EXAMPLE, "the big red shape").mask
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou >= 0.5, f"IoU {iou:.3f} with the big red shape"
