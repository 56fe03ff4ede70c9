"""DDP under torchrun on CPU (gloo): sharded data, identical parameters on all ranks, rank-0-only files,
evaluation sharded across ranks and gathered."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lvg.core.artifact import tokenizer_metadata
from lvg.core.tokenizer import Tokenizer, train_sentencepiece
from lvg.modeling import build_model, save_checkpoint
from lvg.train.data import open_dataset
from tests.helpers import ddp_worker
from tests.helpers.artifacts import CORPUS


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_process_ddp_training_and_evaluation(tmp_path: Path, synth_dataset) -> None:
    base = tmp_path / "ddp"
    base.mkdir()
    # The run starts from a checkpoint trained with another tokenizer than the one it is told to use.
    own = Tokenizer.from_file(train_sentencepiece(CORPUS * 3, tmp_path / "own.spm", vocab_size=120, seed=0))
    init = save_checkpoint(build_model("lvg-tiny-gres"), tmp_path / "init.safetensors",
                           metadata=tokenizer_metadata(own.model_bytes, own.identity))
    env = ddp_worker.worker_env()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(ddp_worker.SCRIPT), "ddp", str(base),
           str(synth_dataset.out_dir), str(init)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=420)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"torchrun timed out: {exc.stderr}")
    assert proc.returncode == 0, proc.stderr[-4000:]

    records = [json.loads((base / f"record-rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["step"] for r in records] == [3, 3]
    # Every rank reads the same files, so the run warns once about the tokenizer, not once per rank.
    assert [r["warnings"].count("TokenizerMismatchWarning") for r in records] == [1, 0]

    # Data: within each step the two ranks hold different samples; within an epoch no sample repeats.
    source = open_dataset(synth_dataset.out_dir, split="train", prefer_gres=True)
    steps_per_epoch = len(source.samples) // 4
    seen0, seen1 = records[0]["seen"], records[1]["seen"]
    assert all(len(b) == 2 for b in seen0 + seen1)
    for a, b in zip(seen0, seen1):
        assert not set(a) & set(b)
    epoch0 = [i for step in range(min(3, steps_per_epoch)) for i in seen0[step] + seen1[step]]
    assert len(epoch0) == len(set(epoch0))

    # Parameters: identical on both ranks after the DDP steps, and trained.
    p0, p1 = (load_file(str(base / f"params-rank{r}.safetensors")) for r in (0, 1))
    assert set(p0) == set(p1)
    assert [k for k in p0 if not torch.equal(p0[k], p1[k])] == []
    init = build_model("lvg-tiny-gres").state_dict()
    assert not torch.equal(p0["empty_head.classifier.weight"], init["empty_head.classifier.weight"])

    # Files: only rank 0 wrote a run directory.
    assert (base / "run-rank0" / "last.safetensors").exists()
    assert (base / "run-rank0" / "log.jsonl").exists()
    assert not (base / "run-rank1").exists() or not any((base / "run-rank1").iterdir())

    # Evaluation: sentences sharded over the ranks, sums gathered: both ranks report the whole split.
    m0, m1 = records[0]["metrics"], records[1]["metrics"]
    assert m0 == m1
    val = open_dataset(synth_dataset.out_dir, split="val", prefer_gres=True)
    assert m0["task"] == "gres" and m0["n"] == val.num_sentences()
