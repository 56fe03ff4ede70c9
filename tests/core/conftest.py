"""Fixtures for the runtime tests: a small sentencepiece model trained once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvg.core.tokenizer import Tokenizer, train_sentencepiece
from tests.helpers.artifacts import CORPUS


@pytest.fixture(scope="session")
def spm_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("spm") / "tiny.spm"
    return train_sentencepiece(CORPUS * 3, out, vocab_size=200, seed=0)


@pytest.fixture(scope="session")
def tokenizer(spm_path: Path) -> Tokenizer:
    return Tokenizer.from_file(spm_path)
