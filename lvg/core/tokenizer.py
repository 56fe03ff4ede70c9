"""BEiT-3 text tokenizer: an XLM-R style sentencepiece model with fairseq's id layout (SPEC section 3.2).

Id mapping (what ``XLMRobertaTokenizer`` / fairseq do for BEiT-3's ``beit3.spm``):

====================  =====
token                 id
====================  =====
``<s>`` (bos)         0
``<pad>``             1
``</s>`` (eos)        2
``<unk>``             3
spm piece ``p >= 1``  p + 1
spm unk (``p == 0``)  3
====================  =====

A sequence is ``bos ids.. eos pad..`` of fixed length ``max_len``; the mask is True on bos, ids and eos.
Over-long text keeps its first ``max_len - 2`` word pieces and emits :class:`TextTruncatedWarning`.

Text is normalised before encoding: whitespace runs become one space, control / format characters
(Unicode Cc, Cf, e.g. zero-width spaces) and lone surrogates are removed, the ends are stripped. Text
that is empty after that raises :class:`lvg.errors.InputError`. Any other Unicode (emoji, RTL scripts)
is accepted; unknown pieces become ``<unk>``.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import unicodedata
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from lvg.config import ModelConfig
from lvg.core.atomic import atomic_output
from lvg.errors import ArtifactError, InputError, TokenizerError, first_line

__all__ = [
    "BOS_ID",
    "EOS_ID",
    "PAD_ID",
    "UNK_ID",
    "TextTruncatedWarning",
    "Tokenizer",
    "check_vocabulary",
    "normalize_text",
    "train_sentencepiece",
]

BOS_ID = 0
PAD_ID = 1
EOS_ID = 2
UNK_ID = 3
#: fairseq shifts every sentencepiece id by one to make room for <pad> at 1.
FAIRSEQ_OFFSET = 1


class TextTruncatedWarning(UserWarning):
    """A text had more word pieces than fit in ``max_len`` and was truncated."""


def normalize_text(text: str) -> str:
    """Collapse whitespace, drop control / format characters and lone surrogates, strip the ends."""
    if not isinstance(text, str):
        raise InputError(f"text must be a string, got {type(text).__name__}")
    chars: list[str] = []
    for ch in text:
        if ch.isspace():
            chars.append(" ")
            continue
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cf", "Cs"):
            continue
        chars.append(ch)
    return " ".join("".join(chars).split())


def _load_processor(data: bytes, name: str):
    import sentencepiece as spm

    proc = spm.SentencePieceProcessor()
    try:
        proc.LoadFromSerializedProto(data)
    except Exception:  # sentencepiece raises RuntimeError / OSError / internal errors on bad protos
        raise ArtifactError(f"not a sentencepiece model: {name}") from None
    if proc.GetPieceSize() < 4:
        raise ArtifactError(f"sentencepiece model has only {proc.GetPieceSize()} pieces: {name}")
    return proc


class Tokenizer:
    """Sentencepiece tokenizer with BEiT-3's (fairseq / XLM-R) id layout. Build with :meth:`from_file`
    or :meth:`from_bytes`."""

    def __init__(self, model_bytes: bytes, *, name: str = "<bytes>") -> None:
        self._bytes = bytes(model_bytes)
        if not self._bytes:
            raise ArtifactError(f"sentencepiece model is empty: {name}")
        self._sp = _load_processor(self._bytes, name)
        self._name = name

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """Load a ``.spm`` / ``.model`` sentencepiece file.

        Raises:
            ArtifactError: the file is missing, a directory, unreadable or not a sentencepiece model.
        """
        if not isinstance(path, (str, os.PathLike)):
            raise InputError(f"a tokenizer path must be a str or os.PathLike, got {type(path).__name__}")
        p = Path(path)
        try:
            st = p.stat()
            if stat.S_ISDIR(st.st_mode):
                raise ArtifactError(f"tokenizer model path is a directory: {p}")
            if not stat.S_ISREG(st.st_mode):
                raise ArtifactError(f"tokenizer model path is not a regular file: {p}")
            data = p.read_bytes()
        except FileNotFoundError:
            raise ArtifactError(f"tokenizer model not found: {p}") from None
        except OSError as exc:  # no permission, a name over the system's limit
            raise ArtifactError(f"cannot read tokenizer model {p}: {exc.strerror or exc}") from None
        return cls(data, name=str(p))

    @classmethod
    def from_bytes(cls, data: bytes) -> Tokenizer:
        """Load a serialized sentencepiece model (e.g. one embedded in an exported artifact)."""
        return cls(data)

    @property
    def model_bytes(self) -> bytes:
        """The serialized sentencepiece model."""
        return self._bytes

    @property
    def identity(self) -> str:
        """``"spm-sha256:<first 16 hex digits>"`` of the model bytes: stored in artifacts and checked on load."""
        return "spm-sha256:" + hashlib.sha256(self._bytes).hexdigest()[:16]

    @property
    def num_pieces(self) -> int:
        """Number of sentencepiece word pieces (``<unk>``, ``<s>`` and ``</s>`` among them)."""
        return int(self._sp.GetPieceSize())

    @property
    def vocab_size(self) -> int:
        """Size of the fairseq dictionary the ids index: sentencepiece pieces + 1 (for <pad>)."""
        return self.num_pieces + FAIRSEQ_OFFSET

    def __repr__(self) -> str:
        return f"Tokenizer({self.identity}, vocab_size={self.vocab_size})"

    def word_ids(self, text: str) -> list[int]:
        """Fairseq ids of the word pieces of ``text`` (no bos / eos), after :func:`normalize_text`.

        Raises:
            InputError: the text is empty after normalisation.
        """
        clean = normalize_text(text)
        if not clean:
            raise InputError("text is empty")
        return self._ids(clean)

    def _ids(self, clean: str) -> list[int]:
        pieces = self._sp.EncodeAsIds(clean)
        spm_unk = self._sp.unk_id()
        return [UNK_ID if p == spm_unk else p + FAIRSEQ_OFFSET for p in pieces]

    def _sequence(self, text: str, max_len: int) -> tuple[np.ndarray, np.ndarray, bool]:
        room = max_len - 2
        # Only a fixed budget of characters is ever read, whatever follows: normalising and tokenising cost
        # O(max_len) for any text (a text of one unknown character repeated is one word piece however long).
        head, more = _cut_long_text(text, room)
        ids = self.word_ids(head)
        truncated = len(ids) > room or more
        ids = ids[:room]
        seq = np.full(max_len, PAD_ID, dtype=np.int64)  # (max_len,)
        n = len(ids) + 2
        seq[0] = BOS_ID
        seq[1 : n - 1] = ids
        seq[n - 1] = EOS_ID
        mask = np.zeros(max_len, dtype=bool)
        mask[:n] = True
        return seq, mask, truncated

    def encode(self, text: str, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """Encode one text to a fixed length.

        Returns:
            ``(ids, mask)``: int64 (max_len,) ``bos ids.. eos pad..`` and bool (max_len,), True on
            bos / ids / eos.

        Raises:
            InputError: the text is empty after normalisation.

        Warns:
            TextTruncatedWarning: the text had more than ``max_len - 2`` word pieces.
        """
        seq, mask, truncated = self.encode_checked(text, max_len)
        if truncated:
            warn_truncated(text, max_len)
        return seq, mask

    def encode_checked(self, text: str, max_len: int) -> tuple[np.ndarray, np.ndarray, bool]:
        """:meth:`encode` that returns whether the text was truncated as a third value instead of warning."""
        _check_max_len(max_len)
        return self._sequence(text, max_len)

    def encode_batch(self, texts: Sequence[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """Encode several texts: int64 (B, max_len) ids and bool (B, max_len) mask.

        Emits at most one :class:`TextTruncatedWarning` per call (naming how many texts were cut).
        """
        _check_max_len(max_len)
        if isinstance(texts, str):
            raise TypeError("encode_batch takes a sequence of strings; use encode for one string")
        ids = np.full((len(texts), max_len), PAD_ID, dtype=np.int64)  # (B, L)
        masks = np.zeros((len(texts), max_len), dtype=bool)  # (B, L)
        cut: list[int] = []
        for i, text in enumerate(texts):
            ids[i], masks[i], truncated = self._sequence(text, max_len)
            if truncated:
                cut.append(i)
        if cut:
            warnings.warn(
                f"{len(cut)} of {len(texts)} texts truncated to {max_len - 2} word pieces "
                f"(max_text_len {max_len}); first: {_preview(texts[cut[0]])!r}",
                TextTruncatedWarning,
                stacklevel=2,
            )
        return ids, masks

    def decode(self, ids: Iterable[int]) -> str:
        """Text of fairseq ids (special ids and padding are skipped); for debugging and tests."""
        pieces = [int(i) - FAIRSEQ_OFFSET for i in ids if int(i) > UNK_ID]
        return self._sp.DecodeIds([p for p in pieces if 0 < p < self._sp.GetPieceSize()])


def check_vocabulary(tokenizer: Tokenizer, config: ModelConfig, *, what: str = "the tokenizer") -> None:
    """Refuse a tokenizer whose ids do not all fit the model's text embedding (another model's tokenizer).

    Raises:
        TokenizerError: ``tokenizer.vocab_size`` exceeds ``config.encoder.vocab_size``.
    """
    if tokenizer.vocab_size > config.encoder.vocab_size:
        raise TokenizerError(
            f"{what} has {tokenizer.vocab_size} ids but variant {config.name!r} embeds only "
            f"{config.encoder.vocab_size}: it is another model's; use that model's tokenizer, or a larger variant"
        )


#: A character ``str.isspace`` is False for (``re``'s ``\s`` is the same test for ``str`` patterns).
_NOT_SPACE = re.compile(r"\S")
#: Characters read per kept word piece before a long text is cut (see :func:`_cut_long_text`).
_SCAN_PER_PIECE = 64
#: Texts up to this many characters are never cut before tokenisation.
_SCAN_MIN = 8192


def _cut_long_text(text: str, room: int) -> tuple[str, bool]:
    """Cut an over-long text to ``(head, more)``: the tokenizer reads ``head`` only, so a text costs O(room)
    however long it is; ``more`` says whether anything but whitespace follows ``head``.

    Only the first ``room`` word pieces are kept, so a 10 MB string would otherwise be normalised and
    tokenised in full just to be thrown away. Texts up to ``max(_SCAN_MIN, 64 * room)`` characters (the
    budget) are not cut (``more`` is False). Longer ones are cut at the last whitespace before that limit (in
    its second half): sentencepiece segments whitespace-separated words independently, so the pieces of
    ``head`` are those the whole text starts with. Only a text without whitespace for thousands of
    characters (no natural language) is cut inside a "word", where the segmentation near the cut may differ.
    What follows the budget is never normalised or copied: a text that is only whitespace or control
    characters up to it is empty; ``more`` is found by a search that stops at the first character after the
    cut that is not whitespace (at once, for a text that goes on).
    """
    if not isinstance(text, str):
        return text, False
    limit = max(_SCAN_MIN, _SCAN_PER_PIECE * max(room, 1))
    if len(text) <= limit:
        return text, False
    cut = limit
    for i in range(limit - 1, limit // 2, -1):
        if text[i].isspace():
            cut = i
            break
    return text[:cut], _NOT_SPACE.search(text, cut) is not None


def warn_truncated(text: str, max_len: int) -> None:
    """The :class:`TextTruncatedWarning` for one text cut to ``max_len - 2`` word pieces, reported at the
    line that called the function calling this one (``encode``'s caller, say)."""
    warnings.warn(
        f"text truncated to {max_len - 2} word pieces (max_text_len {max_len}): {_preview(text)!r}",
        TextTruncatedWarning,
        stacklevel=3,
    )


def _check_max_len(max_len: int) -> None:
    if int(max_len) < 2:
        raise ValueError(f"max_len must be at least 2 (bos + eos), got {max_len}")


def _preview(text: str, limit: int = 40) -> str:
    clean = normalize_text(text[: 64 * limit])  # a bounded prefix: the preview of a huge text stays cheap
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


def train_sentencepiece(
    sentences: Iterable[str],
    out_path: str | os.PathLike[str],
    vocab_size: int = 400,
    seed: int = 0,
) -> Path:
    """Train a small BPE sentencepiece model (XLM-R's layout: unk 0, bos 1, eos 2) and write it.

    For synthetic data and tests (the real model uses BEiT-3's ``beit3.spm``). BPE rather than
    XLM-R's unigram because on a tiny corpus unigram collapses to near character level, while BPE
    learns whole-word pieces. Deterministic for a given corpus: one thread, no input sampling or
    shuffling.

    ``vocab_size`` bounds the resulting :attr:`Tokenizer.vocab_size` (sentencepiece pieces + 1), so the
    ids fit a model whose ``encoder.vocab_size`` is at least this. It is an upper bound
    (``hard_vocab_limit=False``): a value too large for the corpus gives a smaller model instead of an
    error. ``seed`` seeds sentencepiece's RNG for completeness (the settings above leave nothing random).

    Raises:
        InputError: the corpus is empty, or has more distinct characters than ``vocab_size`` can hold
            (every character needs a piece, plus the three specials).

    Returns:
        ``out_path`` as a ``Path``; the file is written atomically (temp file + rename).
    """
    import sentencepiece as spm

    clean = [normalize_text(s) for s in sentences]
    clean = [s for s in clean if s]
    if not clean:
        raise InputError("cannot train a tokenizer on an empty corpus")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    spm.set_random_generator_seed(int(seed))
    pieces = int(vocab_size) - FAIRSEQ_OFFSET
    # sentencepiece needs a piece per distinct character (after its NFKC normalisation) + 3 specials.
    n_chars = len({c for s in clean for c in unicodedata.normalize("NFKC", s).replace(" ", "\u2581")})
    if pieces < n_chars + 3:
        raise InputError(
            f"vocab_size {vocab_size} is too small for a corpus with {n_chars} distinct characters "
            f"(needs at least {n_chars + 3 + FAIRSEQ_OFFSET})"
        )
    try:
        _train_spm(spm, clean, buf, pieces)
    except RuntimeError as exc:  # sentencepiece's own checks; keep its first line
        raise InputError(f"sentencepiece training failed: {first_line(exc)}") from None
    try:
        with atomic_output(out) as tmp:
            tmp.write_bytes(buf.getvalue())
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc.strerror or exc}") from None
    return out


def _train_spm(spm, sentences: list[str], writer: io.BytesIO, vocab: int) -> None:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=writer,
        model_type="bpe",
        vocab_size=vocab,
        hard_vocab_limit=False,
        character_coverage=1.0,
        num_threads=1,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
