"""The data of a training run: its training and validation splits, and the tokenizer that reads their text.

The tokenizer is the one the run's weights were trained with whenever there is one (a resumed run's, else
``init_from``'s): a dataset made by another ``lvg data synth`` call carries its own tokenizer, with other
ids for the same words, so the file beside the data is only the last resort.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lvg.config import ModelConfig
from lvg.core.model_file import ModelFile
from lvg.core.tokenizer import Tokenizer, check_vocabulary
from lvg.errors import ConfigError, TokenizerError
from lvg.train.config import TrainConfig, data_parts

__all__ = [
    "TokenizerMismatchWarning",
    "TokenizerUnverifiedWarning",
    "TrainData",
    "build_data",
    "data_path",
    "find_tokenizer",
    "tokenizer_for_checkpoint",
]


@dataclass
class TrainData:
    """The data of a run (built by :func:`build_data`; tests may pass their own).

    ``train``: a map-style dataset of GroundingDataset items (with ``set_epoch``); ``source``: the
    validation split's ``ReferSource`` (None: no evaluation); ``tokenizer``: the run's tokenizer;
    ``domain``: the training split's words and description, recorded in every checkpoint (None: none).
    """

    train: Any
    source: Any
    tokenizer: Any
    val_split: str | None
    domain: Any = None


def find_tokenizer(data: str, name: str, explicit: str | None = None) -> Path:
    """The tokenizer file: ``explicit`` if given, else the file ``name`` (the variant's
    ``preprocess.tokenizer``, e.g. ``synthetic.spm``) in the data directory or one of its parents."""
    if explicit:
        return Path(explicit)
    root = data_path(data) if data else Path(".")
    for folder in [root, *root.resolve().parents]:
        if (folder / name).is_file():
            return folder / name
    raise ConfigError(f"no tokenizer given and no {name!r} found in {root} or its parents; pass --tokenizer FILE")


def data_path(spec: str) -> Path:
    """The directory a data spec (``DIR``, ``DIR:DATASET`` or ``DIR:DATASET:SPLITBY``) points into."""
    spec = data_parts(spec)[0]  # combined datasets: the first one's
    if Path(spec).is_dir():
        return Path(spec)
    pieces = spec.split(":")
    for k in (2, 1):
        if len(pieces) > k and Path(":".join(pieces[:-k])).is_dir():
            root = Path(":".join(pieces[:-k]))
            return root / pieces[-k] if (root / pieces[-k]).is_dir() else root
    return Path(spec)


class TokenizerMismatchWarning(UserWarning):
    """A tokenizer other than the one a checkpoint was trained with: its text ids mean other words."""


class TokenizerUnverifiedWarning(TokenizerMismatchWarning):
    """A checkpoint that neither carries nor names its tokenizer, read with the one beside the data: if it
    was trained with another, its text ids mean other words and every score is meaningless."""


def tokenizer_for_checkpoint(ckpt: str | os.PathLike | ModelFile | None, data: str, model_cfg: ModelConfig,
                             explicit: str | None = None, *, strict: bool = False) -> Tokenizer:
    """The tokenizer to run checkpoint ``ckpt`` (None: freshly initialised weights) with on ``data``.

    ``explicit`` if given; else the one the checkpoint carries (its header, or a ``.spm`` beside it), since
    the text embeddings were learnt for those ids (:meth:`ModelFile.tokenizer`); else the variant's file
    found beside the data. A dataset made by another ``lvg data synth`` call has its own tokenizer, so
    "beside the data" is only the last resort. An explicit file that differs from the checkpoint's own warns
    (:class:`TokenizerMismatchWarning`), or with ``strict`` (resuming a run) is a :class:`ConfigError`. The
    file found beside the data warns the same way when the checkpoint names another tokenizer, and with
    :class:`TokenizerUnverifiedWarning` when the checkpoint neither carries nor names one, since nothing can
    check it then.
    """
    model_file = ModelFile.open(ckpt, checkpoint=True) if ckpt is not None else None
    tok = model_file.tokenizer(explicit or None) if model_file is not None else None
    source = explicit
    if tok is None:  # fresh weights, or a checkpoint that does not carry its tokenizer
        path = Path(explicit) if explicit else find_tokenizer(data, model_cfg.preprocess.tokenizer)
        tok = Tokenizer.from_file(path)
        check_vocabulary(tok, model_cfg, what=f"tokenizer {path}")
        source = str(path)
    if model_file is not None:
        _check_own(model_file, tok, source, explicit=bool(explicit), strict=strict)
    return tok


def _check_own(model_file: ModelFile, tok: Tokenizer, source: str | None, *, explicit: bool, strict: bool) -> None:
    """Warn (or with ``strict`` raise) when ``tok``, read from ``source``, is not provably the tokenizer
    ``model_file`` was trained with.

    A dataset made by another ``lvg data synth`` call has a tokenizer of the same size with other ids for the
    same words, so the vocabulary check passes and the scores silently collapse; only the model's own record
    (the tokenizer it carries or the identity it names) can tell. An explicit file for a model that records
    none is the user's call and passes silently.
    """
    info = model_file.info
    if info.tokenizer_identity is None and info.tokenizer_bytes is None:
        if not explicit:
            warnings.warn(f"{model_file.path} carries no tokenizer: reading its text with {source} (beside the data); "
                          "if it was trained with another, every score means nothing (pass --tokenizer with the run's "
                          "own)", TokenizerUnverifiedWarning, stacklevel=3)
        return
    if model_file.is_own(tok):
        return
    if strict:
        raise TokenizerError(f"tokenizer {source} is not the one this run was trained with (it is in "
                             f"{model_file.path}); unset tokenizer to continue with the run's own")
    hint = ("leave --tokenizer out to use the checkpoint's own" if explicit and info.tokenizer_bytes is not None
            else f"pass --tokenizer with the run's own, {info.tokenizer_identity}")
    warnings.warn(f"{source} is not the tokenizer {model_file.path} was trained with; its text ids mean other words "
                  f"to this model ({hint})", TokenizerMismatchWarning, stacklevel=3)


def build_data(cfg: TrainConfig, model_cfg: ModelConfig, *, weights_from: str | os.PathLike | ModelFile | None = None,
               resuming: bool = False) -> TrainData:
    """Open ``cfg.data``'s training and validation splits (gREFER data first for GRES variants).

    ``weights_from``: the checkpoint the run's weights come from (the one it resumes, else
    ``cfg.init_from``, opened here when not given); its tokenizer reads the text, since the text embeddings
    were learnt for its ids. ``resuming``: ``weights_from`` is the run's own last checkpoint.
    """
    from lvg.train.data import open_dataset
    from lvg.train.domain import source_domain
    from lvg.train.torch_data import GroundingDataset

    if not cfg.data:
        raise ConfigError("no training data: set 'data' in the config or pass --data")
    gres = model_cfg.head.gres
    # The dataset first: a wrong path is the error to report, not the tokenizer missing beside it.
    train_source = open_dataset(cfg.data, split=cfg.train_split, prefer_gres=gres)
    domain = source_domain([train_source], spec=cfg.data, split=cfg.train_split)
    # Resuming with other ids under the trained embeddings would quietly spoil the run: an error (strict).
    tok = tokenizer_for_checkpoint(weights_from or cfg.init_from or None, cfg.data, model_cfg, cfg.tokenizer,
                                   strict=resuming)
    if cfg.stage == "pretrain":
        from lvg.train.pretrain import PretrainDataset

        # No grounding evaluation: the pretraining heads are scored by their own losses in the log.
        pre = PretrainDataset(train_source, train_source.instances, model_cfg=model_cfg, tokenizer=tok,
                              seed=cfg.seed, mlm_probability=cfg.mlm_probability)
        return TrainData(train=pre, source=None, tokenizer=tok, val_split=None, domain=domain)
    train_ds = GroundingDataset.for_model(train_source, model_cfg, tokenizer=tok, train=True, seed=cfg.seed,
                                          patch_shape=cfg.loss_patch_shape > 0, objects=cfg.loss_object_pick > 0,
                                          patch_cover=cfg.patch_shape_cover)
    val_source = open_dataset(cfg.data, split=cfg.val_split, prefer_gres=gres) if cfg.val_split else None
    return TrainData(train=train_ds, source=val_source, tokenizer=tok, val_split=cfg.val_split, domain=domain)
