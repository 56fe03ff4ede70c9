from __future__ import annotations

import pytest
import torch

from lvg.config import ModelConfig


def make_inputs(cfg: ModelConfig, batch: int = 2, lengths: tuple[int, ...] | None = None, seed: int = 0):
    """Random normalised images and token ids ``bos w.. eos pad..`` with the given real lengths."""
    g = torch.Generator().manual_seed(seed)
    size, text_len = cfg.encoder.img_size, cfg.preprocess.max_text_len
    image = torch.randn(batch, 3, size, size, generator=g)
    if lengths is None:
        lengths = tuple(int(x) for x in torch.randint(3, text_len + 1, (batch,), generator=g))
    ids = torch.randint(4, cfg.encoder.vocab_size, (batch, text_len), generator=g)
    mask = torch.arange(text_len)[None] < torch.tensor(lengths)[:, None]  # (B, L)
    ids[:, 0] = 0
    for i, n in enumerate(lengths):
        ids[i, n - 1] = 2
    ids = ids.masked_fill(~mask, 1)
    return image, ids, mask


@pytest.fixture
def inputs():
    return make_inputs
