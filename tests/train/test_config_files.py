"""benchmarks/configs/*.toml: every shipped training config loads, names a known variant and trains something."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvg.config import list_variants
from lvg.train.config import TrainConfig

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "benchmarks" / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_loads(path: Path) -> None:
    cfg = TrainConfig.from_file(path)
    assert cfg.variant in list_variants()
    assert cfg.steps > 0 or cfg.epochs > 0
    assert cfg.data.startswith("data/")  # relative to the folder the README's commands run from


def test_the_finetune_config_groups_sentences_by_image() -> None:
    cfg = TrainConfig.from_file(next(p for p in CONFIGS if p.stem == "lvg-s-finetune"))
    assert cfg.sentences_per_image == 3 and cfg.batch_size % cfg.sentences_per_image == 0 and not cfg.curriculum
