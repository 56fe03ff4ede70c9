"""What ``bench_e2e.py``'s parent and worker processes share: the cases, the inputs and the models they
build, and the ONNX files the ``ort`` / ``ov`` / ``trt`` workers load (exported once into the cache); the
int8 files (calibration data included) ``bench_cpu.py`` uses too."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODELS = ("lvg", "nolatent", "encoder")
TEXTS = [
    "the man on the left",
    "a woman in a red shirt standing near the door",
    "dog sitting on the green grass",
    "left most person holding an umbrella",
    "the blue car behind the white truck",
    "small child with a yellow balloon",
    "second giraffe from the right",
    "bowl of soup on the wooden table",
]
IMAGE_WH = (640, 427)  # a COCO-like landscape image: the letterbox resizes and pads


@dataclass(frozen=True)
class Case:
    """One (model, backend) worker."""

    model: str  # lvg | nolatent | encoder
    backend: str  # eager | compile | ort | ort-fp16 | ov | trt
    precision: str  # fp32 | fp16 | bf16 | int8
    device: str  # cpu | cuda
    batches: tuple[int, ...]
    impl: str = "reference"  # VCI kernels (lvg only)
    cuda_graphs: bool = False

    @property
    def label(self) -> str:
        s = f"{self.model}/{self.backend}-{self.precision}"
        if self.cuda_graphs:
            s += "+cudagraphs"
        if self.model == "lvg" and self.impl != "reference":
            s += f"/vci-{self.impl}"
        return s


def _variant_names(variant: str) -> dict[str, str]:
    """Config names of the three models; ``encoder`` borrows the latent variant's encoder."""
    base = variant[: -len("-nolatent")] if variant.endswith("-nolatent") else variant
    return {"lvg": base, "nolatent": f"{base}-nolatent", "encoder": base}


def _code_hash() -> str:
    """Hash of the model code: cached ONNX files are rebuilt when the model changes."""
    h = hashlib.sha256()
    for sub in ("lvg/modeling", "lvg/kernels", "lvg/export", "lvg/config"):
        p = ROOT / sub
        for f in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
            h.update(f.read_bytes())
    return h.hexdigest()[:10]



def _tokenizer_path(cache: Path) -> Path:
    from lvg.core.tokenizer import train_sentencepiece

    path = cache / "bench.spm"
    if not path.is_file():
        train_sentencepiece(TEXTS * 4, path, vocab_size=400)
    return path


def _build(name: str, impl: str = "reference"):
    """A randomly initialised model (seed 0: the torch and ONNX workers hold the same weights)."""
    import torch

    from lvg.modeling import build_model

    torch.manual_seed(0)
    return build_model(name, impl=impl).eval()


class _EncoderOnly:
    """``LatentVG.beit3`` as a module whose forward is the encoder alone (for torch and ONNX)."""

    @staticmethod
    def make(model):
        import torch

        class EncoderOnly(torch.nn.Module):
            def __init__(self, beit3) -> None:
                super().__init__()
                self.beit3 = beit3

            def forward(self, image, text_ids, text_mask):
                return self.beit3(image, text_ids, text_mask)  # (B, 1 + n + L', d)

        return EncoderOnly(model.beit3).eval()


def _encoder_text_len(cfg) -> int:
    """Text positions that give the bare encoder the latent model's token count."""
    return cfg.preprocess.max_text_len + (cfg.latent.num_tokens if cfg.latent.enabled else 0)


def prepare_onnx(variant: str, cache: Path, *, fp16: bool = False) -> dict[str, Path]:
    """Export (once) the ONNX files the ``ort`` workers need; returns model -> path."""

    from lvg.export import export_onnx

    names = _variant_names(variant)
    tag = f"{_code_hash()}-{'fp16' if fp16 else 'fp32'}"
    spm = _tokenizer_path(cache)
    paths: dict[str, Path] = {}
    for model_key in MODELS:
        path = cache / f"{names[model_key]}{'-encoder' if model_key == 'encoder' else ''}-{tag}.onnx"
        paths[model_key] = path
        if path.is_file():
            continue
        print(f"[bench] exporting {path.name} (once; cached in {cache})", file=sys.stderr, flush=True)
        model = _build(names[model_key])
        if model_key != "encoder":
            export_onnx(model, path, fp16=fp16, tokenizer=spm, check=False)
        else:
            _export_encoder(model, path, fp16=fp16)
        del model
    return paths


def prepare_int8(fp32: Path, cache: Path) -> Path:
    """The int8 file ``lvg export --int8`` writes from ``fp32`` (64 calibration sentences of ``lvg data synth``
    scenes made once in the cache), for the ``ov`` int8 worker; made once."""
    return int8_file(fp32, fp32.with_name(fp32.stem + ".int8.onnx"), calibration_data(cache))


#: Calibration scenes for the int8 files (a ``lvg data synth`` folder made once in the cache).
CALIB_IMAGES = 40
#: Calibration sentences (lvg export --int8's default).
CALIB_SAMPLES = 64


def calibration_data(cache: Path) -> Path:
    """Real synth scenes and sentences to calibrate int8 files on, made once in ``cache``."""
    calib = cache / "calib-synth"
    if not (calib / "synth.json").is_file():
        subprocess.run([sys.executable, "-m", "lvg.cli", "data", "synth", "--out", str(calib), "--images",
                        str(CALIB_IMAGES), "--seed", "7", "--workers", "1", "--force"], check=True)
    return calib


def int8_file(src: Path, dst: Path, calib: Path) -> Path:
    """``src`` quantised by ``lvg export --int8``'s own code (64 calibration sentences of ``calib``); cached."""
    if dst.is_file():
        return dst
    from lvg.core.model_file import ModelFile
    from lvg.export.int8 import quantize_int8
    from lvg.train.calibration import calibration_sets

    calib_set, check_set, record = calibration_sets(str(calib), ModelFile.open(src), samples=CALIB_SAMPLES)
    # No agreement floor here: the benchmark reports agreement itself, for random lvg-b weights too.
    report = quantize_int8(src, dst, calib_set, check=check_set, calibration_info=record, min_agreement=0.0)
    print(f"[bench] {dst.name}: {report.quantised} products int8, check agreement {report.mask_agreement:.4f}",
          flush=True)
    return dst




def _export_encoder(model, path: Path, *, fp16: bool) -> None:
    import warnings

    import onnx
    import torch

    cfg = model.cfg
    wrapper = _EncoderOnly.make(model)
    length = _encoder_text_len(cfg)
    s = cfg.encoder.img_size
    args = (torch.zeros(2, 3, s, s), torch.zeros(2, length, dtype=torch.long), torch.ones(2, length, dtype=torch.bool))
    tmp = path.with_name(f".{path.name}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper, args, str(tmp), dynamo=False, opset_version=20,
            input_names=["image", "text_ids", "text_mask"], output_names=["tokens"],
            dynamic_axes={n: {0: "batch"} for n in ("image", "text_ids", "text_mask", "tokens")},
            do_constant_folding=True,
        )
    if fp16:
        from lvg.export.fp16 import convert_to_fp16

        onnx.save(convert_to_fp16(onnx.load(str(tmp))), str(tmp))
    os.replace(tmp, path)


