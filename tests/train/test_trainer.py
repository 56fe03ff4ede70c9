"""Training loop: exact resume, checkpoint rotation / fallback / atomicity, signals, optimizer setup."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from lvg.core.model_file import ModelFile
from lvg.core.tokenizer import Tokenizer, train_sentencepiece
from lvg.errors import CheckpointError, ConfigError, InputError
from lvg.modeling import build_model
from lvg.modeling.checkpoint import read_checkpoint_tensors
from lvg.train.config import TrainConfig
from lvg.train.run_data import build_data
from lvg.train.run_dir import read_log
from lvg.train.state import LAST, PREV, ResumeWarning, find_resume_checkpoint
from lvg.train.trainer import train
from tests.helpers import ddp_worker
from tests.helpers.artifacts import CORPUS
from tests.helpers.train_fakes import fake_data as _data


def _cfg(**kw) -> TrainConfig:
    base = dict(variant="lvg-tiny", steps=4, batch_size=2, warmup_steps=1, log_every=1, save_every=0, val_split=None,
                lr=1e-3, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def test_resume_continues_exactly(tmp_path: Path) -> None:
    # 4 samples / batch 2 = 2 steps per epoch: the interruption is mid-epoch and the resumed part crosses
    # an epoch boundary. GRES variant: the no-target head and its loss are part of the state as well.
    cfg = _cfg(variant="lvg-tiny-gres", steps=3)
    full = train(cfg, tmp_path / "full", data=_data(4), show_progress=False)
    assert full.step == 3 and not full.stopped

    part = train(cfg, tmp_path / "split", data=_data(4), show_progress=False, stop_at_step=1)
    assert part.stopped and part.step == 1
    assert ModelFile.open(tmp_path / "split" / LAST).metadata["train_state"]
    resumed = train(cfg, tmp_path / "split", data=_data(4), show_progress=False, resume=True)
    assert resumed.step == 3 and not resumed.stopped

    a = read_checkpoint_tensors(tmp_path / "full" / LAST)
    b = read_checkpoint_tensors(tmp_path / "split" / LAST)
    assert set(a) == set(b)
    assert any(k.startswith("train/optim/") for k in a)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert different == []  # parameters, AdamW moments and RNG states all bit-identical
    # The model really trained (the comparison is not between two untouched models).
    init = build_model("lvg-tiny-gres")
    assert not torch.equal(a["text_head.fc1.weight"], init.state_dict()["text_head.fc1.weight"])
    events = [r["event"] for r in read_log(tmp_path / "split") if r["kind"] == "event"]
    assert events == ["start", "stopped", "paused", "resume", "done"]


def test_corrupt_last_falls_back_to_prev(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(_cfg(steps=2, save_every=1), out, data=_data(), show_progress=False)
    assert json.loads(ModelFile.open(out / PREV).metadata["train_state"])["step"] == 1
    good_last = (out / LAST).read_bytes()

    for garbage in (b"not a checkpoint at all", good_last[: len(good_last) // 2]):
        (out / LAST).write_bytes(garbage)
        with pytest.warns(ResumeWarning, match="last.safetensors"):
            loaded = find_resume_checkpoint(out)
        assert loaded is not None and loaded.path == out / PREV and loaded.state["step"] == 1

    with pytest.warns(ResumeWarning):
        result = train(_cfg(steps=2, save_every=1), out, data=_data(), show_progress=False, resume=True)
    assert result.step == 2
    assert json.loads(ModelFile.open(out / LAST).metadata["train_state"])["step"] == 2

    (out / LAST).write_bytes(b"x")
    (out / PREV).write_bytes(b"y")
    with pytest.warns(ResumeWarning), pytest.raises(CheckpointError, match="no usable checkpoint"):
        find_resume_checkpoint(out)


def test_checkpoint_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    train(_cfg(steps=3, save_every=1), out, data=_data(), show_progress=False, stop_at_step=1)
    before = read_checkpoint_tensors(out / LAST)

    import safetensors.torch

    real_save = safetensors.torch.save_file

    def crash_half_way(tensors, filename, metadata=None):
        real_save(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as fh:  # the process dies with half the file written
            fh.truncate(os.path.getsize(filename) // 2)
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", crash_half_way)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(steps=3, save_every=1), out, data=_data(), show_progress=False, resume=True)
    monkeypatch.undo()

    names = sorted(p.name for p in out.iterdir())
    assert not any(n.endswith(".tmp") for n in names), names
    # No partial file under a checkpoint name, and nothing renamed before the new file was complete: `last` is
    # still the complete old checkpoint.
    loaded = find_resume_checkpoint(out)
    assert loaded is not None and loaded.path == out / LAST and loaded.state["step"] == 1
    assert all(torch.equal(before[k], loaded.tensors[k]) for k in before)


@pytest.mark.parametrize(("sig", "workers"), [(signal.SIGTERM, 0), (signal.SIGINT, 0), (signal.SIGTERM, 1),
                                              (signal.SIGINT, 1)])
def test_signal_finishes_step_checkpoints_and_exits_zero(tmp_path: Path, sig: int, workers: int) -> None:
    # The signal goes to the whole process group, as Ctrl-C in a terminal and `systemctl stop` send it: the
    # data-loading workers get it too, and must leave the stopping to the trainer.
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(ddp_worker.SCRIPT), "signal", str(out), str(workers)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ddp_worker.worker_env(),
                            start_new_session=True)
    try:
        deadline = time.time() + 120
        while not (out / "step-marker").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "training never made a step"
            time.sleep(0.05)
        os.killpg(proc.pid, sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr
    step = int(stdout.split("RESULT")[1].split()[0])
    assert "True" in stdout.split("RESULT")[1]
    assert 1 <= step < 1000
    state = json.loads(ModelFile.open(out / LAST).metadata["train_state"])
    assert state["step"] == step
    assert read_log(out)[-2]["event"] == "stopped"


@pytest.mark.parametrize("at_step", [1, 3])
def test_a_stop_during_an_evaluation_abandons_it_and_keeps_the_steps(tmp_path: Path, synth_dataset,
                                                                      at_step: int) -> None:
    # A scheduler's SIGTERM gives a grace period, not the minutes a validation pass can take. The signal lands
    # at the step of a periodic evaluation (1) or the last step (3): the evaluation is abandoned after at most
    # one batch, and the run's steps are saved.
    def on_step(step: int, batch: dict) -> None:
        if step == at_step:
            os.kill(os.getpid(), signal.SIGTERM)

    cfg = _cfg(data=str(synth_dataset.out_dir), steps=3, eval_every=1, val_split="val", eval_batch_size=1,
               eval_max_sentences=2, tokenizer=str(synth_dataset.tokenizer))
    result = train(cfg, tmp_path / "run", show_progress=False, on_step=on_step)
    log = read_log(tmp_path / "run")
    evals = [r["step"] for r in log if r.get("kind") == "eval"]
    assert evals == list(range(1, at_step)), evals  # the evaluations before the signal ran whole
    assert any(r.get("event") == "evaluation stopped" and r["step"] == at_step for r in log), log[-3:]
    assert result.step == at_step and result.stopped == (at_step < 3)
    assert json.loads(ModelFile.open(tmp_path / "run" / LAST).metadata["train_state"])["step"] == at_step


def test_refuses_to_overwrite_a_run_and_checks_the_output_dir(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(_cfg(steps=1), out, data=_data(), show_progress=False)
    with pytest.raises(InputError, match="--resume"):
        train(_cfg(steps=1), out, data=_data(), show_progress=False)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot create output directory"):
        train(_cfg(steps=1), blocker / "run", data=_data(), show_progress=False)


def test_resume_without_checkpoint_starts_fresh_with_a_warning(tmp_path: Path) -> None:
    with pytest.warns(ResumeWarning, match="starting from scratch"):
        result = train(_cfg(steps=1), tmp_path / "run", data=_data(), show_progress=False, resume=True)
    assert result.step == 1 and (tmp_path / "run" / LAST).exists()
    # With a starting checkpoint named, the warning names it rather than claiming a fresh start.
    with pytest.warns(ResumeWarning, match=f"starting from {re.escape(str(result.checkpoint))}"):
        train(_cfg(steps=1, init_from=str(result.checkpoint)), tmp_path / "run2", data=_data(),
              show_progress=False, resume=True)


def test_init_from_starts_a_new_run_from_another_runs_weights(tmp_path: Path) -> None:
    first = train(_cfg(steps=2), tmp_path / "a", data=_data(), show_progress=False)
    trained = read_checkpoint_tensors(first.checkpoint)
    # A learning rate so small that one step cannot move a weight by 1e-6: what the new run holds after its
    # step is what it started from.
    cfg = _cfg(steps=3, lr=1e-9, weight_decay=0.0, seed=11, init_from=str(first.checkpoint))
    second = train(cfg, tmp_path / "b", data=_data(), show_progress=False, stop_at_step=1)
    got = read_checkpoint_tensors(second.checkpoint)
    fresh = build_model("lvg-tiny").state_dict()
    for key in fresh:
        assert torch.allclose(got[key].float(), trained[key].float(), atol=1e-6), key
    assert any(not torch.allclose(v.float(), trained[k].float(), atol=1e-3) for k, v in fresh.items())
    # Its own schedule and step count, not the first run's: it logs a start at step 0 of 3.
    start = next(r for r in read_log(tmp_path / "b") if r["kind"] == "event")
    assert (start["event"], start["step"], start["total_steps"]) == ("start", 0, 3)
    # --resume continues the new run from its own checkpoint (init_from is not applied again), so resuming
    # without naming it is no change of settings.
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResumeWarning)
        done = train(cfg.replace(init_from=None), tmp_path / "b", data=_data(), show_progress=False, resume=True)
    assert done.step == 3 and not done.stopped

    with pytest.raises(CheckpointError, match="'lvg-tiny', which does not match 'lvg-tiny-gres'"):
        train(_cfg(variant="lvg-tiny-gres", init_from=str(first.checkpoint)), tmp_path / "c", data=_data(),
              show_progress=False)
    with pytest.raises(CheckpointError, match="not found"):
        train(_cfg(init_from=str(tmp_path / "nope.safetensors")), tmp_path / "d", data=_data(), show_progress=False)
    with pytest.raises(ConfigError, match="exclusive"):
        _cfg(init_from="x.safetensors", pretrained="beit3.pth")


def test_resume_reads_text_with_the_runs_own_tokenizer(tmp_path: Path, synth_dataset) -> None:
    # Regenerating the data between two pieces of a run replaces the tokenizer beside it; the resumed run
    # must keep the ids its text embeddings were trained with.
    data = tmp_path / "data"
    shutil.copytree(synth_dataset.out_dir, data)
    spm = data / Path(synth_dataset.tokenizer).name
    original = spm.read_bytes()
    cfg = _cfg(data=str(data), steps=2)
    train(cfg, tmp_path / "run", show_progress=False, stop_at_step=1)
    train_sentencepiece(CORPUS * 3, spm, vocab_size=120, seed=0)
    assert spm.read_bytes() != original
    done = train(cfg, tmp_path / "run", show_progress=False, resume=True)
    assert done.step == 2
    assert ModelFile.open(done.checkpoint).info.tokenizer_bytes == original
    # Naming the new file explicitly is refused rather than trained on.
    with pytest.raises(ConfigError, match="not the one this run was trained with"), \
            pytest.warns(ResumeWarning, match="tokenizer"):
        train(cfg.replace(tokenizer=str(spm)), tmp_path / "run", show_progress=False, resume=True)


def test_no_target_mask_weight_reaches_the_loss(tmp_path: Path) -> None:
    # Batch of 4 fake samples, the fourth a no-target one: at weight 0 the logged BCE is the mean over the
    # three with a target, so it differs from the run at weight 1 on the same first batch and weights.
    def first_bce(weight: float) -> float:
        cfg = _cfg(variant="lvg-tiny-gres", steps=1, batch_size=4, loss_no_target_mask=weight)
        train(cfg, tmp_path / f"w{weight}", data=_data(4), show_progress=False)
        return next(r["loss_bce"] for r in read_log(tmp_path / f"w{weight}") if r["kind"] == "train")

    assert first_bce(0.0) != pytest.approx(first_bce(1.0), rel=1e-4)


def test_the_object_pick_loss_joins_a_real_run_and_its_total(tmp_path: Path, synth_dataset) -> None:
    # The same first batch and weights with and without the loss: the logged pick loss is positive and the
    # total grows by exactly its weight times it.
    def first_row(weight: float) -> dict:
        cfg = _cfg(data=str(synth_dataset.out_dir), steps=1, batch_size=4, tokenizer=str(synth_dataset.tokenizer),
                   loss_object_pick=weight)
        train(cfg, tmp_path / f"w{weight}", show_progress=False)
        return next(r for r in read_log(tmp_path / f"w{weight}") if r["kind"] == "train")

    off, on = first_row(0.0), first_row(0.5)
    assert "loss_object_pick" not in off and on["loss_object_pick"] > 0
    assert on["loss"] == pytest.approx(off["loss"] + 0.5 * on["loss_object_pick"], rel=1e-4)


def test_logged_learning_rate_follows_the_schedule(tmp_path: Path) -> None:
    result = train(_cfg(steps=3, warmup_steps=2, lr=1e-3), tmp_path / "run", data=_data(), show_progress=False)
    lrs = [r["lr"] for r in result.history]
    assert lrs == pytest.approx([5e-4, 1e-3, 1e-3])  # new-parts group; cosine step 0 of 1 is the peak
    assert all(math.isfinite(r["loss"]) for r in result.history)


# --------------------------------------------------------------------------------------------------
# TrainConfig and the CLI


def test_train_config_files_and_validation(tmp_path: Path) -> None:
    from lvg.errors import ConfigError

    toml = tmp_path / "c.toml"
    toml.write_text('variant = "lvg-tiny-gres"\nsteps = 7\nlr = 5e-4\ncontrastive = "arcface"\npretrained = "x.pth"\n')
    cfg = TrainConfig.from_file(toml)
    assert (cfg.variant, cfg.steps, cfg.lr, cfg.contrastive, cfg.pretrained) == ("lvg-tiny-gres", 7, 5e-4, "arcface",
                                                                                  "x.pth")
    assert cfg.loss_bce == 2.0 and cfg.loss_dice == 0.5 and cfg.gamma == 0.2 and cfg.loss_no_target == 0.5
    js = tmp_path / "c.json"
    js.write_text(cfg.to_json())
    assert TrainConfig.from_file(js) == cfg
    assert TrainConfig().resolved_lr(gres=True) == 5e-5 and TrainConfig().resolved_lr(gres=False) == 1e-4

    for bad, match in [('{"stepz": 1}', "unknown field"), ('{"steps": "many"}', "expected an integer"),
                       ('{"amp": "fp8"}', "not one of"), ('{"batch_size": 0}', "batch_size"),
                       ('{"tau": 0}', "tau"), ('{"loss_no_target_mask": -1}', "loss_no_target_mask"),
                       ('{"loss_object_pick": -1}', "loss_object_pick"),
                       ("[1]", "expected an object"), ("{", "not valid JSON")]:
        js.write_text(bad)
        with pytest.raises(ConfigError, match=match):
            TrainConfig.from_file(js)
    with pytest.raises(ConfigError, match="cannot read"):
        TrainConfig.from_file(tmp_path / "missing.json")


def test_lvg_train_cli(tmp_path: Path, synth_dataset) -> None:
    from typer.testing import CliRunner

    from lvg.cli import app

    runner = CliRunner()
    out = tmp_path / "run"
    config = tmp_path / "train.toml"
    config.write_text(f'variant = "lvg-tiny"\ndata = "{synth_dataset.out_dir}"\nbatch_size = 2\nsave_every = 1\n')
    res = runner.invoke(app, ["train", "--config", str(config), "--out", str(out), "--steps", "1",
                              "--val-split", "", "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["step"] == 1 and summary["total_steps"] == 1 and not summary["stopped"]
    assert (out / LAST).exists() and json.loads((out / "train_config.json").read_text())["batch_size"] == 2
    # The checkpoint carries the run's tokenizer: it can be served with no sentencepiece file beside it.
    from lvg.runtime.grounder import Grounder

    alone = tmp_path / "alone" / "model.safetensors"
    alone.parent.mkdir()
    alone.write_bytes((out / LAST).read_bytes())
    grounder = Grounder.load(alone)
    assert grounder.info.tokenizer_identity == Tokenizer.from_file(synth_dataset.tokenizer).identity
    # ... and its training domain: the words of the training split it read, and the synthetic-scene note, so
    # the torch backend names the words it never saw.
    from lvg.core.domain import SYNTH_DESCRIPTION, vocabulary
    from lvg.train.data import open_dataset

    read = open_dataset(str(synth_dataset.out_dir), split="train")
    assert grounder.info.domain.words == frozenset(vocabulary(t for _, t in read.sentences_flat()))
    assert grounder.info.domain.description == SYNTH_DESCRIPTION
    image = Image.new("RGB", (96, 64), (30, 120, 200))
    assert grounder.predict(image, "the red zebra").unknown_words == ["zebra"]

    again = runner.invoke(app, ["train", "--config", str(config), "--out", str(out), "--steps", "1"])
    assert again.exit_code == 2 and "--resume" in again.stderr and "Traceback" not in again.output
    resumed = runner.invoke(app, ["train", "--config", str(config), "--out", str(out), "--steps", "2",
                                  "--val-split", "", "--device", "cpu", "--resume", "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["step"] == 2
    assert "warning: resuming with changed settings ['steps']" in resumed.stderr
    # --stop-at splits one planned run into pieces (time-limited jobs): it stops early, the schedule and the
    # checkpoint still belong to the whole run, and --resume finishes it.
    piece = runner.invoke(app, ["train", "--config", str(config), "--out", str(out), "--steps", "4", "--stop-at",
                                "3", "--val-split", "", "--device", "cpu", "--resume", "--json"])
    assert piece.exit_code == 0, piece.output
    summary = json.loads(piece.stdout)
    assert (summary["step"], summary["total_steps"], summary["stopped"]) == (3, 4, True)
    assert json.loads(ModelFile.open(out / LAST).metadata["train_state"])["step"] == 3
    # Without --config or flags, --resume continues with the run's own settings (from its checkpoint).
    rest = runner.invoke(app, ["train", "--out", str(out), "--device", "cpu", "--resume", "--json"])
    assert rest.exit_code == 0, rest.output
    summary = json.loads(rest.stdout)
    assert (summary["step"], summary["total_steps"], summary["stopped"]) == (4, 4, False)
    assert "changed settings" not in rest.stderr  # the piece's checkpoint already planned 4 steps

    bad = runner.invoke(app, ["train", "--variant", "lvg-tiny", "--data", str(synth_dataset.out_dir), "--out",
                              str(tmp_path / "r2"), "--steps", "1", "--amp", "fp8"])
    assert bad.exit_code == 2 and "fp8" in bad.stderr
    # A run that fails before writing anything leaves no empty output directory behind.
    nodata = runner.invoke(app, ["train", "--variant", "lvg-tiny", "--data", str(tmp_path / "nope"), "--out",
                                 str(tmp_path / "r3"), "--steps", "1", "--device", "cpu"])
    assert nodata.exit_code == 2 and "tokenizer" not in nodata.stderr and not (tmp_path / "r3").exists()


def test_periodic_evaluation_logs_the_text_swap_control(tmp_path: Path, synth_dataset) -> None:
    # Every evaluation (periodic and final) carries the control when asked, and only then.
    common = dict(data=str(synth_dataset.out_dir), val_split="val", steps=2, eval_every=1, eval_batch_size=1000)
    train(_cfg(eval_text_swap=True, **common), tmp_path / "swap", device="cpu", show_progress=False)
    evals = [r for r in read_log(tmp_path / "swap") if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [1, 2]
    for record in evals:
        # One batch holds every sentence, so each one has a partner from another image.
        assert record["text_swap"]["n"] == record["n"] > 0
        assert 0.0 <= record["text_swap"]["mIoU"] <= 1.0
    train(_cfg(**common), tmp_path / "plain", device="cpu", show_progress=False)
    assert all("text_swap" not in r for r in read_log(tmp_path / "plain") if r["kind"] == "eval")

    from typer.testing import CliRunner

    from lvg.cli import app

    res = CliRunner().invoke(app, ["train", "--variant", "lvg-tiny", "--data", str(synth_dataset.out_dir),
                                   "--out", str(tmp_path / "cli"), "--steps", "1", "--eval-text-swap",
                                   "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "cli" / "train_config.json").read_text())["eval_text_swap"] is True
    assert "text_swap" in json.loads(res.stdout)["metrics"]


def test_no_final_eval_skips_only_the_pass_after_the_last_step(tmp_path: Path, synth_dataset) -> None:
    from typer.testing import CliRunner

    from lvg.cli import app

    base = ["train", "--variant", "lvg-tiny", "--data", str(synth_dataset.out_dir), "--steps", "3",
            "--eval-every", "2", "--device", "cpu", "--json"]
    runs = {}
    for name, flag in (("with", []), ("without", ["--no-final-eval"])):
        res = CliRunner().invoke(app, [*base, *flag, "--out", str(tmp_path / name)])
        assert res.exit_code == 0, res.output
        runs[name] = [r["step"] for r in read_log(tmp_path / name) if r["kind"] == "eval"]
        assert (tmp_path / name / "last.safetensors").exists()
    assert runs == {"with": [2, 3], "without": [2]}
    assert json.loads((tmp_path / "without" / "train_config.json").read_text())["final_eval"] is False


@pytest.mark.slow
def test_training_beats_the_untrained_model_on_held_out_data(tmp_path: Path, capsys) -> None:
    """lvg-tiny learns on a small synthetic set: held-out mIoU clearly above the untrained model's."""
    from lvg.modeling.runner import ArrayRunner
    from lvg.train.evaluate import evaluate
    from lvg.train.state import seed_everything
    from lvg.train.synth import generate

    data_dir = tmp_path / "synth"
    generate(data_dir, images=40, seed=1, size_range=(96, 192))
    # From scratch (no BEiT-3 weights) the backbone trains at the full lr. The contrastive term is damped:
    # at tau = 0.1 its gradient (norm ~20 at init) would otherwise swamp the segmentation losses' (~0.3)
    # in a from-scratch model this small and this short a run.
    cfg = TrainConfig(variant="lvg-tiny", data=str(data_dir), steps=150, batch_size=4, lr=2e-3, backbone_lr_mult=1.0,
                      warmup_steps=10, loss_contrastive=0.1, log_every=25, save_every=0, val_split="val", seed=0)
    seed_everything(cfg.seed)
    untrained_model = build_model("lvg-tiny")
    data = build_data(cfg, untrained_model.cfg)
    before = evaluate(ArrayRunner(untrained_model), data.source, "val", data.tokenizer, per_expression=False)

    start = time.perf_counter()
    result = train(cfg, tmp_path / "run", show_progress=False)
    seconds = time.perf_counter() - start
    after = result.metrics
    with capsys.disabled():
        print(f"\nlearning test: {seconds:.0f}s; val mIoU untrained {before['mIoU']:.4f} -> trained "
              f"{after['mIoU']:.4f}; "
              f"oIoU {before['oIoU']:.4f} -> {after['oIoU']:.4f}; per expression {after['per_expression']}")
    assert after["n"] == before["n"] == data.source.num_sentences()
    assert after["mIoU"] > max(0.04, 3 * before["mIoU"])
    assert after["oIoU"] > 3 * before["oIoU"]
    assert (tmp_path / "run" / "best.safetensors").exists()
