"""A micro Latent-VG model for the reliability tests: lvg-tiny's architecture at a 96 x 96 input.

lvg-tiny at 480 x 480 takes ~80 ms per request on a 2-core CI machine; the concurrency, soak and
bad-input matrix tests run hundreds of requests, so they use the same architecture on a 96 x 96
canvas (prob map 24 x 24), ~10 ms per request. Built once per test session (cached in this module)
under a pytest temp folder. Import as ``from tests.helpers.micro_model import get_micro``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.artifacts import CORPUS, make_image

SIZE = 96


@dataclass
class Micro:
    root: Path
    spm: Path
    ckpt: Path  # lvg-tiny (96 x 96) checkpoint with its tokenizer in the header
    gres_ckpt: Path  # lvg-tiny-gres (96 x 96) checkpoint
    onnx: Path  # the lvg-tiny checkpoint exported to ONNX
    image: Path  # a 200 x 120 RGB PNG


_CACHE: dict[str, Micro] = {}


def micro_config(variant: str):
    """``variant``'s config with a ``SIZE`` x ``SIZE`` input (the name stays the variant's)."""
    from lvg.config import get_config

    cfg = get_config(variant)
    return cfg.replace(
        encoder=dataclasses.replace(cfg.encoder, img_size=SIZE),
        preprocess=dataclasses.replace(cfg.preprocess, size=SIZE),
    )


def _checkpoint(variant: str, path: Path, spm: Path, seed: int) -> Path:
    import torch

    from lvg.core.artifact import tokenizer_metadata
    from lvg.core.tokenizer import Tokenizer
    from lvg.modeling import build_model, save_checkpoint

    torch.manual_seed(seed)
    model = build_model(micro_config(variant), impl="reference")
    with torch.no_grad():
        # Spread the random model's logits so masks are partial (see artifact_factory.make_checkpoint).
        model.pixel_decoder.proj.weight.mul_(200.0)
        if model.empty_head is not None:
            model.empty_head.classifier.bias.fill_(-2.0)
    tok = Tokenizer.from_file(spm)
    return save_checkpoint(model, path, metadata=tokenizer_metadata(tok.model_bytes, tok.identity))


def get_micro(tmp_path_factory) -> Micro:
    if "micro" in _CACHE:
        return _CACHE["micro"]
    from lvg.core.tokenizer import train_sentencepiece
    from lvg.export.onnx_export import export_onnx

    root = Path(tmp_path_factory.mktemp("lvg-micro"))
    spm = train_sentencepiece(CORPUS * 3, root / "tiny.spm", vocab_size=120, seed=0)
    ckpt = _checkpoint("lvg-tiny", root / "micro.safetensors", spm, seed=0)
    gres = _checkpoint("lvg-tiny-gres", root / "micro-gres.safetensors", spm, seed=1)
    onnx = root / "micro.onnx"
    export_onnx(ckpt, onnx, check=False)
    micro = Micro(root=root, spm=spm, ckpt=ckpt, gres_ckpt=gres, onnx=onnx, image=make_image(root / "scene.png"))
    _CACHE["micro"] = micro
    return micro
