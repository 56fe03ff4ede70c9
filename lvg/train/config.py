"""Training configuration: one frozen dataclass, loadable from JSON or TOML with typed validation.

This module is torch-free (the CLI parses configs before importing torch). Example TOML::

    variant = "lvg-tiny"
    data = "data/refcoco-synth"
    steps = 2000
    batch_size = 16
    lr = 1e-4
    contrastive = "pos_margin"

Unknown keys, wrong types and out-of-range values are :class:`~lvg.errors.ConfigError` with the field
named. Every field has a default, so a file only lists what it changes; ``base = "other.toml"`` starts from
another config of the same folder (:meth:`TrainConfig.from_file`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lvg.config import KernelImpl
from lvg.config.typed import dataclass_from_dict, json_object
from lvg.errors import ConfigError

Amp = Literal["off", "bf16", "fp16"]
ShapeFeatures = Literal["tokens", "branch"]
Contrastive = Literal["pos_margin", "infonce", "triplet", "arcface"]
Schedule = Literal["cosine", "constant"]
Task = Literal["ris", "rec", "gres"]
Stage = Literal["ground", "pretrain"]
InitParts = Literal["all", "backbone", "shared", "grow", "common", "resample"]
ExpressionKind = Literal["attribute", "position", "relation", "multi", "none"]


def data_parts(spec: str) -> list[str]:
    """The datasets a ``data`` spec names: several separated by commas are read as one
    (:mod:`lvg.train.combined`); a path that exists is one dataset whatever its name holds."""
    return spec.split(",") if "," in spec and not Path(spec).exists() else [spec]


@dataclass(frozen=True)
class CurriculumStep:
    """Sentences of ``kind`` join the training data once ``start`` (a fraction of the run's steps) is reached.

    Kinds are those of the synthetic expressions (:func:`lvg.train.synth.expression_kind`); every
    sentence of a dataset without such templates counts as ``"attribute"``.
    """

    kind: ExpressionKind
    start: float

    def __post_init__(self) -> None:
        if not 0 <= self.start < 1:
            raise ConfigError(f"curriculum start of {self.kind!r} must lie in [0, 1), got {self.start}")

#: Fields whose change between a checkpoint and a resumed run breaks "resume continues exactly".
EXACTNESS_FIELDS = (
    "variant", "data", "train_split", "steps", "epochs", "batch_size", "lr", "backbone_lr_mult", "weight_decay",
    "warmup_steps", "schedule", "min_lr_ratio", "grad_clip", "amp", "loss_bce", "loss_dice", "loss_contrastive",
    "contrastive", "gamma", "tau", "loss_no_target", "loss_no_target_mask", "loss_direction", "loss_attribute_words",
    "loss_direction_latent", "loss_patch_shape", "patch_shape_from", "patch_shape_cover", "loss_object_pick",
    "loss_shape_word", "seed", "pretrained", "tokenizer", "stage", "sentences_per_image", "curriculum",
    "loss_attributes", "loss_centre", "loss_mlm", "mlm_probability", "global_batch",
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs besides its output directory.

    Length of the run: ``steps`` optimizer steps if ``steps > 0``, else ``epochs`` passes over the training
    split (one sentence sampled per referred object per pass, as the data reader defines a sample).
    ``batch_size`` is per process; under ``torchrun`` the global batch is ``batch_size * world_size``.
    ``global_batch > 0`` fixes the global batch instead, whatever the number of processes: each takes
    ``global_batch / world_size`` (:meth:`for_world`; it must divide). ``micro_batch > 0`` caps the samples
    of one forward pass: a process's batch runs in pieces of at most that many, their gradients accumulated
    into one step (:mod:`lvg.train.accumulate`; the contrastive term's negatives come from the piece).
    ``lr`` applies to the new parts (latent expressions, heads); the BEiT-3 backbone (``beit3.*``) trains at
    ``lr * backbone_lr_mult``. ``lr = None`` means the paper's value: 1e-4, halved to 5e-5 for GRES
    variants (Appendix B.2). The schedule is a linear warmup over ``warmup_steps`` from 0, then cosine
    decay to ``lr * min_lr_ratio`` at the last step (``schedule = "constant"`` keeps ``lr`` after warmup).

    Loss (SPEC 3.6): ``loss_contrastive * L_cont + loss_bce * BCE + loss_dice * Dice (+ loss_no_target *
    L_nt for GRES)``; ``contrastive`` picks Eq. 8's positive-margin loss or a Table 6 alternative; ``gamma``
    is its margin (also the triplet / ArcFace margin), ``tau`` its temperature. ``loss_no_target_mask`` weighs
    a no-target sample's BCE and Dice (its target is the empty mask) against 1 for a sample with a target; 0
    leaves "nothing is referred" to the no-target head alone. ``loss_direction > 0`` adds
    an auxiliary term, that weight times the cross-entropy of a linear classifier that names the sentence's
    direction word (left, right, up, down or none) from ``t_o`` (:mod:`lvg.train.words`), so that the
    expression embedding the masks are made from holds the direction word; 0 (the paper) leaves it out.
    ``loss_attribute_words > 0`` likewise adds classifiers that name the target phrase's colour, shape, size
    and texture words from ``t_o`` (the mean of their cross-entropies at that weight).
    ``loss_direction_latent > 0`` asks the same direction classifier to name the word from every latent
    embedding ``z_o^i`` too (the mean of their cross-entropies at that weight): Eq. 9 averages the latent
    expressions' maps with the input expression's, so a latent that does not hold the direction blurs it.
    ``loss_patch_shape > 0`` adds a linear classifier that names, from each of the encoder's last-layer patch
    tokens on an object, that object's shape (the mean cross-entropy over object patches at that weight;
    :mod:`lvg.train.patch_labels`): a shape word can only select what the features the masks are made from
    hold, and masks alone teach the tokens colour and texture but little outline. Synthetic data only.
    ``patch_shape_from = "branch"`` has that classifier read the shape branch's patch-grid features instead
    (``HeadConfig.shape_branch``, which joins ``F^V`` directly): convolutions over the pixels, which learn an
    outline where the encoder's tokens did not.
    ``patch_shape_cover`` is the share of a patch an object must cover more than for that loss to label the
    patch with its shape (the object covering most of the patch; :data:`lvg.train.patch_labels.MIN_COVER`, 0.3,
    by default): with large patches, a small object on a patch corner covers little of each patch, and at 0.3
    some small objects label none (how many, and what 0.1 bought: ``MODEL_CARD.md``).
    ``loss_object_pick > 0`` adds that weight times an object-level cross-entropy for every sentence with one
    target (synthetic data only: it needs every object's mask): each expression's map is averaged over each
    object's pixels and the image's objects compete for the target (:func:`lvg.train.losses.object_pick_loss`).
    BCE and Dice barely pull on a confidently wrong pick: the map's sigmoid is flat far from zero, where Dice's
    gradient vanishes, and BCE spreads its pull over every pixel of the map. This loss gives each wrong pick
    one unit of gradient however small the objects are, and none to a pick that is right by a margin.
    ``loss_shape_word > 0`` trains the shape match's word classifier (``HeadConfig.shape_match``) at that weight:
    the cross-entropy of the sentence's shape word (none, or which) as the target phrase names it.

    ``eval_every`` / ``save_every`` / ``log_every`` count optimizer steps (0 disables periodic evaluation;
    a checkpoint and, with a validation split and ``final_eval``, an evaluation always happen at the end:
    ``final_eval = False`` skips that pass for a run that is one step of a longer recipe).
    ``eval_max_sentences`` caps periodic evaluations (0 = every sentence); the final one uses all.
    ``eval_text_swap`` adds the text-swap control to every evaluation (``lvg eval --text-swap``: the same
    metrics with each image paired with another image's sentence; a second forward pass per batch). A
    from-scratch model's loss can fall for a long time while its masks ignore the sentence; this logs
    whether they do. ``best.safetensors`` is still chosen on the main metric.
    ``task = None`` evaluates GRES for GRES variants and RIS (+ REC accuracy) otherwise.
    ``tokenizer = None`` uses the tokenizer the run's weights were trained with (the resumed checkpoint's,
    else ``init_from``'s), else looks for the variant's tokenizer file (e.g. ``synthetic.spm``) in the data
    directory and its parents. ``pretrained``: optional official BEiT-3 ``.pth`` loaded into the backbone.
    ``init_from``: optional Latent-VG checkpoint (``.safetensors``, e.g. another run's ``last``) of the same
    variant whose model weights start this run; the optimizer, schedule, step count and data order start
    fresh. It fine-tunes a trained model, or gives a finished run a second schedule, as a new run that
    ``--resume`` continues like any other. Exclusive with ``pretrained``. ``init_parts = "backbone"`` takes
    only the encoder (``beit3.*``) from it, so that a pretraining run (``stage = "pretrain"``) of one
    variant starts the grounding runs of its twins (e.g. ``lvg-s-nolatent``) on the same footing;
    ``"shared"`` takes every tensor the model has (each must be in the file, shape for shape) and leaves out
    the file's other modules, so a latent-off twin continues a latent-on run's weights. ``"grow"`` is the
    other way round: every tensor of the file must fit the model, and the modules the model adds keep their
    initialisation (``lvg-s-xy`` from an ``lvg-s`` run: everything but its position features). ``"common"`` is
    both at once (``lvg-s-xy-nolatent`` from an ``lvg-s`` run): the tensors the two share by name, the whole
    encoder among them. ``"resample"`` takes every tensor of the same modules at another patch or input size,
    the patch kernel and position table resized (:mod:`lvg.train.init_weights`).

    ``stage = "pretrain"`` trains the encoder alone on dense targets (:mod:`lvg.train.pretrain`): per
    patch, the shape, colour, size and texture of the object covering it (or background) and that object's
    centre; per text token, the masked word pieces (``mlm_probability`` of the words are replaced by
    ``<unk>``) given the image. Its losses are ``loss_attributes * CE + loss_centre * smooth-L1 + loss_mlm *
    CE``. It needs the synthetic data's per-object attributes; the grounding losses are not used.

    Grounding batches: with ``sentences_per_image = K > 1`` a batch holds ``batch_size / K`` images with
    K sentences each, about different targets where the image has them, so that a mask that ignores the
    sentence is wrong within the batch. Samples are then drawn with replacement per step (a pure function
    of ``seed`` and the step, so resuming stays exact); ``epochs`` counts ``len(train split) /
    batch_size`` steps. ``curriculum`` delays expression kinds (``CurriculumStep``: position and relation
    expressions after the attribute ones, say); kinds it does not name are used from step 0.
    ``threads`` sets the process's intra-op threads (0: PyTorch's default). ``amp = "bf16"`` runs the
    forward pass under bfloat16 autocast on CPUs and GPUs alike; ``"fp16"`` needs CUDA.
    """

    variant: str = "lvg-tiny"
    data: str = ""
    train_split: str = "train"
    val_split: str | None = "val"
    task: Task | None = None
    steps: int = 0
    epochs: int = 0
    batch_size: int = 8
    eval_batch_size: int = 8
    lr: float | None = None
    backbone_lr_mult: float = 0.1
    weight_decay: float = 0.01
    warmup_steps: int = 0
    schedule: Schedule = "cosine"
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    amp: Amp = "off"
    loss_bce: float = 2.0
    loss_dice: float = 0.5
    loss_contrastive: float = 1.0
    contrastive: Contrastive = "pos_margin"
    gamma: float = 0.2
    tau: float = 0.1
    loss_no_target: float = 0.5
    loss_no_target_mask: float = 1.0
    loss_direction: float = 0.0
    loss_attribute_words: float = 0.0
    loss_direction_latent: float = 0.0
    loss_patch_shape: float = 0.0
    patch_shape_from: ShapeFeatures = "tokens"
    patch_shape_cover: float = 0.3
    loss_object_pick: float = 0.0
    loss_shape_word: float = 0.0
    eval_every: int = 0
    eval_max_sentences: int = 0
    eval_text_swap: bool = False
    final_eval: bool = True
    save_every: int = 500
    log_every: int = 10
    seed: int = 0
    num_workers: int = 0
    pretrained: str | None = None
    init_from: str | None = None
    tokenizer: str | None = None
    kernel_impl: KernelImpl = "auto"
    find_unused_parameters: bool = False
    init_parts: InitParts = "all"
    stage: Stage = "ground"
    sentences_per_image: int = 1
    curriculum: tuple[CurriculumStep, ...] = ()
    loss_attributes: float = 1.0
    loss_centre: float = 10.0
    loss_mlm: float = 1.0
    mlm_probability: float = 0.3
    threads: int = 0
    global_batch: int = 0
    micro_batch: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.steps < 0 or self.epochs < 0:
            problems.append("steps and epochs must be >= 0")
        for name in ("batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if self.lr is not None and not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        for name in ("backbone_lr_mult", "weight_decay", "min_lr_ratio", "grad_clip", "loss_bce", "loss_dice",
                     "loss_contrastive", "gamma", "loss_no_target", "loss_no_target_mask", "loss_direction",
                     "loss_attribute_words", "loss_direction_latent", "loss_patch_shape", "loss_object_pick",
                     "loss_shape_word"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.patch_shape_cover < 1:
            problems.append(f"patch_shape_cover must lie in (0, 1), got {self.patch_shape_cover}")
        if self.min_lr_ratio > 1:
            problems.append(f"min_lr_ratio must be <= 1, got {self.min_lr_ratio}")
        if not self.tau > 0:
            problems.append(f"tau must be > 0, got {self.tau}")
        if self.sentences_per_image < 1 or self.batch_size % self.sentences_per_image:
            problems.append(f"sentences_per_image must be >= 1 and divide batch_size {self.batch_size}, got "
                            f"{self.sentences_per_image}")
        if len({c.kind for c in self.curriculum}) != len(self.curriculum):
            problems.append("curriculum names a kind twice")
        if not 0 < self.mlm_probability < 1:
            problems.append(f"mlm_probability must lie in (0, 1), got {self.mlm_probability}")
        for name in ("loss_attributes", "loss_centre", "loss_mlm"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_every", "eval_max_sentences", "save_every", "log_every", "num_workers",
                     "threads", "global_batch", "micro_batch"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0")
        if self.pretrained and self.init_from:
            # Both would set the backbone; which one wins would be a silent rule.
            problems.append("pretrained and init_from are exclusive (init_from already holds a backbone)")
        if problems:
            raise ConfigError("invalid training config: " + "; ".join(problems))

    # -- derived values ---------------------------------------------------------------------------

    def resolved_lr(self, gres: bool) -> float:
        """``lr``, or the paper's default (1e-4; 5e-5 for GRES) when unset."""
        if self.lr is not None:
            return self.lr
        return 5e-5 if gres else 1e-4

    def for_world(self, world_size: int) -> TrainConfig:
        """This config for ``world_size`` processes: with ``global_batch`` set, ``batch_size`` becomes each
        process's share of it (a :class:`ConfigError` if it does not divide); otherwise unchanged."""
        if not self.global_batch:
            return self
        if self.global_batch % world_size:
            raise ConfigError(f"global_batch {self.global_batch} does not divide among {world_size} processes; "
                              "use a number of processes that divides it")
        per = self.global_batch // world_size
        return self if per == self.batch_size else self.replace(batch_size=per)

    def accumulation(self) -> int:
        """Forward passes per optimizer step in each process (1 without ``micro_batch``)."""
        return -(-self.batch_size // self.micro_batch) if self.micro_batch else 1

    def resolved_task(self, gres: bool) -> str:
        return self.task if self.task is not None else ("gres" if gres else "ris")

    # -- (de)serialisation ------------------------------------------------------------------------

    def replace(self, **changes: Any) -> TrainConfig:
        """A validated copy with fields replaced (``None`` values in ``changes`` are NOT skipped)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any, where: str = "train config") -> TrainConfig:
        return dataclass_from_dict(cls, data, where)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls.from_dict(json_object(text, "train config"))

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """Load a ``.json`` or ``.toml`` file (decided by the suffix; anything else is tried as JSON).

        A file may name another config of its own folder with ``base = "other.toml"``: that file's keys are
        read first and this file's keys replace them one by one (a list such as ``curriculum`` is replaced
        whole). Bases chain; a chain that comes back to a file is refused.
        """
        return cls.from_dict(_read_layered(Path(path), ()), where=str(path))


#: The key that names a config's base file (not a field: it is consumed while reading).
BASE_KEY = "base"


def _read_layered(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """The keys of ``path`` over those of its ``base`` chain; ``chain`` holds the files already read."""
    data = _read_mapping(path)
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    # Only a bare file name: a name read from a config never reaches outside the config's folder.
    if not isinstance(base, str) or not base or Path(base).name != base or base in (".", ".."):
        raise ConfigError(f"{path}: {BASE_KEY} must be the file name of a config in the same folder, "
                          f"got {base!r}")
    seen = (*chain, path.resolve())
    parent = path.parent / base
    if parent.resolve() in seen:
        names = " -> ".join(p.name for p in (*seen, parent))
        raise ConfigError(f"{path}: the {BASE_KEY} chain comes back to a file it has read: {names}")
    return {**_read_layered(parent, seen), **data}


def _read_mapping(path: Path) -> dict[str, Any]:
    """One config file's top-level keys, unmerged."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read train config {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text: {exc}") from None
    if path.suffix.lower() != ".toml":
        return json_object(text, str(path))
    try:
        import tomllib
    except ImportError:  # Python 3.10
        raise ConfigError(f"{path}: TOML configs need Python 3.11+; use a .json config") from None
    try:
        return tomllib.loads(text)  # a TOML document is always a table
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
