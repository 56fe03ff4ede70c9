"""Fixtures of the export tests: the training area's small synthetic dataset (training words for export)."""

from __future__ import annotations

from tests.train.conftest import synth_dataset

__all__ = ["synth_dataset"]
