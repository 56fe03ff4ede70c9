"""Test helpers for the training tests: a fake GroundingDataset of random tensors (no files needed).

Used by tests/train/test_trainer.py and by :mod:`tests.helpers.ddp_worker`, the script that test and
test_ddp.py start. Items follow :class:`lvg.train.torch_data.GroundingDataset`'s format.
"""

from __future__ import annotations

import torch


class FakeGrounding(torch.utils.data.Dataset):
    """``n`` random samples; item = f(seed, epoch, index), so any process or resume sees the same data."""

    def __init__(self, n: int, size: int = 480, text_len: int = 16, seed: int = 0) -> None:
        self.n, self.size, self.text_len, self.seed, self.epoch = n, size, text_len, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch * 1_009 + i)
        q = self.size // 4
        target = torch.zeros(q, q)
        y, x = (int(v) for v in torch.randint(0, q // 2, (2,), generator=g))
        target[y : y + q // 3, x : x + q // 3] = 1.0
        image = torch.randn(3, self.size, self.size, generator=g) * 0.1
        image[:, 4 * y : 4 * (y + q // 3), 4 * x : 4 * (x + q // 3)] += 1.0  # the target is visible
        return {
            "image": image,
            "text_ids": torch.randint(3, 500, (self.text_len,), generator=g),
            "text_mask": torch.arange(self.text_len) < 6,
            "target": target,
            "no_target": torch.tensor(float(i % 4 == 3)),
            "index": i,
        }


def fake_data(n: int = 6):
    from lvg.train.run_data import TrainData

    return TrainData(train=FakeGrounding(n), source=None, tokenizer=None, val_split=None)
