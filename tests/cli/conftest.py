"""Fixtures of the CLI tests: the training area's small synthetic dataset (for ``lvg eval``)."""

from __future__ import annotations

from tests.train.conftest import synth_dataset

__all__ = ["synth_dataset"]
