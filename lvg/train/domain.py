"""A model's training domain from its training data: the words ``lvg train`` records in every checkpoint and
``lvg export`` / ``lvg annotate`` record in exported models.

The words are those of every sentence of the training split; the description defaults to
:data:`lvg.core.domain.SYNTH_DESCRIPTION` for data made by ``lvg data synth`` and to the dataset's name
otherwise. Checkpoints carry both in their header (:func:`domain_header`), so the torch backend names
unknown words and ``lvg export`` copies them; for checkpoints written before, ``lvg export`` reads the
training data the header names (``train_config``) whenever it is still where training read it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lvg.core.domain import SYNTH_DESCRIPTION, domain_metadata, vocabulary
from lvg.core.model_file import ModelFile
from lvg.errors import InputError

__all__ = ["TrainingDomain", "checkpoint_data", "domain_header", "source_domain", "training_domain"]


@dataclass(frozen=True)
class TrainingDomain:
    """What a dataset says about a model trained on it.

    Attributes:
        words: sorted lower-cased words of every training sentence. description: the default one-line
        description. sentences: how many sentences were read. source: the data spec(s) read, for messages.
    """

    words: list[str]
    description: str
    sentences: int
    source: str


def _is_synth(folder: Path) -> bool:
    for candidate in (folder, folder.parent):
        meta = candidate / "synth.json"
        try:
            return json.loads(meta.read_text(encoding="utf-8")).get("format") == "lvg-synth"
        except (OSError, ValueError, AttributeError):
            continue
    return False


def training_domain(spec: str, split: str = "train") -> TrainingDomain:
    """The words and default description of a training dataset named like ``lvg train --data`` names it.

    A bare ``lvg data synth`` folder reads both of its datasets (REFER and gREFER layouts); ``DIR:DATASET``
    reads that one.

    Raises:
        InputError: the data cannot be read, or its split has no sentence.
    """
    from lvg.train.data import SYNTH_DATASETS, open_dataset
    from lvg.train.run_data import data_path

    synth = _is_synth(data_path(spec))
    bare = Path(spec).is_dir()
    specs = [f"{spec}:{d}" for d in SYNTH_DATASETS if (Path(spec) / d).is_dir()] if synth and bare else [spec]
    return source_domain([open_dataset(s, split=split) for s in specs], spec=spec, split=split,
                         source=", ".join(specs), synth=synth)


def source_domain(sources: Iterable[Any], *, spec: str, split: str, source: str | None = None,
                  synth: bool | None = None) -> TrainingDomain:
    """The domain of opened datasets (``ReferSource`` s of one split) read from the data spec ``spec``;
    ``synth``: whether it is ``lvg data synth`` data (``None``: look).

    Raises:
        InputError: no sentence in them.
    """
    from lvg.train.run_data import data_path

    texts: list[str] = []
    names = []
    for src in sources:
        texts.extend(text for _, text in src.sentences_flat())
        names.append(src.name)
    if not texts:
        raise InputError(f"{spec}: the {split!r} split holds no sentence to take training words from")
    if synth is None:
        synth = _is_synth(data_path(spec))
    description = SYNTH_DESCRIPTION if synth else f"trained on {', '.join(names)}, {split} split"
    return TrainingDomain(words=vocabulary(texts), description=description, sentences=len(texts),
                          source=source or spec)


def domain_header(domain: TrainingDomain | None) -> dict[str, str]:
    """Checkpoint header entries for ``domain`` (``lvg.train_words``, ``lvg.description``); none for ``None``."""
    return {} if domain is None else domain_metadata(domain.words, domain.description)


def checkpoint_data(checkpoint: ModelFile) -> tuple[str, str] | None:
    """The ``(data spec, training split)`` a ``lvg train`` checkpoint was trained on, resolved to a place that
    exists: as written (relative to the current folder), else relative to the checkpoint's folder or one of
    its three parents; ``None`` when the header names no data or it is nowhere to be found."""
    raw = checkpoint.metadata.get("train_config")
    try:
        cfg = json.loads(raw) if raw else {}
        data, split = str(cfg.get("data") or ""), str(cfg.get("train_split") or "train")
    except (ValueError, AttributeError):
        return None
    if not data:
        return None
    first = data.split(":")[0]
    bases = [Path("."), *list(checkpoint.path.resolve().parents)[:4]]
    for base in bases:
        if (base / first).exists():
            return (data if base == Path(".") else str(base / data)), split
    return None
