"""Shared fixtures of the training-area tests: one small synthetic dataset per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvg.train.synth import SynthSummary, generate


@pytest.fixture(scope="session")
def synth_dataset(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    """A 10-image synthetic dataset (train / val split 0.7 / 0.3), written once per test session."""
    out: Path = tmp_path_factory.mktemp("synth")
    # Small images keep decoding and preprocessing fast.
    return generate(out, images=10, seed=7, size_range=(96, 192), splits=(("train", 0.7), ("val", 0.3)))
