"""The run directory around the steps (lvg/train/run_dir.py): after a kill and a resume, log.jsonl holds each step
once. The kill is a real SIGKILL of a real training process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lvg.train.run_dir import read_log
from lvg.train.trainer import train
from tests.helpers import ddp_worker
from tests.helpers.train_fakes import fake_data

_KILLED_RUN = """
import os, signal, sys
from pathlib import Path
from lvg.train.trainer import train
from tests.helpers.train_fakes import fake_data
from tests.train.test_run_dir import config

def on_step(step, batch):
    if step == 5:  # steps 1-4 are logged, the last checkpoint is step 3's
        os.kill(os.getpid(), signal.SIGKILL)

train(config(), Path(sys.argv[1]), data=fake_data(), show_progress=False, on_step=on_step)
"""


def config():
    from lvg.train.config import TrainConfig

    return TrainConfig(variant="lvg-tiny", steps=6, batch_size=2, warmup_steps=1, log_every=1, save_every=3,
                       val_split=None, lr=1e-3, seed=3)


def test_log_holds_each_step_once_after_a_kill_and_a_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", _KILLED_RUN, str(out)], capture_output=True, text=True,
                          timeout=300, env=ddp_worker.worker_env())
    assert proc.returncode == -9, proc.stderr
    assert [r["step"] for r in read_log(out) if r["kind"] == "train"] == [1, 2, 3, 4]

    done = train(config(), out, data=fake_data(), show_progress=False, resume=True)
    assert done.step == 6
    records = read_log(out)
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    events = [(r["event"], r["step"]) for r in records if r["kind"] == "event"]
    assert events == [("start", 0), ("resume", 3), ("done", 6)]
