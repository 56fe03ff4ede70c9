"""Suite-wide settings (small thread pools: CI has 2 cores) and the session fixtures several areas share."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")
# precision="auto" would pick bf16 on OpenVINO where it is installed on a bf16 CPU: the suite's default loads stay
# on ONNX Runtime fp32 (the reference the tests compare with); tests/runtime/test_precision.py unsets this.
os.environ.setdefault("LVG_PRECISION", "fp32")


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory):
    """lvg-tiny / lvg-tiny-gres checkpoints and their fp32 / fp16 ONNX exports (:mod:`tests.helpers.artifacts`)."""
    from tests.helpers.artifacts import get_artifacts

    return get_artifacts(tmp_path_factory)


@pytest.fixture(scope="session")
def micro(tmp_path_factory: pytest.TempPathFactory):
    """lvg-tiny at 96 x 96 for the many-request tests (:mod:`tests.helpers.micro_model`)."""
    from tests.helpers.micro_model import get_micro

    return get_micro(tmp_path_factory)
