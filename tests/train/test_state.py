"""Training checkpoints keep their integrity: damage is detected, never trained on, and never rotated over the
last good checkpoint (lvg/train/state.py, lvg/modeling/checkpoint.py). Real files, real training runs, and a
real write failure (a file-size limit on a real process) for the failed save."""

from __future__ import annotations

import json
import math
import resource
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from lvg.core.model_file import ModelFile
from lvg.errors import CheckpointError
from lvg.modeling import build_model, save_checkpoint
from lvg.modeling.checkpoint import load_weights, read_checkpoint_tensors
from lvg.train.config import TrainConfig
from lvg.train.state import LAST, PREV, ResumeWarning, find_resume_checkpoint, read_resume_point
from lvg.train.trainer import train
from tests.helpers.hostile import damage_tensor_data
from tests.helpers.train_fakes import fake_data


def _cfg(**kw) -> TrainConfig:
    base = dict(variant="lvg-tiny", steps=3, batch_size=2, warmup_steps=1, log_every=1, save_every=1, val_split=None,
                lr=1e-3, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def _run(out: Path, **kw):
    return train(_cfg(**kw.pop("cfg", {})), out, data=fake_data(), show_progress=False, **kw)


def _step(path: Path) -> int:
    return json.loads(ModelFile.open(path).metadata["train_state"])["step"]


def _all_finite(path: Path) -> bool:
    return all(torch.isfinite(t).all() for t in read_checkpoint_tensors(path).values() if t.is_floating_point())


def test_damaged_tensor_data_falls_back_to_prev_and_is_never_trained_on(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _run(out, stop_at_step=2)
    assert (_step(out / LAST), _step(out / PREV)) == (2, 1)
    # NaN bytes inside a weight and inside an AdamW moment, the header untouched.
    for tensor in ("text_head.fc1.weight", "train/optim/0/exp_avg_sq"):
        damaged = tmp_path / "damaged.safetensors"
        shutil.copy(out / LAST, damaged)
        damage_tensor_data(damaged, tensor)
        with pytest.raises(CheckpointError, match="damaged") as info:
            read_resume_point(damaged)
        assert tensor in str(info.value) and "\n" not in str(info.value)
    damage_tensor_data(out / LAST, "text_head.fc1.weight")
    with pytest.raises(CheckpointError, match="damaged"):  # --init verifies as resuming does
        load_weights(build_model("lvg-tiny"), out / LAST)
    with pytest.warns(ResumeWarning, match="last.safetensors"):
        point = find_resume_checkpoint(out)
    assert point is not None and point.path == out / PREV
    with pytest.warns(ResumeWarning):
        done = _run(out, resume=True)
    assert done.step == 3
    assert all(math.isfinite(r["loss"]) for r in done.history)
    assert _all_finite(out / LAST) and _all_finite(out / PREV)


def _rewrite(path: Path, change) -> None:
    """Write the checkpoint at ``path`` again through save_checkpoint after ``change(tensors)``: a consistent
    file (its checksums match) whose content is bad."""
    point = read_resume_point(path)
    tensors = dict(point.tensors)
    change(tensors)
    model = build_model("lvg-tiny")
    model.load_state_dict(point.model_state() | {k: v for k, v in tensors.items() if k in model.state_dict()})
    keep = ("train_state", "train_config")
    save_checkpoint(model, path, extra_tensors={k: v for k, v in tensors.items() if k.startswith("train/")},
                    metadata={k: v for k, v in point.model_file.metadata.items() if k in keep})


@pytest.mark.parametrize("tensor", ["text_head.fc1.weight", "train/optim/3/exp_avg"])
def test_non_finite_weights_or_optimizer_state_are_refused_like_corruption(tmp_path: Path, tensor: str) -> None:
    out = tmp_path / "run"
    _run(out, stop_at_step=2)

    def poison(tensors):
        tensors[tensor] = tensors[tensor].clone()
        tensors[tensor].view(-1)[0] = float("nan")

    _rewrite(out / LAST, poison)
    with pytest.raises(CheckpointError, match="not finite"):
        read_resume_point(out / LAST)
    with pytest.warns(ResumeWarning, match="not finite"):
        assert find_resume_checkpoint(out).path == out / PREV


def test_an_invalid_random_state_is_a_checkpoint_error(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _run(out, stop_at_step=2)

    def scramble(tensors):
        tensors["train/rng/torch/0"] = torch.zeros_like(tensors["train/rng/torch/0"])

    _rewrite(out / LAST, scramble)
    with pytest.raises(CheckpointError, match="random state"):
        read_resume_point(out / LAST)
    shutil.copy(out / LAST, out / PREV)  # no good checkpoint to fall back to: a clear refusal, not a RuntimeError
    with pytest.warns(ResumeWarning), pytest.raises(CheckpointError, match="no usable checkpoint"):
        _run(out, resume=True)


def _limited(max_bytes: int):
    """preexec_fn: files this process writes may not grow beyond ``max_bytes`` (a full disk, for that process)."""
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return apply


def _lvg(*args: str, limit: int | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lvg.cli", *args], capture_output=True, text=True, timeout=300,
                          preexec_fn=_limited(limit) if limit else None)


def test_a_failed_save_after_a_fall_back_keeps_the_good_checkpoint(tmp_path: Path, synth_dataset) -> None:
    out = tmp_path / "run"
    common = ["--device", "cpu", "--val-split", ""]
    first = _lvg("train", "--variant", "lvg-tiny", "--data", str(synth_dataset.out_dir), "--out", str(out),
                 "--steps", "4", "--batch-size", "2", "--save-every", "1", "--stop-at", "2", *common)
    assert first.returncode == 0, first.stderr
    good = (out / PREV).read_bytes()
    assert _step(out / PREV) == 1 and (out / LAST).stat().st_size > 2_000_000
    cut = (out / LAST).read_bytes()
    (out / LAST).write_bytes(cut[: len(cut) // 2])  # last is unusable: resuming falls back to prev

    # The next save cannot be written (no file of the run may grow past 1 MB): a one-line CheckpointError,
    # and the good checkpoint is still there.
    failed = _lvg("train", "--out", str(out), "--resume", "--stop-at", "3", *common, limit=1_000_000)
    assert failed.returncode == 2, failed.stderr
    assert "Traceback" not in failed.stderr and "internal error" not in failed.stderr
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "checkpoint" in errors[0], failed.stderr
    assert (out / PREV).read_bytes() == good
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResumeWarning)
        assert find_resume_checkpoint(out).state["step"] == 1

    # With room again the run resumes from it and finishes.
    done = _lvg("train", "--out", str(out), "--resume", "--json", *common)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["step"] == 4
