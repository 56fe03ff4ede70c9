"""benchmarks/bench_stream.py: a smoke run on the micro model (no timing assertions)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_stream import make_frames, run  # noqa: E402


def test_bench_stream_smoke(micro, tmp_path):
    frames = make_frames(tmp_path, 3)
    result = run(frames, str(micro.onnx), "the man on the left", rounds=2)
    assert result["frames"] == 3 and result["frame_size"] == [640, 480]
    assert len(result["predict_loop_ms_per_frame"]) == len(result["stream_ms_per_frame"]) == 2
    assert result["ratio_stream_over_loop"] > 0
