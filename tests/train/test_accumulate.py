"""Gradient accumulation gives the larger batch's gradient, and a global batch is kept whatever the world size."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lvg.errors import ConfigError
from lvg.modeling import build_model
from lvg.train.accumulate import micro_batches
from lvg.train.config import TrainConfig
from lvg.train.optim import build_optimizer
from lvg.train.trainer import Trainer


def _batch(cfg, n: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    size, length, side = cfg.encoder.img_size, cfg.preprocess.max_text_len, cfg.encoder.img_size // 4
    mask = torch.arange(length)[None] < torch.tensor([length, 5, 9, 3, 7, 4][:n])[:, None]
    ids = torch.randint(4, cfg.encoder.vocab_size, (n, length), generator=g).masked_fill(~mask, 1)
    target = (torch.rand(n, side, side, generator=g) > 0.7).float()
    return {"image": torch.randn(n, 3, size, size, generator=g), "text_ids": ids, "text_mask": mask,
            "target": target, "no_target": torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 0.0][:n])}


def _step(tmp_path: Path, micro_batch: int, batch: dict) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    # No contrastive term: its negatives come from the piece, so only the per-sample-mean losses are exact.
    cfg = TrainConfig(variant="lvg-tiny-gres", batch_size=6, micro_batch=micro_batch, loss_contrastive=0.0,
                      steps=10, lr=1e-3)
    trainer = Trainer(cfg, tmp_path, device="cpu")
    torch.manual_seed(0)
    trainer.device, trainer.model = torch.device("cpu"), build_model(cfg.variant)
    trainer.ddp_model, trainer.opt = trainer.model, build_optimizer(trainer.model, cfg)
    trainer.amp, trainer.scaler = "off", torch.amp.GradScaler("cuda", enabled=False)
    trainer.step, trainer.total = 0, cfg.steps
    trainer.model.eval()  # no dropout, no Gumbel noise: the same function of the inputs in every piece
    parts = trainer.train_step(batch)
    return parts, {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


def test_accumulated_pieces_give_the_whole_batch_gradient(tmp_path: Path):
    batch = _batch(build_model("lvg-tiny-gres").cfg, 6)
    whole_parts, whole = _step(tmp_path / "a", 0, batch)
    for micro in (2, 4):  # three pieces of 2; two of 3 for "at most 4"
        parts, grads = _step(tmp_path / f"m{micro}", micro, batch)
        assert set(grads) == set(whole)
        for name, g in grads.items():
            torch.testing.assert_close(g, whole[name], rtol=1e-4, atol=1e-6, msg=name)
        for key in ("total", "bce", "dice"):
            assert parts[key] == pytest.approx(whole_parts[key], rel=1e-5)


def test_micro_batches_split_tensors_and_lists_into_shares():
    batch = {"image": torch.arange(5), "ids": list("abcde"), "scalar": 3}
    pieces = micro_batches(batch, 2)
    assert [p["image"].tolist() for p, _ in pieces] == [[0, 1], [2], [3, 4]]  # 3 near-equal pieces of at most 2
    assert ["".join(p["ids"]) for p, _ in pieces] == ["ab", "c", "de"]
    assert [share for _, share in pieces] == [0.4, 0.2, 0.4]
    assert all(p["scalar"] == 3 for p, _ in pieces)
    assert micro_batches(batch, 0) == [(batch, 1.0)] and micro_batches(batch, 8) == [(batch, 1.0)]


@pytest.mark.parametrize("world, per_process, passes", [(1, 64, 4), (2, 32, 2), (4, 16, 1), (8, 8, 1)])
def test_a_global_batch_of_64_is_kept_on_any_number_of_gpus(world: int, per_process: int, passes: int):
    cfg = TrainConfig(global_batch=64, micro_batch=16).for_world(world)
    assert cfg.batch_size == per_process and cfg.accumulation() == passes
    assert cfg.batch_size * world == 64


def test_a_global_batch_that_does_not_divide_is_refused():
    with pytest.raises(ConfigError, match="does not divide among 3"):
        TrainConfig(global_batch=64).for_world(3)
    assert TrainConfig(batch_size=5).for_world(3).batch_size == 5  # no global batch: per process as given
