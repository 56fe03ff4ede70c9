"""A synthetic referring-expression dataset, written in the real REFER and gREFER layouts.

Four parts, one module each:

- :mod:`~lvg.train.synth.scene`: scene sampling (2-6 flat shapes in six colours, two sizes and three
  textures; exact, pairwise disjoint visible masks) and :func:`make_scene`;
- :mod:`~lvg.train.synth.language`: the expression language (attribute, position, relation, multi- and
  no-target expressions, each checked against the scene);
- :mod:`~lvg.train.synth.render`: drawing the background and the shapes;
- :mod:`~lvg.train.synth.dataset`: writing images, COCO annotations, refs and a tokenizer (:func:`generate`).

:mod:`~lvg.train.synth.objects` holds what they share: the attribute vocabularies, ``SceneObject`` and
``Expression``. Every image draws from its own ``numpy.random.default_rng([seed, image_index])``, so the
output is a pure function of the arguments.
"""

from lvg.train.synth.dataset import FORMAT_VERSION, MIN_VOCAB_SIZE, SynthSummary, generate, rle_encode
from lvg.train.synth.language import denotation, expression_kind, head_description
from lvg.train.synth.objects import COLOURS, SHAPES, SIZES, TEXTURES, Expression, SceneObject
from lvg.train.synth.scene import SynthScene, make_scene

__all__ = [
    "COLOURS",
    "FORMAT_VERSION",
    "MIN_VOCAB_SIZE",
    "SHAPES",
    "SIZES",
    "TEXTURES",
    "Expression",
    "SceneObject",
    "SynthScene",
    "SynthSummary",
    "denotation",
    "expression_kind",
    "generate",
    "head_description",
    "make_scene",
    "rle_encode",
]
