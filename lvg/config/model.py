"""The model's configuration: frozen dataclasses for the encoder, the latent expressions, the heads and the
preprocessing, and the :class:`ModelConfig` that holds them (what travels inside every model file)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from lvg.config.typed import dataclass_from_dict, json_object
from lvg.errors import ConfigError

ThresholdRule = Literal["mean", "none", "topk"]
ConceptInit = Literal["orthogonal", "normal"]
KernelImpl = Literal["reference", "triton", "auto"]
ClassPool = Literal["cls", "cls_mean"]
PositionInit = Literal["random", "sincos"]

#: Input pixels per probability-map cell (``HeadConfig.map_stride``): the paper's 1/4 scale, or 1/2.
MAP_STRIDES = (4, 2)


@dataclass(frozen=True)
class EncoderConfig:
    """BEiT-3 multiway encoder. Defaults are BEiT-3 base.

    ``init_std`` and ``position_init`` only matter for weights that no checkpoint overwrites (training from
    scratch): ``init_std = 0`` keeps PyTorch's default initialisation; ``init_std > 0`` draws every linear
    layer and embedding of the model from a normal distribution of that std truncated at 2 std, with zero
    biases (BEiT-3's and ViT's scheme, 0.02 there). ``position_init = "sincos"`` starts the patch rows of
    the vision position table as a fixed 2-D sine-cosine code (MAE's), so that a patch's row and column are
    readable from its token before anything is learnt; the table stays trainable.
    """

    img_size: int = 480
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    ffn_dim: int = 3072
    vocab_size: int = 64010
    max_text_positions: int = 1024
    layernorm_eps: float = 1e-5
    dropout: float = 0.0
    drop_path_rate: float = 0.0
    init_std: float = 0.0
    position_init: PositionInit = "random"

    @property
    def grid(self) -> int:
        """Patches per side (30 for 480 / 16)."""
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    @property
    def vision_positions(self) -> int:
        """Rows of the vision position table: patches + class token + fairseq offset 2 (903 for base)."""
        return self.num_patches + 3


@dataclass(frozen=True)
class LatentConfig:
    """Latent expressions (paper Sec. 3.1-3.2). ``enabled=False`` is Table 4's "No Latent Exps"."""

    enabled: bool = True
    lengths: tuple[int, ...] = (4, 10)
    dropout: tuple[float, ...] = (0.2, 0.15)
    subject_distributor: bool = True
    concept_injector: bool = True
    num_concepts: int = 100
    concept_init: ConceptInit = "orthogonal"
    threshold: ThresholdRule = "mean"
    topk: int = 30
    gumbel_tau: float = 1.0
    # Not in the paper: a LayerNorm on the patches and the attribute tokens entering the VCI, so
    # its dot products stay bounded. BEiT-3's hidden states enter the paper's VCI as they are; a model trained
    # from scratch grows token norms in the thousands, and then the attribute softmax is a hard assignment
    # that passes no gradient (benchmarks/bench_vci_saturation.py).
    vci_norm: bool = False
    # Not in the paper: a learned gain on the concept tokens, starting at this value (0: none). With vci_norm
    # the concept logits are the concept's norm times a cosine, at most about 1 for unit-norm concepts, so the
    # concept softmax starts near uniform; a gain of 10 is cosine attention's usual start (Swin V2).
    concept_gain: float = 0.0

    @property
    def num_expressions(self) -> int:
        return len(self.lengths) if self.enabled else 0

    @property
    def num_tokens(self) -> int:
        """Tokens the latent expressions add to the sequence: class + subject + attributes each."""
        return sum(k + 2 for k in self.lengths) if self.enabled else 0

    # The latent tokens are the expressions one after another, each [z_cls, s, a_1..a_k] (SPEC 3.2). The
    # offsets below (within the latent tokens) are that layout's only definition.

    @property
    def class_slots(self) -> tuple[int, ...]:
        """Offset of each expression's class token ``z_cls``: where the expression starts."""
        starts, pos = [], 0
        for k in self.lengths:
            starts.append(pos)
            pos += k + 2
        return tuple(starts)

    @property
    def subject_slots(self) -> tuple[int, ...]:
        """Offset of each expression's subject token ``s`` (right after its class token)."""
        return tuple(start + 1 for start in self.class_slots)

    @property
    def attribute_slots(self) -> tuple[int, ...]:
        """Offsets of every attribute token ``a``, expression after expression (``N_a = sum(k)`` of them)."""
        return tuple(i for start, k in zip(self.class_slots, self.lengths) for i in range(start + 2, start + 2 + k))


@dataclass(frozen=True)
class HeadConfig:
    """Feature pyramid + deconvolution pixel decoder, class-token MLPs and the GRES empty head.

    ``class_pool`` is what the class-token MLPs read: ``"cls"`` (the paper) is each expression's class
    token; ``"cls_mean"`` adds the mean of that expression's own tokens (the valid words of the input
    expression; subject + attribute tokens of a latent expression). A class token only carries the sentence
    once its attention has learned to gather it, which BEiT-3's pretraining provides; trained from scratch
    it can stay text-independent, and ``t_o`` then collapses into a constant. The mean gives the heads the
    words from the first step. From scratch on lvg-s it did not make the masks follow the sentence in 600-step
    pilots (MODEL_CARD.md, "What was tried": the bag-of-words class token), so every shipped variant keeps the
    paper's ``"cls"``.

    ``pixel_positions`` adds where each pixel is (x, y and sine-cosine terms of them) to ``F^V`` through a
    1x1 convolution, so that ``F^V . e_j`` can prefer an object by its position. The
    decoder's convolutions and group norms are translation-equivariant; without it the mask can only tell
    two objects apart by what the encoder wrote into their features. Off in the paper's variants.

    ``image_stem > 0`` adds a shallow convolutional stem over the input image (two stride-2 3x3 convolutions,
    this many channels) whose 1/4-scale features join ``F^V`` through a 1x1 projection, so a mask's edge
    can follow the pixels rather than a patch grid's upsampling (at patch 32 an object of the synthetic
    scenes is two or three patches wide). 0 (off) in the paper's variants; the projection starts at zero,
    so a model grown from weights without it starts with their function.

    ``stem_tokens`` (needs ``image_stem``) also feeds the stem's features to the encoder: stride-2 3x3
    convolutions from the stem's scale (1/``map_stride``) down to the patch grid, added to each patch token
    through a 1x1 projection that starts at zero. A patch token is otherwise one linear map of its pixels, and
    which object a sentence names is chosen from those tokens (at patch 32 a synthetic object straddles two or
    three patches). Off in the paper's variants. The convolutions double their channels per halving up to
    ``stem_tokens_width`` (0: the token width), which bounds the parameters they add.

    ``map_stride`` is how many input pixels one cell of the probability map spans: 4 (the paper's 1/4-scale
    ``F^V``) or 2, which needs ``image_stem``: ``F^V`` at 1/2 scale is the 1/4-scale map upsampled bilinearly
    plus the stem's features at 1/2 scale (its second convolution at stride 1), so the stem draws the edges at
    twice the resolution and no new weight is added (a model grown from a stride-4 run starts close to its
    function). With ``stem_tokens`` the patch tokens then read the stem at 1/2 scale too (one convolution
    more: a stride-4 ``stem_tokens`` run's weights do not carry over to it).

    ``mask_refine > 0`` (needs ``image_stem``) adds a small convolutional refiner with this many channels
    (:class:`lvg.modeling.mask_refiner.MaskRefiner`) that reads each expression's logit map with the stem's
    features at the map's scale and adds a correction, starting at zero, so where an object ends can follow
    the pixels non-linearly. 0 (off) in the paper's variants.

    ``shape_branch > 0`` adds :class:`lvg.modeling.shape_branch.ShapeBranch`: stride-2 convolutions from the
    image to the patch grid (up to this many channels) whose features join the pixel decoder's 1/8-scale
    features through a 1x1 projection that starts at zero, so what they hold about the object a pixel lies on,
    its outline above all, reaches ``F^V`` without passing through the encoder. A classifier of the object's
    shape on them (``TrainConfig.patch_shape_from = "branch"``) gives them that content. 0 (off) in the
    paper's variants. ``shape_branch_tokens`` (needs ``shape_branch``) also adds them to the patch tokens
    through a projection starting at zero, so the encoder can match a shape word as it matches a colour word.
    ``shape_branch_context`` (needs ``shape_branch``) adds that many residual blocks at the patch grid to the
    branch, each widening what a patch's features see by 128 pixels (a patch inside a large object sees its
    outline); each starts as the identity. 0 in every variant before ``-ctx``. ``shape_branch_logits`` (needs
    ``shape_branch``) adds to each expression's map the branch's patch-grid features weighed by a linear map of
    its embedding (starting at zero), upsampled: a shape word selects the branch's shape without the decoder.
    ``shape_branch_logits_gate`` (needs ``shape_branch_logits``) multiplies that term by the map's own detached
    sigmoid, as candidate-relative positions are gated: it re-ranks the objects the map covers and leaves the
    background and the edges to the rest of the map.
    ``shape_match`` (needs ``shape_branch``) is a number of shape classes ``S`` (0: off): it adds
    :class:`lvg.modeling.shape_match.ShapeMatch`, which names the sentence's shape word from its text tokens and
    the shape on each patch from the branch, and lowers each map where the two disagree (a gain starting at zero).

    ``candidate_positions`` adds :class:`lvg.modeling.candidate_position.CandidatePosition`: each pixel's
    offset from the centroid of what the expression's own map covers (in units of its spread), weighed by
    two coefficients from the expression's embedding that start at zero, added to that map's logits where the
    map is on. "The leftmost star" is the left of the stars, not of the image. Off in the paper's variants.
    """

    pyramid_layers: tuple[int, ...] = (4, 6, 8, 12)
    neck_dim: int = 768
    fuse_kernel: int = 3
    embed_dim: int = 768
    mlp_hidden: int = 3072
    gres: bool = False
    empty_heads: int = 12
    class_pool: ClassPool = "cls"
    pixel_positions: bool = False
    image_stem: int = 0
    stem_tokens: bool = False
    stem_tokens_width: int = 0
    map_stride: int = 4
    mask_refine: int = 0
    candidate_positions: bool = False
    shape_branch: int = 0
    shape_branch_tokens: bool = False
    shape_branch_context: int = 0
    shape_branch_logits: bool = False
    shape_branch_logits_gate: bool = False
    shape_match: int = 0


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything the torch-free runtime needs to turn (image, text) into model inputs and back."""

    size: int = 480
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    max_text_len: int = 40
    tokenizer: str = "beit3.spm"
    mask_threshold: float = 0.35
    no_target_threshold: float = 0.5


@dataclass(frozen=True)
class ModelConfig:
    """A complete Latent-VG model. ``name`` is the variant it came from (informational)."""

    name: str = "custom"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    latent: LatentConfig = field(default_factory=LatentConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    kernel_impl: KernelImpl = "auto"

    def __post_init__(self) -> None:
        enc, lat, head, pre = self.encoder, self.latent, self.head, self.preprocess
        problems = []
        if enc.img_size % enc.patch_size:
            problems.append(f"img_size {enc.img_size} is not a multiple of patch_size {enc.patch_size}")
        up = enc.patch_size // 4
        if enc.patch_size < 4 or up & (up - 1):
            problems.append(f"patch_size {enc.patch_size} must be 4 x a power of two (the map is 1/4 scale)")
        if enc.embed_dim % enc.num_heads:
            problems.append(f"embed_dim {enc.embed_dim} not divisible by num_heads {enc.num_heads}")
        if pre.size != enc.img_size:
            problems.append(f"preprocess.size {pre.size} != encoder.img_size {enc.img_size}")
        if len(lat.lengths) != len(lat.dropout):
            problems.append(f"latent.lengths {lat.lengths} and latent.dropout {lat.dropout} differ in length")
        if lat.enabled and not lat.lengths:
            problems.append("latent.enabled needs at least one expression length")
        if any(k < 1 for k in lat.lengths):
            problems.append(f"latent.lengths must be positive, got {lat.lengths}")
        if lat.concept_gain < 0:
            problems.append(f"latent.concept_gain must be 0 (none) or positive, got {lat.concept_gain}")
        if not head.pyramid_layers or any(not 1 <= i <= enc.depth for i in head.pyramid_layers):
            problems.append(f"head.pyramid_layers {head.pyramid_layers} must lie in 1..{enc.depth}")
        if head.gres and enc.embed_dim % head.empty_heads:
            problems.append(f"embed_dim {enc.embed_dim} not divisible by head.empty_heads {head.empty_heads}")
        if head.image_stem < 0:
            problems.append(f"head.image_stem must be 0 (off) or a channel count, got {head.image_stem}")
        if head.stem_tokens and not head.image_stem:
            problems.append("head.stem_tokens reads the image stem: it needs head.image_stem > 0")
        if head.shape_branch < 0:
            problems.append(f"head.shape_branch must be 0 (off) or a channel count, got {head.shape_branch}")
        if head.shape_branch_tokens and not head.shape_branch:
            problems.append("head.shape_branch_tokens reads the shape branch: it needs head.shape_branch > 0")
        if head.shape_branch_context < 0 or (head.shape_branch_context and not head.shape_branch):
            problems.append(f"head.shape_branch_context must be 0 or a block count with head.shape_branch > 0, "
                            f"got {head.shape_branch_context}")
        if head.shape_branch_logits and not head.shape_branch:
            problems.append("head.shape_branch_logits reads the shape branch: it needs head.shape_branch > 0")
        if head.shape_branch_logits_gate and not head.shape_branch_logits:
            problems.append("head.shape_branch_logits_gate gates the branch's logits: it needs "
                            "head.shape_branch_logits")
        if head.shape_match < 0 or (head.shape_match and not head.shape_branch):
            problems.append(f"head.shape_match must be 0 or a number of shape classes with head.shape_branch > 0, "
                            f"got {head.shape_match}")
        if head.stem_tokens_width < 0:
            problems.append(f"head.stem_tokens_width must be 0 (the token width) or a channel count, "
                            f"got {head.stem_tokens_width}")
        if head.map_stride not in MAP_STRIDES:
            problems.append(f"head.map_stride must be 4 or 2, got {head.map_stride}")
        elif head.map_stride == 2 and not head.image_stem:
            problems.append("head.map_stride 2 draws the 1/2-scale map from the image stem: it needs "
                            "head.image_stem > 0")
        if head.mask_refine < 0:
            problems.append(f"head.mask_refine must be 0 (off) or a channel count, got {head.mask_refine}")
        elif head.mask_refine and not head.image_stem:
            problems.append("head.mask_refine reads the image stem: it needs head.image_stem > 0")
        # No img_size % map_stride check: patch_size is 4 x a power of two, so img_size is a multiple of 4.
        if not 0 <= enc.init_std <= 1:
            problems.append(f"encoder.init_std must lie in 0..1, got {enc.init_std}")
        if enc.position_init == "sincos" and enc.embed_dim % 4:
            problems.append(f"position_init 'sincos' needs embed_dim divisible by 4, got {enc.embed_dim}")
        if pre.max_text_len < 2 or pre.max_text_len > enc.max_text_positions:
            problems.append(f"max_text_len {pre.max_text_len} must lie in 2..{enc.max_text_positions}")
        if problems:
            raise ConfigError("invalid model config: " + "; ".join(problems))

    @property
    def num_tokens(self) -> int:
        """Sequence length through the encoder: vision (+1) + text + latent tokens."""
        return self.encoder.num_patches + 1 + self.preprocess.max_text_len + self.latent.num_tokens

    @property
    def prob_size(self) -> int:
        """Side of the probability map: the input over ``head.map_stride`` (120 for 480 at stride 4)."""
        return self.encoder.img_size // self.head.map_stride

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with top-level fields replaced (``cfg.replace(latent=LatentConfig(enabled=False))``)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return dataclass_from_dict(cls, data, "config")

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls.from_dict(json_object(text, "config"))
