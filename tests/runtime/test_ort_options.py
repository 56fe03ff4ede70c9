"""ONNX Runtime session settings of the runtime (lvg.runtime.backends.ort_backend.session_options)."""

from __future__ import annotations

import os
from pathlib import Path

import onnxruntime as ort
import pytest

from lvg.runtime.backends.ort_backend import physical_cores, session_options


def _cores_from_sysfs() -> int:
    seen = set()
    for cpu in os.sched_getaffinity(0):
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        seen.add(((topo / "physical_package_id").read_text(), (topo / "core_id").read_text()))
    return len(seen)


def test_physical_cores_counts_each_core_once() -> None:
    n = physical_cores()
    assert 1 <= n <= len(os.sched_getaffinity(0))
    assert n == _cores_from_sysfs()


def test_session_options_default_to_one_thread_per_physical_core_and_full_optimisation() -> None:
    opts = session_options(ort)
    assert opts.intra_op_num_threads == physical_cores()
    assert opts.inter_op_num_threads == 1
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert opts.log_severity_level == 3


def test_session_options_take_an_explicit_thread_count() -> None:
    assert session_options(ort, threads=3).intra_op_num_threads == 3


def test_passive_wait_policy_stops_intra_op_spinning(monkeypatch) -> None:
    """OMP_WAIT_POLICY=PASSIVE (what the lvg command sets) means: threads sleep between operators instead of
    polling, which on a CPU shared with other processes keeps them from fighting those for the cores."""
    key = "session.intra_op.allow_spinning"
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    assert session_options(ort).get_session_config_entry(key) == "0"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    with pytest.raises(RuntimeError, match="does not have configuration"):  # ONNX Runtime's default: spin
        session_options(ort).get_session_config_entry(key)
