"""A model's training domain from its training data: the words ``lvg export`` and ``lvg annotate`` record.

The words are those of every sentence of the training split; the description defaults to
:data:`lvg.core.domain.SYNTH_DESCRIPTION` for data made by ``lvg data synth`` and to the dataset's name
otherwise. A checkpoint written by ``lvg train`` names its training data (``train_config`` in its header),
so ``lvg export`` finds the words without being told whenever that data is still where training read it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lvg.core.domain import SYNTH_DESCRIPTION, vocabulary
from lvg.core.model_file import ModelFile
from lvg.errors import InputError

__all__ = ["TrainingDomain", "checkpoint_data", "training_domain"]


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

    folder = data_path(spec)
    synth = _is_synth(folder)
    bare = Path(spec).is_dir()
    specs = [f"{spec}:{d}" for d in SYNTH_DATASETS if (Path(spec) / d).is_dir()] if synth and bare else [spec]
    texts: list[str] = []
    names = []
    for s in specs:
        source = open_dataset(s, split=split)
        texts.extend(text for _, text in source.sentences_flat())
        names.append(source.name)
    if not texts:
        raise InputError(f"{spec}: the {split!r} split holds no sentence to take training words from")
    description = SYNTH_DESCRIPTION if synth else f"trained on {', '.join(names)}, {split} split"
    return TrainingDomain(words=vocabulary(texts), description=description, sentences=len(texts),
                          source=", ".join(specs))


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
