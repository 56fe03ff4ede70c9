"""The matmul probes lvg bench divides by: one per precision, each a plausible rate where its engine exists."""

from __future__ import annotations

import pytest

from lvg.runtime.roofline import matmul_rate

SMALL = (128, 96, 192)


def test_fp32_probe_runs_everywhere():
    rate = matmul_rate("fp32", threads=1, repeats=2, shape=SMALL)
    assert rate is not None and rate.engine == "numpy" and rate.gflops_per_s > 0.1 and rate.shape == SMALL
    assert matmul_rate("fp8", shape=SMALL) is None


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_openvino_probes(precision):
    pytest.importorskip("openvino")
    rate = matmul_rate(precision, threads=1, repeats=2, shape=SMALL)
    assert rate is not None and (rate.precision, rate.engine) == (precision, "openvino") and rate.gflops_per_s > 0.1
