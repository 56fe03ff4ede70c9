"""Pretraining the encoder on synthetic scenes: this project's analogue of BEiT-3's pretraining.

A Latent-VG model stands on a BEiT-3 encoder that already knows what is in a picture and what words mean
when it starts learning to ground. Trained from scratch on ``lvg data synth`` scenes, the encoder learns
both at once from masks alone. This stage teaches them first, from targets the generator knows exactly:

- per patch (the ``g x g`` grid of the vision tokens): the shape, colour, size and texture of the object
  covering most of it, and that object's centre (:mod:`lvg.train.patch_labels`);
- per text token, with the image in view: the word pieces of an expression about the scene, a fraction of
  which were replaced by ``<unk>`` (masked-token prediction, grounded: "the [?] circle" is answered by
  looking at the circle).

The heads (:class:`PretrainNet`) are thrown away afterwards; the grounding runs start from the encoder
(``init_from`` with ``init_parts = "backbone"``). Shapes: ``image (B, 3, S, S)``, ``text_ids`` and
``mlm_target (B, L)`` (-100 where nothing is predicted), ``patch_attributes (B, g*g, 4)`` int64 (0 =
background, else 1 + the value's index), ``patch_centre (B, g*g, 2)`` float32, ``patch_object (B, g*g)``
bool.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import ImageOps
from torch import Tensor, nn

from lvg.config import ModelConfig
from lvg.core.preprocess import preprocess_image
from lvg.core.tokenizer import UNK_ID, Tokenizer
from lvg.train.data import ReferSource
from lvg.train.patch_labels import ATTRIBUTES, IGNORE, PatchLabels
from lvg.train.sampling import Planned

__all__ = ["PretrainDataset", "PretrainNet", "pretrain_loss"]


class PretrainDataset(torch.utils.data.Dataset):
    """Items for :func:`pretrain_loss`, keyed by the :class:`~lvg.train.sampling.Planned` items of a group
    sampler (one sentence per image: the sentence's own target does not matter here).

    ``instances``: the split's COCO ``instances.json`` (every object's mask and attributes).
    """

    def __init__(self, source: ReferSource, instances: Path, *, model_cfg: ModelConfig, tokenizer: Tokenizer,
                 seed: int, mlm_probability: float) -> None:
        self.source, self.cfg, self.tokenizer = source, model_cfg, tokenizer
        self.seed, self.mlm_probability = int(seed), float(mlm_probability)
        self.labels = PatchLabels(instances, model_cfg)

    def __len__(self) -> int:
        return len(self.source.samples)

    def __getitem__(self, key: Planned) -> dict[str, Tensor]:
        sample = self.source.samples[key.sample_index]
        image = self.source.load_image(sample)
        if key.flip:
            image = ImageOps.mirror(image)
        pixels, lb = preprocess_image(image, self.cfg.preprocess)  # (3, S, S)
        attrs, centre, is_obj = self.labels(sample.image_id, lb, key.flip)
        ids, mask = self.tokenizer.encode(sample.sentences[key.sentence_index], self.cfg.preprocess.max_text_len)
        rng = np.random.default_rng([self.seed, 0x3A5C, key.key])
        words = mask.copy()
        words[0] = False  # bos
        words[int(mask.sum()) - 1] = False  # eos
        chosen = words & (rng.random(ids.shape) < self.mlm_probability)
        if words.any() and not chosen.any():
            chosen[int(rng.choice(np.flatnonzero(words)))] = True  # every sentence teaches something
        target = np.where(chosen, ids, IGNORE)
        ids = np.where(chosen, UNK_ID, ids)
        return {
            "image": torch.from_numpy(pixels),
            "text_ids": torch.from_numpy(ids.astype(np.int64)),
            "text_mask": torch.from_numpy(mask),
            "mlm_target": torch.from_numpy(target.astype(np.int64)),
            "patch_attributes": torch.from_numpy(attrs),
            "patch_centre": torch.from_numpy(centre),
            "patch_object": torch.from_numpy(is_obj),
        }


class PretrainNet(nn.Module):
    """The encoder of a Latent-VG model (shared, not copied) with the pretraining heads on top:
    patch-attribute and centre classifier over the vision tokens, masked-token classifier over the text.

    ``forward(image, text_ids, text_mask)`` returns ``vision (B, n, sum(sizes) + 2)`` and ``words (B, L,
    vocab)`` logits, where ``sizes`` are the attribute vocabularies' sizes plus background.
    """

    #: Where a checkpoint keeps the heads (:func:`lvg.train.state.heads_tensors`).
    checkpoint_prefix = "train/pretrain_heads/"

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        cfg: ModelConfig = model.cfg  # type: ignore[assignment]
        d = cfg.encoder.embed_dim
        self.num_patches = cfg.encoder.num_patches
        self.beit3 = model.beit3
        self.sizes = tuple(len(vocab) + 1 for _, vocab in ATTRIBUTES)
        self.vision = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d), nn.Linear(d, sum(self.sizes) + 2))
        self.text = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d), nn.Linear(d, cfg.encoder.vocab_size))

    def heads(self) -> dict[str, Tensor]:
        """The heads' weights (what a checkpoint keeps besides the model's)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("beit3.")}

    def forward(self, image: Tensor, text_ids: Tensor, text_mask: Tensor) -> dict[str, Tensor]:
        tokens = self.beit3(image, text_ids, text_mask)  # (B, 1 + n + L, d)
        n = self.num_patches
        return {"vision": self.vision(tokens[:, 1:1 + n]), "words": self.text(tokens[:, 1 + n:])}


def pretrain_loss(outputs: dict[str, Tensor], batch: dict[str, Tensor], sizes: tuple[int, ...], *,
                  attributes: float, centre: float, mlm: float) -> dict[str, Tensor]:
    """Loss parts of one pretraining batch (``outputs`` of :class:`PretrainNet`; ``"total"`` is minimised):
    the mean cross-entropy of the four patch attributes, the smooth-L1 error of the predicted object
    centre (sigmoid of two logits) over object patches, and the masked-token cross-entropy."""
    vision, words = outputs["vision"].float(), outputs["words"].float()
    labels = batch["patch_attributes"]
    start, ce = 0, []
    for k, size in enumerate(sizes):
        ce.append(F.cross_entropy(vision[..., start:start + size].reshape(-1, size), labels[..., k].reshape(-1)))
        start += size
    on = batch["patch_object"].to(vision.dtype)  # (B, n)
    err = F.smooth_l1_loss(vision[..., start:start + 2].sigmoid(), batch["patch_centre"], reduction="none").sum(-1)
    target = batch["mlm_target"]
    parts = {
        "attributes": attributes * torch.stack(ce).mean(),
        "centre": centre * (err * on).sum() / on.sum().clamp(min=1),
        "mlm": mlm * F.cross_entropy(words.reshape(-1, words.shape[-1]), target.reshape(-1), ignore_index=IGNORE),
    }
    parts["total"] = parts["attributes"] + parts["centre"] + parts["mlm"]
    return parts
