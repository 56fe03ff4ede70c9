"""Fixtures for the export tests (the artifacts are shared with tests/runtime through artifact_factory)."""

from __future__ import annotations

import pytest

from tests.export.artifact_factory import Artifacts, get_artifacts


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    return get_artifacts(tmp_path_factory)
