"""Fixtures for the runtime tests: a small sentencepiece model trained once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvg.runtime.tokenizer import Tokenizer, train_sentencepiece

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


@pytest.fixture(scope="session")
def spm_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("spm") / "tiny.spm"
    return train_sentencepiece(CORPUS * 3, out, vocab_size=200, seed=0)


@pytest.fixture(scope="session")
def tokenizer(spm_path: Path) -> Tokenizer:
    return Tokenizer.from_file(spm_path)
