"""Worker processes started by the training tests (not a test module).

    python ddp_worker.py signal OUT [WORKERS] train "forever" on fake data (with WORKERS data-loading
                                             processes); the test sends a signal
    torchrun --nproc_per_node 2 ddp_worker.py ddp BASE [DATA_DIR INIT]
                                             a few DDP steps; every rank writes its own record to BASE
                                             (never into the run directory, which only rank 0 may write);
                                             with DATA_DIR, starts from checkpoint INIT but reads text with
                                             the data's own tokenizer (a TokenizerMismatchWarning)

Started with the repository root on ``PYTHONPATH`` (:func:`worker_env`), so that it imports ``tests.helpers``.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

from lvg.train.config import TrainConfig
from lvg.train.run_data import TrainData
from lvg.train.trainer import train
from tests.helpers.train_fakes import FakeGrounding

#: This script, for subprocess command lines.
SCRIPT = Path(__file__).resolve()


def worker_env(**extra: str) -> dict[str, str]:
    """The environment to start this script in: the repository root on ``PYTHONPATH``, one OpenMP thread."""
    root = str(SCRIPT.parents[2])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, **extra}


def run_signal(out: Path, workers: int = 0) -> None:
    def on_step(step: int, batch: dict) -> None:
        (out / "step-marker").write_text(str(step))

    cfg = TrainConfig(variant="lvg-tiny", steps=1000, batch_size=2, save_every=0, log_every=1, val_split=None,
                      num_workers=workers)
    result = train(cfg, out, data=TrainData(FakeGrounding(6), None, None, None), show_progress=False,
                   on_step=on_step)
    print("RESULT", result.step, result.stopped)


def run_ddp(base: Path, data_dir: str | None, init: str | None) -> None:
    rank = int(os.environ["RANK"])
    seen: list[list[int]] = []

    def on_step(step: int, batch: dict) -> None:
        seen.append([int(i) for i in batch["index"]])

    if data_dir:
        # GRES variant on gREFER data: the no-target head and the attribute-word classifiers (no direction
        # classifier: a module without a loss would stop DDP) train under DDP, and evaluation is sharded.
        cfg = TrainConfig(variant="lvg-tiny-gres", data=data_dir, steps=3, batch_size=2, save_every=0, log_every=1,
                          val_split="val", eval_batch_size=8, seed=5, init_from=init, loss_attribute_words=0.5,
                          tokenizer=str(next(Path(data_dir).glob("*.spm"))))
        data = None
    else:
        cfg = TrainConfig(variant="lvg-tiny-gres", steps=3, batch_size=2, save_every=0, log_every=1, val_split=None,
                          seed=5)
        data = TrainData(FakeGrounding(8), None, None, None)
    # Each rank gets its own run directory: anything a rank other than 0 wrote would show up in its own.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(cfg, base / f"run-rank{rank}", data=data, show_progress=False, on_step=on_step)
    from safetensors.torch import save_file

    params = {k: v.detach().contiguous().cpu() for k, v in result.model.state_dict().items()}
    save_file(params, str(base / f"params-rank{rank}.safetensors"))
    record = {"rank": rank, "seen": seen, "step": result.step, "metrics": result.metrics,
              "warnings": [type(w.message).__name__ for w in caught]}
    (base / f"record-rank{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "signal":
        run_signal(Path(sys.argv[2]), *(int(a) for a in sys.argv[3:4]))
    elif mode == "ddp":
        run_ddp(Path(sys.argv[2]), *(sys.argv[3:5] if len(sys.argv) > 3 else (None, None)))
    else:
        raise SystemExit(f"unknown mode {mode}")
