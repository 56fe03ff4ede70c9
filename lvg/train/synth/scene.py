"""Scene sampling: how many shapes, which attributes, where; then the rendered scene and its expressions.

Scenes hold 2-6 flat shapes (circle, square, triangle, star, diamond, hexagon) in six colours, two sizes
and three textures, over a noise or gradient background of muted colours. Shapes may overlap; every
object's stored mask is its *visible* region (what is left after the shapes drawn above it), so masks
are exact and pairwise disjoint. Placement is re-tried until every object keeps at least
:data:`MIN_VISIBLE_FRACTION` of its area visible.

Every scene draws from its own ``numpy.random.default_rng([seed, index])``, so it is a pure function of
its arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lvg.train.synth.language import (
    NoTargetForms,
    minimal_descriptions,
    multi_expressions,
    no_target_expressions,
    single_expressions,
)
from lvg.train.synth.objects import COLOURS, SHAPES, SIZES, TEXTURES, Expression, SceneObject
from lvg.train.synth.render import background, full_mask, paint

__all__ = ["MIN_VISIBLE_FRACTION", "MIN_VISIBLE_PIXELS", "SynthScene", "make_scene"]

#: Radius range of each size as a fraction of the image's short side (disjoint so "small" is unambiguous).
_SIZE_RADIUS = {"small": (0.05, 0.08), "large": (0.12, 0.17)}
MIN_VISIBLE_FRACTION = 0.6
MIN_VISIBLE_PIXELS = 40


@dataclass
class SynthScene:
    """A rendered scene: image uint8 (H, W, 3), per-object visible masks bool (H, W) (disjoint), the
    objects, and the checked expressions (single-target per object, multi-target, no-target)."""

    image: np.ndarray
    objects: list[SceneObject]
    masks: list[np.ndarray]
    single: dict[int, list[Expression]] = field(default_factory=dict)
    multi: list[Expression] = field(default_factory=list)
    none: list[Expression] = field(default_factory=list)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


def _place_objects(rng: np.random.Generator, width: int, height: int
                   ) -> tuple[list[SceneObject], list[np.ndarray], list[np.ndarray]]:
    """Sample objects and their draw order; returns (objects, full masks, visible masks)."""
    n_target = int(rng.integers(2, 7))
    shape_pool = list(rng.choice(SHAPES, size=int(rng.integers(2, 5)), replace=False))
    colour_pool = list(rng.choice(list(COLOURS), size=int(rng.integers(2, 5)), replace=False))
    short = min(width, height)
    objects: list[SceneObject] = []
    full: list[np.ndarray] = []
    visible: list[np.ndarray] = []
    for _ in range(n_target):
        for _attempt in range(25):
            size = str(rng.choice(SIZES))
            lo, hi = _SIZE_RADIUS[size]
            r = float(rng.uniform(lo, hi) * short)
            obj = SceneObject(
                shape=str(rng.choice(shape_pool)),
                colour=str(rng.choice(colour_pool)),
                size=size,
                texture=str(rng.choice(TEXTURES, p=[0.5, 0.25, 0.25])),
                cx=float(rng.uniform(r, width - r)),
                cy=float(rng.uniform(r, height - r)),
                radius=r,
                angle=float(rng.uniform(-0.25, 0.25)),
            )
            m = full_mask(obj, width, height)
            new_visible = [v & ~m for v in visible]
            ok = all(
                v.sum() >= max(MIN_VISIBLE_PIXELS, MIN_VISIBLE_FRACTION * f.sum())
                for v, f in zip(new_visible, full)
            ) and m.sum() >= MIN_VISIBLE_PIXELS
            if ok:
                objects.append(obj)
                full.append(m)
                visible = new_visible + [m.copy()]
                break
    return objects, full, visible


def make_scene(seed: int, index: int, *, size_range: tuple[int, int] = (320, 640),
               no_target_forms: NoTargetForms = "plain") -> SynthScene:
    """Render scene ``index`` of the dataset with ``seed`` and derive its checked expressions.

    Width and height are drawn independently from ``size_range`` (aspect ratios 1:2 to 2:1).
    ``no_target_forms`` words the no-target expressions (:data:`~lvg.train.synth.language.NoTargetForms`);
    they draw last, so the image and every other expression do not depend on it.
    """
    rng = np.random.default_rng([int(seed), int(index)])
    lo, hi = int(size_range[0]), int(size_range[1])
    width, height = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
    objects, full, visible = _place_objects(rng, width, height)
    image = background(rng, width, height)
    for obj, m in zip(objects, full):
        paint(image, obj, m, rng)
    pixels = np.clip(image, 0, 255).astype(np.uint8)
    scene = SynthScene(image=pixels, objects=objects, masks=visible)
    minimal = [minimal_descriptions(objects, i) for i in range(len(objects))]
    for t in range(len(objects)):
        exprs = single_expressions(objects, t, width, height, minimal, rng)
        if exprs:
            scene.single[t] = exprs
    scene.multi = multi_expressions(objects, rng)
    scene.none = no_target_expressions(objects, rng, forms=no_target_forms)
    return scene
