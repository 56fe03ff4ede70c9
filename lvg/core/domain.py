"""What a model was trained on: the words of its training sentences and a one-line description of its domain.

A grounding model answers every sentence, including sentences about things it never saw; these two entries
let the runtime say so. They travel in the artifact's metadata (ONNX ``metadata_props``, an engine's
sidecar, a checkpoint's safetensors header):

=====================  ===========================================================================
key                    value
=====================  ===========================================================================
``lvg.train_words``    JSON list of the lower-cased words of every training sentence, sorted
``lvg.description``    one line: the training domain, e.g. "synthetic-scene demo: ..."
=====================  ===========================================================================

Words are what :func:`words_of` finds: runs of letters and digits (inner apostrophes kept, "man's"),
lower-cased (``str.casefold``) after :func:`lvg.core.tokenizer.normalize_text`. A word of a request that
is not in the list is an *unknown word*: the model never read it in training, whatever its tokenizer
makes of it (a small tokenizer spells such words letter by letter).

``lvg export`` writes both entries (from the training data and ``--description``); ``lvg annotate`` adds
them to an existing artifact. A model without them reports no unknown words and no description.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lvg.core.tokenizer import normalize_text
from lvg.errors import ArtifactError, InputError

__all__ = [
    "KEY_DESCRIPTION",
    "KEY_TRAIN_WORDS",
    "SYNTH_DESCRIPTION",
    "Domain",
    "domain_metadata",
    "read_domain",
    "unknown_words",
    "vocabulary",
    "words_of",
]

KEY_TRAIN_WORDS = "lvg.train_words"
KEY_DESCRIPTION = "lvg.description"

#: The description ``lvg export`` / ``lvg annotate`` give a model trained on ``lvg data synth`` scenes.
SYNTH_DESCRIPTION = (
    "synthetic-scene demo: trained only on `lvg data synth` scenes (flat circles, squares, triangles, stars, "
    "diamonds and hexagons in six colours); not a model of photographs"
)

#: Bounds on what metadata may declare (checked before anything is built from it).
MAX_WORDS = 1_000_000
MAX_WORD_CHARS = 64
MAX_DESCRIPTION_CHARS = 300

# Letters and digits ([^\W_]: word characters without the underscore), with inner apostrophes ("man's").
_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")


def words_of(text: str) -> list[str]:
    """The words of ``text`` in order (duplicates kept): normalised, case-folded runs of letters and digits.

    Example: ``words_of("The man's  RED-cup!")`` -> ``["the", "man's", "red", "cup"]``.
    """
    return [w.replace("\u2019", "'") for w in _WORD.findall(normalize_text(text).casefold())]


def vocabulary(texts: Iterable[str]) -> list[str]:
    """The sorted set of :func:`words_of` every text (a model's training words)."""
    found: set[str] = set()
    for t in texts:
        found.update(words_of(t))
    return sorted(found)


def unknown_words(text: str, words: frozenset[str]) -> list[str]:
    """The words of ``text`` that are not in ``words``, each once, in the order they first occur."""
    seen: dict[str, None] = {}
    for w in words_of(text):
        if w not in words:
            seen.setdefault(w, None)
    return list(seen)


def _check_description(description: str) -> str:
    if not isinstance(description, str):
        raise InputError(f"a description must be a string, got {type(description).__name__}")
    line = " ".join(normalize_text(description).split())
    if not line:
        raise InputError("the description is empty")
    if len(line) > MAX_DESCRIPTION_CHARS:
        raise InputError(f"the description has {len(line)} characters; at most {MAX_DESCRIPTION_CHARS} (one line)")
    return line


def domain_metadata(words: Iterable[str] | None, description: str | None) -> dict[str, str]:
    """The metadata entries for ``words`` (any iterable of words; normalised, de-duplicated and sorted) and
    ``description`` (one line, whitespace collapsed); ``None`` leaves an entry out.

    Raises:
        InputError: an empty or over-long description, or words outside the bounds above.
    """
    meta: dict[str, str] = {}
    if words is not None:
        clean = vocabulary(words)
        if len(clean) > MAX_WORDS:
            raise InputError(f"{len(clean):,} training words; at most {MAX_WORDS:,}")
        meta[KEY_TRAIN_WORDS] = json.dumps([w[:MAX_WORD_CHARS] for w in clean], ensure_ascii=False)
    if description is not None:
        meta[KEY_DESCRIPTION] = _check_description(description)
    return meta


@dataclass(frozen=True)
class Domain:
    """A model's training domain as its metadata states it.

    Attributes:
        words: the lower-cased training words, ``None`` when the model records none (then no word is reported
            as unknown).
        description: the one-line domain description, ``None`` when absent.
    """

    words: frozenset[str] | None = None
    description: str | None = None

    def unknown_words(self, text: str) -> list[str] | None:
        """:func:`unknown_words` of ``text``, or ``None`` when the model records no training words."""
        return None if self.words is None else unknown_words(text, self.words)


def read_domain(meta: Mapping[str, str], where: str) -> Domain:
    """The :class:`Domain` in a model's metadata.

    Raises:
        ArtifactError: ``lvg.train_words`` is not a JSON list of short strings within :data:`MAX_WORDS`, or
            the description is not one line of at most :data:`MAX_DESCRIPTION_CHARS` characters.
    """
    words = None
    raw = meta.get(KEY_TRAIN_WORDS)
    if raw is not None:
        # Each word costs at least 3 characters of JSON ("a",), so a longer text cannot be a valid list.
        if len(raw) > MAX_WORDS * (MAX_WORD_CHARS + 4):
            raise ArtifactError(f"{where}: {KEY_TRAIN_WORDS} is too long ({len(raw):,} characters)")
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise ArtifactError(f"{where}: {KEY_TRAIN_WORDS} is not valid JSON") from None
        ok = isinstance(data, list) and len(data) <= MAX_WORDS
        if not ok or not all(isinstance(w, str) and 0 < len(w) <= MAX_WORD_CHARS for w in data):
            raise ArtifactError(f"{where}: {KEY_TRAIN_WORDS} must be a JSON list of words of 1-{MAX_WORD_CHARS} "
                                "characters")
        words = frozenset(data)
    description = meta.get(KEY_DESCRIPTION)
    if description is not None:
        if len(description) > MAX_DESCRIPTION_CHARS or "\n" in description or "\r" in description:
            raise ArtifactError(f"{where}: {KEY_DESCRIPTION} must be one line of at most {MAX_DESCRIPTION_CHARS} "
                                "characters")
        description = description.strip() or None
    return Domain(words=words, description=description)
