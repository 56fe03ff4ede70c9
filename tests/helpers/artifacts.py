"""Test artifacts shared by tests/export and tests/runtime: a tiny tokenizer, checkpoints and ONNX files.

Built once per test session (cached in this module) under a pytest temp folder. Import as
``from tests.helpers.artifacts import Artifacts, get_artifacts``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

CORPUS = [
    "the man on the left",
    "a woman in a red shirt standing near the door",
    "dog sitting on the green grass",
    "left most person holding an umbrella",
    "the blue car behind the white truck",
    "small child with a yellow balloon",
    "second giraffe from the right",
    "bowl of soup on the wooden table",
    "a black cat sleeping on the sofa",
    "the tallest tree in the picture",
    "person wearing glasses and a hat",
    "an orange next to the banana",
]


@dataclass
class Artifacts:
    root: Path
    spm: Path
    ckpt: dict[str, Path]
    onnx: dict[tuple[str, bool], Path]
    image: Path  # a 200 x 120 RGB PNG (non-square: exercises the letterbox)


_CACHE: dict[str, Artifacts] = {}


def make_image(path: Path, w: int = 200, h: int = 120, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    arr[:, : w // 2] //= 3  # a darker left half gives the random model some structure
    Image.fromarray(arr).save(path)
    return path


def make_checkpoint(
    variant: str, path: Path, spm: Path, *, seed: int = 0, with_tokenizer: bool = True, no_target_bias: float = -2.0
) -> Path:
    import torch

    from lvg.core.artifact import tokenizer_metadata
    from lvg.core.tokenizer import Tokenizer
    from lvg.export.onnx_export import example_inputs
    from lvg.modeling import build_model, save_checkpoint

    torch.manual_seed(seed)
    model = build_model(variant, impl="reference").eval()
    with torch.no_grad():
        # A random model predicts ~0.5 everywhere; larger projection weights spread the logits so the
        # mask at threshold 0.35 is a non-trivial region (part of the image, not all or nothing). The
        # scale is set for a logit std of 4 on example inputs: enough spread, and every variant's fp16
        # graph is compared against the same logit range (a fixed factor made it differ by 60%).
        spread = model(*example_inputs(model.cfg, 2, seed=seed))["logits"].std()
        model.pixel_decoder.proj.weight.mul_(4.0 / float(spread))
        if model.empty_head is not None:
            # Decided no-target logit offset: -2 -> "target present" (p ~ 0.12), +5 -> "no target".
            model.empty_head.classifier.bias.fill_(no_target_bias)
    tok = Tokenizer.from_file(spm)
    meta = tokenizer_metadata(tok.model_bytes, tok.identity) if with_tokenizer else None
    return save_checkpoint(model, path, metadata=meta)


def get_artifacts(tmp_path_factory) -> Artifacts:
    """Session-wide artifacts: lvg-tiny and lvg-tiny-gres checkpoints and their fp32 / fp16 ONNX files."""
    if "default" in _CACHE:
        return _CACHE["default"]
    from lvg.core.tokenizer import train_sentencepiece
    from lvg.export.onnx_export import export_onnx

    root = Path(tmp_path_factory.mktemp("lvg-artifacts"))
    spm = train_sentencepiece(CORPUS * 3, root / "tiny.spm", vocab_size=120, seed=0)
    ckpt, onnx = {}, {}
    for variant in ("lvg-tiny", "lvg-tiny-gres"):
        ckpt[variant] = make_checkpoint(variant, root / f"{variant}.safetensors", spm)
        for fp16 in (False, True):
            out = root / f"{variant}{'.fp16' if fp16 else ''}.onnx"
            # The export's own check is switched off: the tests compare against torch themselves.
            export_onnx(ckpt[variant], out, fp16=fp16, check=False)
            onnx[(variant, fp16)] = out
    arts = Artifacts(root=root, spm=spm, ckpt=ckpt, onnx=onnx, image=make_image(root / "scene.png"))
    _CACHE["default"] = arts
    return arts
