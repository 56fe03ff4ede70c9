"""Bounds a model file must respect before anything is built from it.

A model file is read by its metadata first (:mod:`lvg.core.headers`), and what that metadata declares decides
how much memory the next step allocates: the config sizes the model a checkpoint is loaded into, the
preprocessing canvas and the text length; a checkpoint's tensor table sizes the tensors. Both come from the
file, so both are checked here, torch-free, before a model is built or a session created:

- :func:`check_config`: every size, rate and threshold of a :class:`~lvg.config.ModelConfig` lies in a sane
  range (:data:`BOUNDS`), the model it describes has at most :data:`MAX_PARAMETERS` parameters, and the
  tokenizer it names is a plain file name;
- :func:`check_tensors`: a checkpoint's tensors are those of its config: the BEiT-3 tensors whose names
  SPEC section 3.1 fixes have the config's shapes, there are ``depth`` encoder layers, and the tensors hold
  at least half the parameters the config's model has (:func:`estimated_parameters`, a lower bound). A
  file therefore never makes lvg build a model of more than twice its own size;
- :func:`parse_json_object`: JSON read from a file, with nesting and syntax errors as one typed error.

Every failure is the ``error`` class the caller names (:class:`~lvg.errors.ArtifactError` for model files),
with a one-line message naming the file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from lvg.config import ModelConfig
from lvg.errors import ArtifactError, LVGError

__all__ = ["BOUNDS", "MAX_PARAMETERS", "check_config", "check_file_name", "check_tensors", "estimated_parameters",
           "parse_json_object"]

#: Inclusive integer ranges of the config fields a file may set (``section.field``).
BOUNDS: dict[str, tuple[int, int]] = {
    "encoder.img_size": (8, 4096),
    "encoder.patch_size": (4, 512),
    "encoder.in_chans": (1, 16),
    "encoder.embed_dim": (1, 8192),
    "encoder.depth": (1, 128),
    "encoder.num_heads": (1, 256),
    "encoder.ffn_dim": (1, 65536),
    "encoder.vocab_size": (4, 2_000_000),
    "encoder.max_text_positions": (2, 65536),
    "latent.num_concepts": (1, 16384),
    "latent.topk": (1, 1_000_000),
    "head.neck_dim": (1, 16384),
    "head.fuse_kernel": (1, 31),
    "head.embed_dim": (1, 16384),
    "head.mlp_hidden": (1, 65536),
    "head.empty_heads": (1, 256),
    "preprocess.max_text_len": (2, 8192),
}
#: Largest model a file may describe (BEiT-3 large with every Latent-VG part is about 0.7e9).
MAX_PARAMETERS = 3_000_000_000
#: Most vision patches (a 4096 canvas at patch 16 has 65,536).
MAX_PATCHES = 65_536
#: Most latent expressions, and most latent tokens over all of them.
MAX_EXPRESSIONS, MAX_LATENT_TOKENS = 64, 4096


def parse_json_object(text: str, what: str, error: type[LVGError] = ArtifactError) -> dict[str, Any]:
    """``text`` parsed as a JSON object; malformed or absurdly nested JSON is ``error(what: ...)``."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{what} is not valid JSON ({exc.msg} at character {exc.pos})") from None
    except RecursionError:
        raise error(f"{what} is JSON nested too deeply to be a config") from None
    if not isinstance(data, dict):
        raise error(f"{what} must be a JSON object, not {type(data).__name__}")
    return data


def check_file_name(name: str, what: str, error: type[LVGError] = ArtifactError) -> str:
    """``name`` if it is a plain file name (no folder, no ``..``, no NUL); metadata may name a file beside the
    model or the data this way, never one elsewhere."""
    if (not name or len(name) > 255 or name in (".", "..") or "/" in name or "\\" in name or "\0" in name
            or name != name.strip()):
        raise error(f"{what} {name!r} is not a plain file name (it may only name a file in its own folder)")
    return name


def _field_values(cfg: ModelConfig) -> dict[str, Any]:
    return {f"{section}.{key}": value for section, fields in cfg.to_dict().items() if isinstance(fields, dict)
            for key, value in fields.items()}


def _finite_in(value: float, lo: float, hi: float, *, open_hi: bool = False, open_lo: bool = False) -> bool:
    if not math.isfinite(value):
        return False
    return (value > lo if open_lo else value >= lo) and (value < hi if open_hi else value <= hi)


def _problems(cfg: ModelConfig) -> list[str]:
    values = _field_values(cfg)
    problems = [f"{key} {values[key]} is outside {lo}..{hi}" for key, (lo, hi) in BOUNDS.items()
                if not lo <= values[key] <= hi]
    enc, lat, head, pre = cfg.encoder, cfg.latent, cfg.head, cfg.preprocess
    if problems:
        return problems  # the derived checks below assume sane sizes
    if enc.num_patches > MAX_PATCHES:
        problems.append(f"encoder.img_size {enc.img_size} at patch_size {enc.patch_size} gives {enc.num_patches} "
                        f"patches (at most {MAX_PATCHES:,})")
    if len(lat.lengths) > MAX_EXPRESSIONS or sum(lat.lengths) + 2 * len(lat.lengths) > MAX_LATENT_TOKENS:
        problems.append(f"latent.lengths {lat.lengths[:8]}... describe more than {MAX_LATENT_TOKENS} latent tokens")
    if len(head.pyramid_layers) > 32:
        problems.append(f"head.pyramid_layers has {len(head.pyramid_layers)} levels (at most 32)")
    rates = {"encoder.dropout": enc.dropout, "encoder.drop_path_rate": enc.drop_path_rate,
             **{f"latent.dropout[{i}]": p for i, p in enumerate(lat.dropout[:MAX_EXPRESSIONS])}}
    problems += [f"{k} {v} is not in [0, 1)" for k, v in rates.items() if not _finite_in(v, 0.0, 1.0, open_hi=True)]
    if not _finite_in(pre.mask_threshold, 0.0, 1.0, open_hi=True):
        problems.append(f"preprocess.mask_threshold {pre.mask_threshold} is not in [0, 1)")
    if not _finite_in(pre.no_target_threshold, 0.0, 1.0):
        problems.append(f"preprocess.no_target_threshold {pre.no_target_threshold} is not in [0, 1]")
    if not all(math.isfinite(m) for m in pre.mean):
        problems.append(f"preprocess.mean {pre.mean} is not finite")
    if not all(_finite_in(s, 0.0, 1e6, open_lo=True) for s in pre.std):
        problems.append(f"preprocess.std {pre.std} must be positive and finite")
    for key, value in (("encoder.layernorm_eps", enc.layernorm_eps), ("latent.gumbel_tau", lat.gumbel_tau)):
        if not _finite_in(value, 0.0, 1e6, open_lo=True):
            problems.append(f"{key} {value} must be positive and finite")
    params = estimated_parameters(cfg)
    if params > MAX_PARAMETERS:
        problems.append(f"it describes a model of {params / 1e9:.1f}e9 parameters (at most {MAX_PARAMETERS / 1e9:g}e9)")
    return problems


def check_config(cfg: ModelConfig, where: str, error: type[LVGError] = ArtifactError) -> ModelConfig:
    """``cfg`` if every size and setting lies in a sane range, else ``error`` naming the first few problems.

    ``where`` names the file; the tokenizer the config names must be a plain file name (it is looked up beside
    the data or the model, never elsewhere).
    """
    problems = _problems(cfg)
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise error(f"{where}: stored config is out of bounds: {shown}")
    check_file_name(cfg.preprocess.tokenizer, f"{where}: the config's tokenizer", error)
    return cfg


def estimated_parameters(cfg: ModelConfig) -> int:
    """A lower bound of the parameter count of the model ``cfg`` describes, within a few percent of it.

    Counted exactly for the BEiT-3 encoder (its layout is fixed by SPEC section 3.1) and for the largest parts
    of the rest (VCI concepts, class-token MLPs, pixel-decoder convolutions, the GRES head's attention);
    norms, biases of the decoder and the latent initializer's small matrices are left out.
    """
    enc, lat, head = cfg.encoder, cfg.latent, cfg.head
    d, f = enc.embed_dim, enc.ffn_dim
    per_expert = 4 * (d * d + d) + 4 * d + (f * d + f) + 2 * f + (d * f + d) + 2 * d
    encoder = (enc.vocab_size * d + d + d * enc.in_chans * enc.patch_size**2 + d
               + (enc.num_patches + 3) * d + enc.max_text_positions * d + 4 * d + enc.depth * 2 * per_expert)
    mlp = d * head.mlp_hidden + head.mlp_hidden + head.mlp_hidden * head.embed_dim + head.embed_dim
    heads = mlp * (1 + lat.num_expressions)
    if lat.enabled:
        heads += lat.num_expressions * d
        if lat.concept_injector:
            heads += (enc.depth - 1) * lat.num_concepts * d
    c, levels = head.neck_dim, len(head.pyramid_layers)
    steps = max(0, int(math.log2(max(enc.patch_size // 4, 1))))
    heads += levels * (d * c + c) + head.fuse_kernel**2 * levels * c * c + steps * 4 * c * c + c * head.embed_dim
    if head.gres:
        heads += 4 * d * d
    return int(encoder + heads)


#: The patch kernel and the vision position table (multiway A: 3 + grid^2 rows): the anchors whose shapes follow
#: the patch size and input size, resized when weights move to another grid.
PATCH_KERNEL = "beit3.vision_embed.proj.weight"
VISION_POSITIONS = "beit3.encoder.embed_positions.A.weight"


#: Anchor tensors (SPEC section 3.1's fixed BEiT-3 names) and the shape the config gives each.
def _anchor_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    enc = cfg.encoder
    d = enc.embed_dim
    return {
        "beit3.text_embed.weight": (enc.vocab_size, d),
        PATCH_KERNEL: (d, enc.in_chans, enc.patch_size, enc.patch_size),
        VISION_POSITIONS: (enc.vision_positions, d),
        "beit3.encoder.embed_positions.B.weight": (enc.max_text_positions, d),
        "beit3.encoder.layers.0.ffn.A.fc1.weight": (enc.ffn_dim, d),
    }


_LAYER_PREFIX = "beit3.encoder.layers."


def check_tensors(shapes: Mapping[str, tuple[int, ...]], cfg: ModelConfig, where: str,
                  error: type[LVGError] = ArtifactError) -> None:
    """Refuse a checkpoint whose tensors (name -> shape, ``train/`` state included) are not its config's
    model: the anchor tensors' shapes, the number of encoder layers and the parameter count are compared
    before anything is allocated."""
    def refuse(detail: str) -> None:
        raise error(f"{where} does not fit its config ({cfg.name!r}): {detail}")

    for name, want in _anchor_shapes(cfg).items():
        got = shapes.get(name)
        if got is None:
            refuse(f"it has no tensor {name}")
        if tuple(got) != want:
            refuse(f"{name} is {tuple(got)} but the config needs {want}")
    layers = {name[len(_LAYER_PREFIX):].split(".", 1)[0] for name in shapes if name.startswith(_LAYER_PREFIX)}
    if layers != {str(i) for i in range(cfg.encoder.depth)}:
        refuse(f"it holds {len(layers)} encoder layers, the config {cfg.encoder.depth}")
    # Half the estimate leaves the exact comparison, tensor by tensor and with its precise message, to the
    # loader (lvg.modeling.checkpoint), while a file still never makes lvg build a model over twice its size.
    held = sum(math.prod(s) for name, s in shapes.items() if not name.startswith("train/"))
    need = estimated_parameters(cfg)
    if 2 * held < need:
        refuse(f"its tensors hold {held:,} values, the config's model has at least {need:,} parameters")
