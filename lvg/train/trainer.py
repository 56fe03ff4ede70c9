"""The training loop: AdamW + warmup/cosine, AMP, clipping, DDP, periodic evaluation, exact resume.

:class:`Trainer` reads top to bottom: :meth:`Trainer.setup` builds the model, data, optimizer and (when
resuming) the saved state; :meth:`Trainer.loop` runs the steps. One step is :meth:`Trainer.train_step`
(forward, :meth:`Trainer.loss`, backward, clip, update) on a batch from :meth:`Trainer.batches`; the data,
the loss and the step are separate methods so that each can change without touching the others.
Around the loop: the run directory and its log (:mod:`lvg.train.run_dir`), the checkpoints and exact resume
(:mod:`lvg.train.state`), the optimizer and schedule (:mod:`lvg.train.optim`), the datasets and their
tokenizer (:mod:`lvg.train.run_data`), and DDP (:mod:`lvg.train.distributed`).
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lvg._progress import progress
from lvg.core.model_file import ModelFile
from lvg.core.tokenizer import check_vocabulary
from lvg.errors import ConfigError, InputError
from lvg.modeling import build_model, load_beit3_pretrained, resolve_device, save_checkpoint
from lvg.modeling.checkpoint import load_state_strict
from lvg.modeling.runner import ArrayRunner
from lvg.train.accumulate import micro_batches, sync_last
from lvg.train.config import TrainConfig
from lvg.train.distributed import (
    ShardedBatchSampler,
    any_rank,
    barrier,
    cleanup_distributed,
    gather_objects,
    init_distributed,
    mean_over_ranks,
)
from lvg.train.domain import domain_header
from lvg.train.evaluate import EvaluationStopped, evaluate
from lvg.train.init_weights import init_model
from lvg.train.losses import grounding_loss, object_pick_loss
from lvg.train.optim import build_optimizer, lr_factor, set_lr
from lvg.train.pretrain import PretrainNet, pretrain_loss
from lvg.train.run_data import TokenizerMismatchWarning, TrainData, build_data
from lvg.train.run_dir import (
    CONFIG_FILE,
    LOG_FILE,
    JsonlLog,
    StopFlag,
    check_output_dir,
    checkpoint_bytes,
)
from lvg.train.sampling import GroupBatchSampler, SentenceIndex
from lvg.train.state import (
    BEST,
    LAST,
    PREV,
    ResumePoint,
    ResumeWarning,
    check_resume_config,
    collect_state,
    find_resume_checkpoint,
    heads_tensors,
    preserved_rng,
    restore_heads,
    restore_state,
    save_training_checkpoint,
    seed_everything,
    tokenizer_header,
)
from lvg.train.torch_data import train_loader
from lvg.train.words import WordsNet, with_word_losses, words_net

__all__ = ["AmpWarning", "TrainResult", "Trainer", "train"]

log = logging.getLogger("lvg.train")


class AmpWarning(UserWarning):
    """Mixed precision was requested where it is unavailable (CPU)."""


@dataclass
class TrainResult:
    """What :func:`train` did. ``stopped`` is True when a signal or ``stop_at_step`` ended it early;
    ``model`` is the trained model (unwrapped from DDP, train mode), ``metrics`` the last evaluation."""

    out_dir: Path
    step: int
    total_steps: int
    stopped: bool
    checkpoint: Path | None
    metrics: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    model: nn.Module | None = field(default=None, repr=False)


def train(cfg: TrainConfig, out_dir: str | os.PathLike, **options: Any) -> TrainResult:
    """Train ``cfg.variant`` on ``cfg.data``, writing checkpoints and logs to ``out_dir``: one
    :class:`Trainer` run (``options`` are its keyword arguments: ``resume``, ``device``, ``show_progress``,
    ``stop_at_step``, ``on_step``, ``data``)."""
    return Trainer(cfg, out_dir, **options).run()


class Trainer:
    """One training run of ``cfg.variant`` on ``cfg.data`` into ``out_dir``; :meth:`run` does it once.

    Args:
        resume: continue from ``out_dir``'s newest usable checkpoint (``last``, else ``prev``); without a
            checkpoint it starts from scratch (with a warning). Without ``resume`` an ``out_dir`` that already
            holds a run is an error (nothing is overwritten by accident).
        device: "cpu", "cuda", "cuda:1" or None (CUDA if available, else CPU; under torchrun the local rank's GPU).
        show_progress: progress bar on stderr (rank 0); None = when stderr is a terminal.
        stop_at_step: stop (checkpoint and return) once this step is reached, as a signal would.
        on_step: called on every rank after every optimizer step with ``(step, batch)`` (monitoring hooks).
        data: prebuilt datasets (default: :func:`~lvg.train.run_data.build_data` from ``cfg``).

    Under ``torchrun`` (``WORLD_SIZE > 1``) it joins the process group, shards the data, wraps the model in
    DDP and leaves the group at the end. SIGINT/SIGTERM: the current step finishes, a checkpoint is written,
    and :meth:`run` returns normally with ``stopped=True``.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        out_dir: str | os.PathLike,
        *,
        resume: bool = False,
        device: str | torch.device | None = None,
        show_progress: bool | None = None,
        stop_at_step: int | None = None,
        on_step: Callable[[int, dict[str, Any]], None] | None = None,
        data: TrainData | None = None,
    ) -> None:
        self.cfg, self.out, self.resume, self.device_name = cfg, Path(out_dir), resume, device
        self.show_progress, self.stop_at_step, self.on_step, self.data = show_progress, stop_at_step, on_step, data
        self.step, self.best, self.stopped = 0, None, False
        self.metrics: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []
        self.checkpoint: Path | None = None
        self._index: SentenceIndex | None = None
        self._stop: StopFlag | None = None  # the running loop's signal flag, which evaluations also heed
        # The model under training-only heads, trained beside it and wrapped by DDP: the pretraining heads
        # (stage="pretrain"), or the auxiliary classifiers of lvg.train.words (loss_direction, ... > 0).
        self.heads: PretrainNet | WordsNet | None = None
        # Training losses summed since the last log line.
        self._window: dict[str, float] = {}
        self._window_steps, self._window_start = 0, 0.0

    @property
    def pretrain(self) -> PretrainNet | None:
        """The pretraining heads of a ``stage = "pretrain"`` run, else None."""
        return self.heads if isinstance(self.heads, PretrainNet) else None

    # ----------------------------------------------------------------------------------------- the run

    def run(self) -> TrainResult:
        """Set up, train to the end (or a stop request), and leave the process group."""
        want_cuda = resolve_device(self.device_name).type == "cuda"  # also refuses a missing device, up front
        self.dist = init_distributed("cuda" if want_cuda else "cpu")
        self.device = resolve_device(self.device_name, index=self.dist.local_rank)
        created, finished = not self.out.exists(), False
        try:
            self.setup()
            self.loop()
            self.run_log.write({"kind": "event", "event": "paused" if self.stopped else "done", "step": self.step})
            finished = True
            return TrainResult(out_dir=self.out, step=self.step, total_steps=self.total, stopped=self.stopped,
                               checkpoint=self.checkpoint, metrics=self.metrics, history=self.history,
                               model=self.model)
        except BaseException:
            # A run that failed before writing anything (bad data, wrong tokenizer...) leaves no empty
            # directory behind to trip up the next attempt's "already holds a run" check or the user.
            if created and self.dist.is_main and self.out.is_dir() and not any(self.out.iterdir()):
                self.out.rmdir()
            raise
        finally:
            # Only a normal end waits for the other ranks: after a failure they may never arrive.
            cleanup_distributed(synchronise=finished)

    def setup(self) -> None:
        """Model, data, optimizer and schedule; with ``resume``, the saved state they continue from.

        The order is part of exact resume: a fresh run's initial weights depend on the seed alone, and the
        random streams of step 0 start after everything that draws from them at build time.
        """
        cfg = self.cfg = self.cfg.for_world(self.dist.world_size)  # a global_batch shared among the processes
        info, dev = self.dist, self.device
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        point = self._resume_point()
        seed_everything(cfg.seed, info.rank)
        self.model = build_model(cfg.variant, impl=cfg.kernel_impl)
        # Pretraining trains the model's encoder under heads of its own (lvg.train.pretrain).
        self.heads = PretrainNet(self.model) if cfg.stage == "pretrain" else words_net(self.model, cfg)
        self._check_out_dir()
        weights = self._load_weights(point)
        self.model.to(dev)
        if self.heads is not None:
            self.heads.to(dev)
        self.data = self._data(weights, resumed=point is not None)
        n_train = len(self.data.train)
        self.steps_per_epoch = ShardedBatchSampler.steps_per_epoch(n_train, cfg.batch_size, info.world_size)
        if self.steps_per_epoch == 0:
            raise ConfigError(f"the training split has {n_train} samples, fewer than one global batch of "
                              f"{cfg.batch_size * info.world_size}")
        self.total = cfg.steps if cfg.steps > 0 else cfg.epochs * self.steps_per_epoch
        if self.total <= 0:
            raise ConfigError("set steps or epochs to a positive number")

        self.opt = build_optimizer(self.model, cfg, extra=self.heads)
        self.amp = cfg.amp
        if self.amp == "fp16" and dev.type != "cuda":
            # bfloat16 autocast runs on CPUs too; float16 autocast with its loss scaling is a CUDA path.
            warnings.warn(f"amp=fp16 needs CUDA; training in float32 on {dev.type}", AmpWarning, stacklevel=2)
            self.amp = "off"
        self.scaler = torch.amp.GradScaler("cuda", enabled=(self.amp == "fp16"))
        if point is not None:
            self.step, self.best = restore_state(point, self.opt, self.scaler, info, dev)
            if self.heads is not None:
                restore_heads(self.heads, point)
            self.checkpoint = point.path
            if info.is_main:
                log.info("resumed from %s at step %d", point.path, self.step)
        else:
            # The random streams of step 0 start here, after model building, in both fresh and resumed runs
            # (a resumed run restores the streams saved at its step instead).
            seed_everything(cfg.seed + 7919, info.rank)
        self.ddp_model = self._wrap_ddp()
        self._open_log(resumed=point is not None, n_train=n_train)

    def loop(self) -> None:
        """Optimizer steps until the last one or a stop request; logs, evaluations and checkpoints on the
        way. A stop (signal or ``stop_at_step``) is decided on every rank together and saves first."""
        cfg = self.cfg
        bar = progress(total=self.total, desc="train",
                       disable=True if not self.dist.is_main else
                       (None if self.show_progress is None else not self.show_progress))
        bar.n = self.step
        self._window_start = time.perf_counter()
        self.model.train()
        with StopFlag() as stop, bar:
            self._stop = stop
            while self.step < self.total:
                epoch, offset = divmod(self.step, self.steps_per_epoch)
                for batch in self.batches(epoch, offset):
                    parts = self.train_step(batch)
                    self.step += 1
                    if self.on_step is not None:
                        self.on_step(self.step, batch)
                    bar.update(1)
                    last = self.step >= self.total
                    self._log_train(parts, epoch, last, bar)
                    if cfg.eval_every and self.step % cfg.eval_every == 0 and not last:
                        self.metrics = self.evaluate(final=False) or self.metrics
                    want_stop = any_rank(stop.requested or (self.stop_at_step is not None
                                                            and self.step >= self.stop_at_step), self.dist, self.device)
                    if last or want_stop or (cfg.save_every and self.step % cfg.save_every == 0):
                        # Save before the final evaluation: a kill during a long evaluation must not lose
                        # the last steps (the evaluation writes best.safetensors itself).
                        self.save()
                        if last and cfg.final_eval:
                            self.metrics = self.evaluate(final=True) or self.metrics
                    if last:
                        return
                    if want_stop:
                        self.stopped = True
                        self.run_log.write({"kind": "event", "event": "stopped", "step": self.step})
                        return

    # ------------------------------------------------------------------------ data, loss and one step

    def batches(self, epoch: int, offset: int) -> Iterator[dict[str, Any]]:
        """The batches of ``epoch`` from its ``offset``-th step on, this rank's shard of each global batch."""
        cfg, info = self.cfg, self.dist
        if hasattr(self.data.train, "set_epoch"):
            self.data.train.set_epoch(epoch)
        if self.pretrain is not None or cfg.sentences_per_image > 1 or cfg.curriculum:
            if self._index is None:
                self._index = SentenceIndex.of(self.data.train.source)
            first = epoch * self.steps_per_epoch
            ground = self.pretrain is None
            sampler: Any = GroupBatchSampler(
                self._index, batch_size=cfg.batch_size, per_image=cfg.sentences_per_image if ground else 1,
                curriculum=cfg.curriculum if ground else (), total_steps=self.total, start_step=first + offset,
                stop_step=first + self.steps_per_epoch, seed=cfg.seed, rank=info.rank, world_size=info.world_size)
        else:
            sampler = ShardedBatchSampler(len(self.data.train), cfg.batch_size, rank=info.rank,
                                          world_size=info.world_size, seed=cfg.seed, epoch=epoch, start_step=offset)
        yield from train_loader(self.data.train, sampler, num_workers=cfg.num_workers,
                                pin_memory=self.device.type == "cuda", seed=cfg.seed * 7 + epoch)

    def loss(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> dict[str, Tensor]:
        """The loss parts of one batch (``"total"`` is what is minimised; SPEC 3.6, or the pretraining
        losses of :func:`~lvg.train.pretrain.pretrain_loss`)."""
        cfg = self.cfg
        if self.pretrain is not None:
            return pretrain_loss(outputs, batch, self.pretrain.sizes, attributes=cfg.loss_attributes,
                                 centre=cfg.loss_centre, mlm=cfg.loss_mlm)
        outputs = {k: v.float() if v.is_floating_point() else v for k, v in outputs.items()}  # bf16 autocast
        parts = grounding_loss(
            outputs, batch["target"], batch.get("no_target"),
            bce=cfg.loss_bce, dice=cfg.loss_dice, contrastive=cfg.loss_contrastive,
            contrastive_kind=cfg.contrastive, gamma=cfg.gamma, tau=cfg.tau, no_target_weight=cfg.loss_no_target,
            no_target_mask_weight=cfg.loss_no_target_mask,
        )
        if cfg.loss_object_pick > 0:
            parts["object_pick"] = object_pick_loss(outputs["logits"], batch["objects"], batch["target_object"])
            parts["total"] = parts["total"] + cfg.loss_object_pick * parts["object_pick"]
        if isinstance(self.heads, WordsNet):
            parts = with_word_losses(parts, outputs, batch, cfg.loss_direction, cfg.loss_attribute_words,
                                     cfg.loss_direction_latent, patch_shape_weight=cfg.loss_patch_shape,
                                     shape_word_weight=cfg.loss_shape_word)
        return parts

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One optimizer step on ``batch``: forward, loss, backward, clip, update. Returns the loss parts and
        the gradient norm as floats."""
        cfg, opt, scaler = self.cfg, self.opt, self.scaler
        set_lr(opt, lr_factor(self.step, self.total, cfg.warmup_steps, cfg.schedule, cfg.min_lr_ratio))
        opt.zero_grad(set_to_none=True)
        pieces, sums = micro_batches(batch, cfg.micro_batch), {}
        for i, (piece, share) in enumerate(pieces):  # gradient accumulation (lvg.train.accumulate)
            piece = {k: v.to(self.device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in piece.items()}
            with sync_last(self.ddp_model, i == len(pieces) - 1):
                with self.autocast():
                    outputs = self.ddp_model(piece["image"], piece["text_ids"], piece["text_mask"])
                parts = self.loss(outputs, piece)
                scaler.scale(parts["total"] * share).backward()
            # Device tensors: reading a float here would wait for each piece's backward before the next starts.
            sums = {k: sums.get(k, 0.0) + v.detach() * share for k, v in parts.items()}
        sums = {k: float(v) for k, v in sums.items()}
        scaler.unscale_(opt)
        params = [p for g in opt.param_groups for p in g["params"]]
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        if scaler.is_enabled():
            scaler.step(opt)  # skips the step itself on inf/NaN gradients and lowers the scale
            scaler.update()
        elif torch.isfinite(norm):
            opt.step()
        else:
            # Gradients are identical on all ranks after DDP's all-reduce, so every rank skips together.
            warnings.warn("non-finite gradient: optimizer step skipped", RuntimeWarning, stacklevel=2)
        return {**sums, "grad_norm": float(norm)}

    def autocast(self) -> Any:
        """The mixed-precision context of the forward passes (none in float32)."""
        if self.amp == "off":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if self.amp == "bf16" else torch.float16)

    # ---------------------------------------------------------------------- evaluation and checkpoints

    def evaluate(self, *, final: bool) -> dict[str, Any] | None:
        """Score the validation split (all when ``final``); a new best writes ``best``; a stop abandons it (None)."""
        cfg, data, info, stop = self.cfg, self.data, self.dist, self._stop
        if not data.val_split or data.source is None:
            return None
        try:
            with preserved_rng(self.device), self.autocast():
                result = evaluate(
                    ArrayRunner(self.model, self.device), data.source, data.val_split, data.tokenizer,
                    task=cfg.resolved_task(self.model.cfg.head.gres), batch_size=cfg.eval_batch_size,
                    max_sentences=0 if final else cfg.eval_max_sentences, dist_info=info, text_swap=cfg.eval_text_swap,
                    should_stop=None if stop is None else lambda: any_rank(stop.requested, info, self.device))
        except EvaluationStopped as e:
            log.warning("%s: stop requested", e)
            self.run_log.write({"kind": "event", "event": "evaluation stopped", "step": self.step})
            return None
        key = "gIoU" if "gIoU" in result else "mIoU" if "mIoU" in result else "acc@0.5"
        score = result.get(key)
        if info.is_main:
            self.run_log.write({"kind": "eval", "step": self.step, **result})
            if score is not None and (self.best is None or score > self.best["score"]):
                self.best = {"score": score, "metric": key, "step": self.step}
                save_checkpoint(self.model, self.out / BEST, metadata={
                    "best": json.dumps(self.best), "train_config": cfg.to_json(), **self._header})
        self.best = gather_objects(self.best, info)[0]
        return result

    def save(self) -> None:
        """Write ``last`` (the previous one becomes ``prev``) with everything a resume needs."""
        tensors, state = collect_state(self.opt, self.scaler, self.step, self.steps_per_epoch, self.best, self.dist,
                                       self.device)
        if self.heads is not None:
            tensors.update(heads_tensors(self.heads))
        if self.dist.is_main:
            self.checkpoint = save_training_checkpoint(self.model, self.out, tensors=tensors, state=state,
                                                       cfg=self.cfg, extra=self._header)
        barrier(self.dist)

    # --------------------------------------------------------------------------------- setup details

    def _resume_point(self) -> ResumePoint | None:
        if not self.resume:
            return None
        point = find_resume_checkpoint(self.out)
        if point is None:
            # The first piece of a run split with --stop-at may name its start (--init, --pretrained).
            start = self.cfg.init_from or self.cfg.pretrained or "scratch"
            warnings.warn(f"--resume: no checkpoint in {self.out}; starting from {start}", ResumeWarning,
                          stacklevel=3)
        else:
            check_resume_config(point, self.cfg)
        return point

    def _check_out_dir(self) -> None:
        if self.dist.is_main:
            check_output_dir(self.out, checkpoint_bytes(self.model))
            if not self.resume and ((self.out / LAST).exists() or (self.out / PREV).exists()):
                raise InputError(f"{self.out} already holds a training run; pass --resume to continue it or "
                                 "choose another output directory")
        barrier(self.dist)

    def _load_weights(self, point: ResumePoint | None) -> ModelFile | None:
        """Load the weights the run starts from; returns the checkpoint they came from (its tokenizer reads
        the run's text), if any."""
        cfg, main = self.cfg, self.dist.is_main
        if point is not None:
            load_state_strict(self.model, point.model_state(), str(point.path))
            return point.model_file
        if cfg.pretrained:
            report = load_beit3_pretrained(self.model, cfg.pretrained)
            if main:
                log.info("pretrained BEiT-3 %s: %s", cfg.pretrained, report.summary())
        if cfg.init_from:
            init = ModelFile.open(cfg.init_from, checkpoint=True)
            taken = init_model(self.model, init, cfg.init_parts)
            if main:
                log.info("initialised from %s: %s", cfg.init_from, taken)
            return init
        return None

    def _data(self, weights: ModelFile | None, *, resumed: bool) -> TrainData:
        model_cfg = self.model.cfg
        if self.data is not None:
            if self.data.tokenizer is not None:
                check_vocabulary(self.data.tokenizer, model_cfg)
            return self.data
        with warnings.catch_warnings():
            if not self.dist.is_main:  # every rank reads the same files: one warning for the run, not one per rank
                warnings.simplefilter("ignore", TokenizerMismatchWarning)
            return build_data(self.cfg, model_cfg, weights_from=weights, resuming=resumed)

    def _wrap_ddp(self) -> nn.Module:
        net = self.heads if self.heads is not None else self.model
        if not self.dist.enabled:
            return net
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(
            net, device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=self.cfg.find_unused_parameters,
        )

    def _open_log(self, *, resumed: bool, n_train: int) -> None:
        info, cfg = self.dist, self.cfg
        # Every checkpoint carries the run's tokenizer and training domain: it can be served (unknown words
        # named) or exported on its own.
        self._header = {**tokenizer_header(self.data.tokenizer), **domain_header(self.data.domain)}
        self.run_log = JsonlLog(self.out / LOG_FILE if info.is_main else None)
        if info.is_main:
            (self.out / CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")
            self.run_log.write({"kind": "event", "event": "resume" if resumed else "start", "step": self.step,
                            "total_steps": self.total, "world_size": info.world_size, "device": str(self.device),
                            "variant": cfg.variant, "train_samples": n_train})

    def _log_train(self, parts: dict[str, float], epoch: int, last: bool, bar: Any) -> None:
        """Add a step's losses to the window; every ``log_every`` steps (and at the last) log their means
        over the window and the ranks."""
        for k, v in parts.items():
            self._window[k] = self._window.get(k, 0.0) + v
        self._window_steps += 1
        if not (self.cfg.log_every and (self.step % self.cfg.log_every == 0 or last)):
            return
        keys = sorted(self._window)
        means = mean_over_ranks([self._window[k] / self._window_steps for k in keys], self.dist, self.device)
        elapsed = time.perf_counter() - self._window_start
        samples = self._window_steps * self.cfg.batch_size * self.dist.world_size
        record = {"kind": "train", "step": self.step, "epoch": epoch, "lr": self.opt.param_groups[-1]["lr"],
                  "samples_per_s": samples / max(elapsed, 1e-9),
                  **{_log_key(k): v for k, v in zip(keys, means)}}
        self.history.append(record)
        if self.dist.is_main:
            self.run_log.write(record)
            bar.set_postfix(loss=record["loss"], sps=record["samples_per_s"])
        self._window, self._window_steps, self._window_start = {}, 0, time.perf_counter()


def _log_key(part: str) -> str:
    return {"total": "loss", "grad_norm": "grad_norm"}.get(part, f"loss_{part}")
