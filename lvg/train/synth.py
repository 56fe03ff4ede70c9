"""A synthetic referring-expression dataset, written in the real REFER and gREFER layouts.

Scenes hold 2-6 flat shapes (circle, square, triangle, star, diamond, hexagon) in six colours, two sizes
and three textures, over a noise or gradient background of muted colours. Shapes may overlap; every
object's stored mask is its *visible* region (what is left after the shapes drawn above it), so masks
are exact and pairwise disjoint. Placement is re-tried until every object keeps at least
:data:`MIN_VISIBLE_FRACTION` of its area visible.

Expressions are built from a tiny query language and checked programmatically against the scene:

- attribute: ``"the small blue square"`` (a minimal attribute set that singles the object out);
- position: ``"the leftmost triangle"``, ``"the circle on the right"`` (the extreme object must lead the
  runner-up by a margin);
- relation: ``"the red circle left of the striped square"`` (the reference object is itself unique; every
  other candidate must *clearly* fail the relation: a three-valued test, "unsure" rejects the expression);
- multi-target (gREFER only): ``"all red shapes"``, ``"both circles"``, ``"the three stars"``;
- no-target (gREFER only): ``"the purple star"`` when no purple star exists.

A single-target expression is kept only when its denotation is exactly its target; a multi-target one
only when it is exactly the target set; a no-target one only when it denotes nothing.

Output layout (``generate(out_dir, ...)``)::

    out_dir/images/synth_000001.jpg ...
    out_dir/refcoco-synth/refs(unc).p        REFER pickle (single-target refs)
    out_dir/refcoco-synth/instances.json     COCO annotations, compressed RLE masks
    out_dir/grefcoco-synth/grefs(unc).json   gREFER (single, multi and no-target refs)
    out_dir/grefcoco-synth/instances.json
    out_dir/synthetic.spm                    sentencepiece model trained on every expression
    out_dir/synth.json                       generator version, seed, counts

Every image draws from its own ``numpy.random.default_rng([seed, image_index])``, so the output is a
pure function of the arguments (byte-identical across runs; JPEG encoding is deterministic).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

from lvg.errors import InputError

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
    "make_scene",
    "rle_encode",
]

#: Bumped whenever the generator's output for a given seed changes.
FORMAT_VERSION = 1

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "hexagon")
_PLURAL = {s: s + "s" for s in SHAPES}
#: Nominal RGB of each colour word (objects vary by up to +-12 per channel around it).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 165, 60),
    "blue": (35, 75, 215),
    "yellow": (235, 210, 35),
    "purple": (135, 50, 185),
    "orange": (245, 135, 25),
}
SIZES: tuple[str, ...] = ("small", "large")
TEXTURES: tuple[str, ...] = ("solid", "striped", "dotted")
#: Radius range of each size as a fraction of the image's short side (disjoint so "small" is unambiguous).
_SIZE_RADIUS = {"small": (0.05, 0.08), "large": (0.12, 0.17)}
_SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
#: Smallest tokenizer vocabulary :func:`generate` accepts: sentencepiece needs an id for every character of
#: the expressions before it merges any (24 characters and 4 special ids when every word occurs); checked
#: before a single image is drawn.
MIN_VOCAB_SIZE = 32
MIN_VISIBLE_FRACTION = 0.6
MIN_VISIBLE_PIXELS = 40
_ATTRS = ("size", "texture", "colour", "shape")  # also the word order of a noun phrase
_NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}

Direction = Literal["left", "right", "top", "bottom"]
Relation = Literal["left", "right", "above", "below"]
Kind = Literal["attribute", "position", "relation", "multi", "none"]


@dataclass(frozen=True)
class SceneObject:
    """One shape: its attributes and geometry (centre and circumradius in pixels, rotation in radians)."""

    shape: str
    colour: str
    size: str
    texture: str
    cx: float
    cy: float
    radius: float
    angle: float

    def attr(self, name: str) -> str:
        return str(getattr(self, name))


@dataclass(frozen=True)
class Expression:
    """A checked referring expression: its text, kind and the indices (into the scene) it denotes."""

    text: str
    kind: Kind
    targets: frozenset[int]


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


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`generate` wrote."""

    out_dir: Path
    seed: int
    images: int
    size_range: tuple[int, int]
    splits: dict[str, int]
    refs: int
    ref_sentences: int
    grefs: int
    gref_sentences: int
    multi_target_refs: int
    no_target_refs: int
    tokenizer: Path

    def to_dict(self) -> dict[str, object]:
        return {
            "out_dir": str(self.out_dir),
            "seed": self.seed,
            "images": self.images,
            "size_range": list(self.size_range),
            "splits": dict(self.splits),
            "refs": self.refs,
            "ref_sentences": self.ref_sentences,
            "grefs": self.grefs,
            "gref_sentences": self.gref_sentences,
            "multi_target_refs": self.multi_target_refs,
            "no_target_refs": self.no_target_refs,
            "tokenizer": str(self.tokenizer),
        }


# --------------------------------------------------------------------------------------------------
# The query language: descriptions, positions, relations. Every query evaluates to (true, unsure) sets.


@dataclass(frozen=True)
class _Desc:
    """A conjunction of attribute values; ``None`` = unconstrained."""

    shape: str | None = None
    colour: str | None = None
    size: str | None = None
    texture: str | None = None

    def matches(self, obj: SceneObject) -> bool:
        return ((self.shape is None or self.shape == obj.shape)
                and (self.colour is None or self.colour == obj.colour)
                and (self.size is None or self.size == obj.size)
                and (self.texture is None or self.texture == obj.texture))

    def select(self, objects: Sequence[SceneObject]) -> list[int]:
        return [i for i, o in enumerate(objects) if self.matches(o)]

    def phrase(self, rng: np.random.Generator, *, plural: bool = False) -> str:
        words: list[str] = []
        if self.size is not None:
            words.append(str(rng.choice(_SIZE_WORDS[self.size])))
        if self.texture is not None:
            words.append(self.texture)
        if self.colour is not None:
            words.append(self.colour)
        noun = self.shape if self.shape is not None else "shape"
        words.append(_PLURAL.get(noun, noun + "s") if plural else noun)
        return " ".join(words)


@dataclass(frozen=True)
class _Position:
    """``the leftmost <desc>`` / ``the <desc> on the left``: the extreme object of a selection."""

    desc: _Desc
    direction: Direction


@dataclass(frozen=True)
class _Relational:
    """``the <desc> left of <ref>``: objects matching ``desc`` (other than ``ref``) in a relation to it."""

    desc: _Desc
    relation: Relation
    ref: int


_Query = _Desc | _Position | _Relational


def _extreme(objects: Sequence[SceneObject], idx: Sequence[int], direction: Direction, width: int,
             height: int) -> int | None:
    """The object of ``idx`` furthest in ``direction``, or None when it does not clearly lead.

    "Clearly": its centre leads the runner-up by ``max(0.3 * (r1 + r2), 3% of the image side)`` and its
    outer edge leads every other object's outer edge too.
    """
    if len(idx) < 2:
        return None
    sign = -1.0 if direction in ("left", "top") else 1.0
    horizontal = direction in ("left", "right")
    dim = width if horizontal else height

    def centre(i: int) -> float:
        o = objects[i]
        return sign * (o.cx if horizontal else o.cy)

    ranked = sorted(idx, key=centre, reverse=True)
    first, second = objects[ranked[0]], objects[ranked[1]]
    margin = max(0.3 * (first.radius + second.radius), 0.03 * dim)
    if centre(ranked[0]) - centre(ranked[1]) < margin:
        return None
    edge0 = centre(ranked[0]) + first.radius
    if any(centre(j) + objects[j].radius >= edge0 for j in ranked[1:]):
        return None
    return ranked[0]


def _relation(a: SceneObject, b: SceneObject, rel: Relation) -> bool | None:
    """Is ``a`` ``rel`` of ``b``? True / False when clear, None when a listener could hesitate.

    True needs the centres apart by ``0.6 * (ra + rb)`` along the relation's axis, and that offset at
    least 0.7 x the offset across it (a shape far above another is not "left of" it). False needs the
    centres on the wrong side (or level). Anything in between is "unsure".
    """
    dx, dy = b.cx - a.cx, b.cy - a.cy  # positive: a is left of / above b
    along = {"left": dx, "right": -dx, "above": dy, "below": -dy}[rel]
    across = abs(dy) if rel in ("left", "right") else abs(dx)
    if along <= 0:
        return False
    if along >= 0.6 * (a.radius + b.radius) and along >= 0.7 * across:
        return True
    return None


def denotation(query: _Query, objects: Sequence[SceneObject], width: int, height: int
               ) -> tuple[frozenset[int], frozenset[int]]:
    """Evaluate a query: ``(objects it certainly denotes, objects it might denote)``.

    An expression is accepted only when the second set is empty and the first is its intended target set.
    """
    if isinstance(query, _Desc):
        return frozenset(query.select(objects)), frozenset()
    if isinstance(query, _Position):
        idx = query.desc.select(objects)
        winner = _extreme(objects, idx, query.direction, width, height)
        if winner is None:
            return frozenset(), frozenset(idx)
        return frozenset({winner}), frozenset()
    ref = objects[query.ref]
    true, unsure = set(), set()
    for i in query.desc.select(objects):
        if i == query.ref:
            continue
        verdict = _relation(objects[i], ref, query.relation)
        if verdict is None:
            unsure.add(i)
        elif verdict:
            true.add(i)
    return frozenset(true), frozenset(unsure)


def _minimal_descs(objects: Sequence[SceneObject], t: int) -> list[_Desc]:
    """Attribute descriptions of object ``t`` that single it out, none containing a smaller one."""
    obj = objects[t]
    found: list[tuple[str, ...]] = []
    for k in range(1, len(_ATTRS) + 1):
        for names in combinations(_ATTRS, k):
            if any(set(f) <= set(names) for f in found):
                continue
            desc = _Desc(**{a: obj.attr(a) for a in names})
            if desc.select(objects) == [t]:
                found.append(names)
    return [_Desc(**{a: obj.attr(a) for a in names}) for names in found]


def _coarse_descs(obj: SceneObject) -> list[_Desc]:
    """Short descriptions used as the head of positional / relational expressions."""
    return [
        _Desc(shape=obj.shape),
        _Desc(colour=obj.colour),
        _Desc(shape=obj.shape, colour=obj.colour),
        _Desc(shape=obj.shape, size=obj.size),
    ]


_DIRECTION_TEXT = {
    "left": ("the leftmost {d}", "the {d} on the left"),
    "right": ("the rightmost {d}", "the {d} on the right"),
    "top": ("the topmost {d}", "the {d} at the top"),
    "bottom": ("the bottommost {d}", "the {d} at the bottom"),
}
_RELATION_TEXT = {
    "left": ("left of", "to the left of"),
    "right": ("right of", "to the right of"),
    "above": ("above",),
    "below": ("below", "under"),
}


def _template_pattern(template: str) -> str:
    """A ``_DIRECTION_TEXT`` template as a whole-text regex (``{d}`` matches the description)."""
    return "^" + re.escape(template).replace(re.escape("{d}"), ".+") + "$"


_RELATION_RE = re.compile(r" (?:" + "|".join(re.escape(w) for ws in _RELATION_TEXT.values() for w in ws) + r") the ")
_POSITION_RE = re.compile("|".join(_template_pattern(t) for ts in _DIRECTION_TEXT.values() for t in ts))


def expression_kind(text: str, targets: int) -> Kind:
    """The kind of a generated expression, read back from its text and number of targets.

    The datasets store only the text, the REFER / gREFER formats having no place for it; the templates
    above make the kind recoverable, which lets evaluation break the metrics down by kind.
    """
    if targets == 0:
        return "none"
    if targets > 1:
        return "multi"
    if _RELATION_RE.search(text):
        return "relation"
    if _POSITION_RE.match(text):
        return "position"
    return "attribute"


def _single_expressions(objects: Sequence[SceneObject], t: int, width: int, height: int,
                        minimal: Sequence[Sequence[_Desc]], rng: np.random.Generator) -> list[Expression]:
    """Up to three checked expressions for object ``t``, one per kind where possible.

    ``minimal[i]`` are the minimal unique descriptions of object ``i`` (:func:`_minimal_descs`).
    """
    target = frozenset({t})
    by_kind: dict[str, list[Expression]] = {"attribute": [], "position": [], "relation": []}
    for desc in minimal[t]:
        if len([a for a in _ATTRS if getattr(desc, a) is not None]) <= 3:
            by_kind["attribute"].append(Expression(f"the {desc.phrase(rng)}", "attribute", target))
    for desc in _coarse_descs(objects[t]):
        n = len(desc.select(objects))
        for direction in ("left", "right", "top", "bottom"):
            q = _Position(desc, direction)  # type: ignore[arg-type]
            if denotation(q, objects, width, height) != (target, frozenset()):
                continue
            templates = _DIRECTION_TEXT[direction]
            template = templates[int(rng.integers(len(templates)))] if n == 2 else templates[0]
            by_kind["position"].append(Expression(template.format(d=desc.phrase(rng)), "position", target))
    for ref in range(len(objects)):
        if ref == t:
            continue
        ref_descs = minimal[ref]
        if not ref_descs:
            continue
        ref_desc = min(ref_descs, key=lambda d: sum(getattr(d, a) is not None for a in _ATTRS))
        for desc in _coarse_descs(objects[t]):
            # Only informative relations: the head must be ambiguous even without the reference object.
            if len([i for i in desc.select(objects) if i != ref]) < 2:
                continue
            for rel in ("left", "right", "above", "below"):
                q = _Relational(desc, rel, ref)  # type: ignore[arg-type]
                if denotation(q, objects, width, height) != (target, frozenset()):
                    continue
                words = _RELATION_TEXT[rel]
                text = f"the {desc.phrase(rng)} {words[int(rng.integers(len(words)))]} the {ref_desc.phrase(rng)}"
                by_kind["relation"].append(Expression(text, "relation", target))
    chosen: list[Expression] = []
    kinds = [k for k in by_kind if by_kind[k]]
    rng.shuffle(kinds)  # type: ignore[arg-type]
    for kind in kinds:
        options = by_kind[kind]
        pick = options[int(rng.integers(len(options)))]
        if pick.text not in {c.text for c in chosen}:
            chosen.append(pick)
    return chosen[:3]


def _multi_expressions(objects: Sequence[SceneObject], rng: np.random.Generator) -> list[Expression]:
    """Expressions denoting two or more (but not all) objects: ``all red shapes``, ``both circles``."""
    seen: set[frozenset[int]] = set()
    out: list[Expression] = []
    descs: list[_Desc] = []
    for o in objects:
        descs += [_Desc(colour=o.colour), _Desc(shape=o.shape), _Desc(texture=o.texture),
                  _Desc(shape=o.shape, colour=o.colour), _Desc(size=o.size, shape=o.shape)]
    for desc in descs:
        idx = frozenset(desc.select(objects))
        if len(idx) < 2 or len(idx) == len(objects) or idx in seen:
            continue
        seen.add(idx)
        noun = desc.phrase(rng, plural=True)
        if len(idx) == 2:
            forms = (f"both {noun}", f"the two {noun}", f"all {noun}")
        else:
            forms = (f"all {noun}", f"the {_NUMBER_WORDS[len(idx)]} {noun}", f"all the {noun}")
        out.append(Expression(forms[int(rng.integers(len(forms)))], "multi", idx))
    rng.shuffle(out)  # type: ignore[arg-type]
    return out[:2]


def _no_target_expressions(objects: Sequence[SceneObject], rng: np.random.Generator) -> list[Expression]:
    """One or two descriptions that denote nothing, preferring colours and shapes present in the scene."""
    present_colours = sorted({o.colour for o in objects})
    present_shapes = sorted({o.shape for o in objects})
    candidates: list[_Desc] = []
    for colour in COLOURS:
        for shape in SHAPES:
            desc = _Desc(shape=shape, colour=colour)
            if not desc.select(objects):
                candidates.append(desc)
    if not candidates:
        return []
    hard = [d for d in candidates if d.colour in present_colours and d.shape in present_shapes]
    pool = hard if hard and rng.random() < 0.7 else candidates
    n = 1 + int(rng.random() < 0.3)
    picks = rng.choice(len(pool), size=min(n, len(pool)), replace=False)
    return [Expression(f"the {pool[int(i)].phrase(rng)}", "none", frozenset()) for i in picks]


# --------------------------------------------------------------------------------------------------
# Rendering


def _shape_points(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    def ring(n: int, radii: Sequence[float], start: float) -> list[tuple[float, float]]:
        pts = []
        for k in range(n):
            a = start + angle + 2 * math.pi * k / n
            rad = radii[k % len(radii)]
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        return pts

    if shape == "square":
        return ring(4, [r], math.pi / 4)
    if shape == "triangle":
        return ring(3, [r], -math.pi / 2)
    if shape == "star":
        return ring(10, [r, 0.45 * r], -math.pi / 2)
    if shape == "hexagon":
        return ring(6, [r], 0.0)
    if shape == "diamond":
        # A rhombus taller than wide (never confusable with a square rotated 45 degrees).
        base = [(0.0, -r), (0.62 * r, 0.0), (0.0, r), (-0.62 * r, 0.0)]
        c, s = math.cos(angle), math.sin(angle)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in base]
    raise ValueError(f"unknown shape {shape!r}")


def _full_mask(obj: SceneObject, width: int, height: int) -> np.ndarray:
    """bool (H, W): every pixel the shape covers (before occlusion)."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    if obj.shape == "circle":
        draw.ellipse([obj.cx - obj.radius, obj.cy - obj.radius, obj.cx + obj.radius, obj.cy + obj.radius], fill=1)
    else:
        draw.polygon(_shape_points(obj.shape, obj.cx, obj.cy, obj.radius, obj.angle), fill=1)
    return np.asarray(canvas, dtype=np.uint8).astype(bool)


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    """A low-saturation colour (grey plus a small tint) so object colours stay unambiguous."""
    base = rng.uniform(55, 200)
    return np.clip(base + rng.uniform(-22, 22, size=3), 0, 255)


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """int16 (H, W, 3): a linear gradient or smooth colour noise, plus uniform pixel noise.

    int16 (not float) keeps the few full-image passes cheap; the final clip to 0..255 happens once.
    """
    if rng.random() < 0.5:
        # A linear gradient, computed on a coarse grid and upsampled bilinearly (exact for a linear
        # function away from the border, and far cheaper than evaluating it per pixel).
        c0, c1 = _muted_colour(rng), _muted_colour(rng)
        theta = rng.uniform(0, 2 * math.pi)
        gh, gw = max(2, height // 16), max(2, width // 16)
        xs = np.linspace(0, width, gw)[None, :] * math.cos(theta)  # (1, gw)
        ys = np.linspace(0, height, gh)[:, None] * math.sin(theta)  # (gh, 1)
        proj = xs + ys  # (gh, gw)
        t = ((proj - proj.min()) / max(float(proj.max() - proj.min()), 1.0))[..., None]  # (gh, gw, 1)
        grid = c0 + (c1 - c0) * t  # (gh, gw, 3)
        resample = Image.Resampling.BILINEAR
    else:
        gh, gw = int(rng.integers(2, 7)), int(rng.integers(2, 7))
        grid = np.stack([_muted_colour(rng) for _ in range(gh * gw)]).reshape(gh, gw, 3)  # (gh*gw, 3) -> (gh, gw, 3)
        resample = Image.Resampling.BICUBIC
    small = Image.fromarray(np.clip(np.rint(grid), 0, 255).astype(np.uint8), mode="RGB")
    bg = np.asarray(small.resize((width, height), resample)).astype(np.int16)  # (H, W, 3)
    # Uniform luminance noise, shared by the three channels: as good as Gaussian colour noise here and
    # several times cheaper to draw.
    amp = int(rng.integers(5, 17))
    bg += rng.integers(-amp, amp + 1, size=(height, width, 1), dtype=np.int16)  # (H, W, 1) broadcasts
    return bg


def _paint(image: np.ndarray, obj: SceneObject, mask: np.ndarray, rng: np.random.Generator) -> None:
    """Paint ``obj`` into ``image`` (int16 (H, W, 3)) where ``mask`` (its full extent) is set."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    base = np.clip(np.asarray(COLOURS[obj.colour], np.float32) + rng.integers(-12, 13, size=3), 0, 255)
    yy = np.arange(y0, y1, dtype=np.float32)[:, None]  # (h, 1) crop row coordinates
    xx = np.arange(x0, x1, dtype=np.float32)[None, :]  # (1, w) crop column coordinates
    colour = np.empty((y1 - y0, x1 - x0, 3), dtype=np.float32)  # (h, w, 3)
    colour[...] = base
    if obj.texture == "striped":
        period = max(4.0, obj.radius / 3.0)
        theta = float(rng.choice([0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4]))
        band = np.floor((xx * math.cos(theta) + yy * math.sin(theta)) / period).astype(np.int64) % 2 == 1
        colour[band] = base * 0.5
    elif obj.texture == "dotted":
        period = max(6.0, obj.radius / 2.5)
        du, dv = (xx % period) - period / 2, (yy % period) - period / 2
        dots = du * du + dv * dv < (0.3 * period) ** 2  # (h, w)
        colour[dots] = base + (255 - base) * 0.6
    crop = mask[y0:y1, x0:x1]
    image[y0:y1, x0:x1][crop] = np.rint(colour[crop]).astype(np.int16)


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
            m = _full_mask(obj, width, height)
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


def make_scene(seed: int, index: int, *, size_range: tuple[int, int] = (320, 640)) -> SynthScene:
    """Render scene ``index`` of the dataset with ``seed`` and derive its checked expressions.

    Width and height are drawn independently from ``size_range`` (aspect ratios 1:2 to 2:1).
    """
    rng = np.random.default_rng([int(seed), int(index)])
    lo, hi = int(size_range[0]), int(size_range[1])
    width, height = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
    objects, full, visible = _place_objects(rng, width, height)
    image = _background(rng, width, height)
    for obj, m in zip(objects, full):
        _paint(image, obj, m, rng)
    pixels = np.clip(image, 0, 255).astype(np.uint8)
    scene = SynthScene(image=pixels, objects=objects, masks=visible)
    minimal = [_minimal_descs(objects, i) for i in range(len(objects))]
    for t in range(len(objects)):
        exprs = _single_expressions(objects, t, width, height, minimal, rng)
        if exprs:
            scene.single[t] = exprs
    scene.multi = _multi_expressions(objects, rng)
    scene.none = _no_target_expressions(objects, rng)
    return scene


# --------------------------------------------------------------------------------------------------
# COCO RLE (the compressed string form of pycocotools' maskApi ``rleToString``), written without
# pycocotools so generation needs nothing beyond numpy / Pillow.


def rle_encode(mask: np.ndarray) -> dict[str, object]:
    """Compressed COCO RLE of a bool (H, W) mask: ``{"size": [H, W], "counts": str}``.

    Runs alternate 0s and 1s over the column-major (Fortran order) pixels, starting with 0s.
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {m.shape}")
    h, w = m.shape
    flat = m.ravel(order="F")  # COCO runs walk columns first
    if flat.size == 0:
        return {"size": [h, w], "counts": ""}
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts
    chars: list[str] = []
    for i, value in enumerate(counts):
        x = int(value) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift, as the C code's signed long
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            chars.append(chr(c + 48))
    return {"size": [h, w], "counts": "".join(chars)}


def _bbox_xywh(mask: np.ndarray) -> list[float]:
    """COCO box (pixel edges) of a non-empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    x0, y0 = int(cols[0]), int(rows[0])
    return [float(x0), float(y0), float(cols[-1] + 1 - x0), float(rows[-1] + 1 - y0)]


# --------------------------------------------------------------------------------------------------
# The dataset writer


def _split_assignment(n: int, seed: int, splits: Sequence[tuple[str, float]] | str) -> list[str]:
    if isinstance(splits, str):
        return [splits] * n
    names = [s for s, _ in splits]
    fracs = np.asarray([float(f) for _, f in splits], dtype=np.float64)
    if len(names) != len(set(names)) or not names:
        raise InputError(f"split names must be distinct and non-empty, got {names}")
    if (fracs < 0).any() or fracs.sum() <= 0:
        raise InputError(f"split fractions must be non-negative with a positive sum, got {fracs.tolist()}")
    bounds = np.rint(np.cumsum(fracs / fracs.sum()) * n).astype(int)  # (k,) cumulative image counts
    order = np.random.default_rng([int(seed), 0x5EED]).permutation(n)
    out = [""] * n
    start = 0
    for name, stop in zip(names, bounds):
        for i in order[start:stop]:
            out[int(i)] = name
        start = stop
    return out


def _sentence(text: str, sent_id: int) -> dict[str, object]:
    return {"sent": text, "raw": text, "tokens": text.split(), "sent_id": sent_id}


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass(frozen=True)
class _SceneRecord:
    """What the writer needs of one rendered scene (the image itself is already on disk)."""

    index: int
    file_name: str
    width: int
    height: int
    objects: list[SceneObject]
    rles: list[dict[str, object]]
    areas: list[float]
    bboxes: list[list[float]]
    single: dict[int, list[Expression]]
    multi: list[Expression]
    none: list[Expression]


def _render_record(job: tuple[int, int, int, int, str, str]) -> _SceneRecord:
    """Render scene ``index``, write its image, encode its masks (runs in a worker process)."""
    seed, index, lo, hi, image_dir, image_format = job
    scene = make_scene(seed, index, size_range=(lo, hi))
    file_name = f"synth_{index + 1:06d}.{image_format}"
    pil = Image.fromarray(scene.image, mode="RGB")
    if image_format == "jpg":
        pil.save(Path(image_dir) / file_name, format="JPEG", quality=95)
    else:
        pil.save(Path(image_dir) / file_name, format="PNG")
    return _SceneRecord(
        index=index,
        file_name=file_name,
        width=scene.width,
        height=scene.height,
        objects=scene.objects,
        rles=[rle_encode(m) for m in scene.masks],
        areas=[float(m.sum()) for m in scene.masks],
        bboxes=[_bbox_xywh(m) for m in scene.masks],
        single=scene.single,
        multi=scene.multi,
        none=scene.none,
    )


def _map_records(jobs: list[tuple[int, int, int, int, str, str]], workers: int) -> Iterator[_SceneRecord]:
    """Render in order; with ``workers > 1`` in a spawn-started process pool (fork-safe with torch loaded)."""
    if workers <= 1 or len(jobs) < 2:
        for job in jobs:
            yield _render_record(job)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        yield from pool.map(_render_record, jobs, chunksize=8)


def generate(
    out_dir: str | os.PathLike[str],
    *,
    images: int,
    seed: int,
    size_range: tuple[int, int] = (320, 640),
    vocab_size: int = 400,
    splits: Sequence[tuple[str, float]] | str = (("train", 0.8), ("val", 0.2)),
    image_format: Literal["jpg", "png"] = "jpg",
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> SynthSummary:
    """Write a synthetic dataset of ``images`` scenes to ``out_dir`` (layout in the module docstring).

    Args:
        out_dir: output directory (created; existing files of the same names are replaced).
        images: number of images (>= 1).
        seed: the output is a pure function of the arguments.
        size_range: inclusive range of image width and height in pixels.
        vocab_size: upper bound of the sentencepiece vocabulary trained on all expressions.
        splits: ``(name, fraction)`` pairs (images are assigned to splits, like RefCOCO's unc splits),
            or one split name for every image.
        image_format: ``"jpg"`` (quality 95) or ``"png"`` (lossless).
        workers: rendering processes (1 = in this process); the output does not depend on it.
        progress: called with 1 after each image (for a progress bar).

    Raises:
        InputError: bad arguments.
    """
    from lvg.core.tokenizer import train_sentencepiece

    if images < 1:
        raise InputError(f"--images must be at least 1, got {images}")
    lo, hi = int(size_range[0]), int(size_range[1])
    if lo < 64 or hi < lo:
        raise InputError(f"size_range must satisfy 64 <= min <= max, got {size_range}")
    if workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    if vocab_size < MIN_VOCAB_SIZE:
        raise InputError(f"vocab_size must be at least {MIN_VOCAB_SIZE} (one id per character first), got {vocab_size}")
    if image_format not in ("jpg", "png"):
        raise InputError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    out = Path(out_dir)
    image_dir = out / "images"
    refer_dir = out / "refcoco-synth"
    grefer_dir = out / "grefcoco-synth"
    for d in (image_dir, refer_dir, grefer_dir):
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create {d}: {exc.strerror or exc}") from None
    split_of = _split_assignment(images, seed, splits)

    categories = [{"id": i + 1, "name": s, "supercategory": "shape"} for i, s in enumerate(SHAPES)]
    cat_id = {s: i + 1 for i, s in enumerate(SHAPES)}
    coco_images: list[dict[str, object]] = []
    annotations: list[dict[str, object]] = []
    refs: list[dict[str, object]] = []
    grefs: list[dict[str, object]] = []
    all_text: list[str] = []
    next_ann, next_ref, next_sent, next_gref, next_gsent = 1, 1, 1, 1, 1
    n_multi = n_none = 0
    jobs = [(int(seed), index, lo, hi, str(image_dir), image_format) for index in range(images)]
    for record in _map_records(jobs, workers):
        index = record.index
        image_id = index + 1
        file_name = record.file_name
        coco_images.append({"id": image_id, "file_name": file_name, "height": record.height, "width": record.width})
        ann_ids: list[int] = []
        for obj, rle, area, bbox in zip(record.objects, record.rles, record.areas, record.bboxes):
            annotations.append({
                "id": next_ann,
                "image_id": image_id,
                "category_id": cat_id[obj.shape],
                "segmentation": rle,
                "area": area,
                "bbox": bbox,
                "iscrowd": 0,
                "attributes": {"colour": obj.colour, "size": obj.size, "texture": obj.texture},
            })
            ann_ids.append(next_ann)
            next_ann += 1
        split = split_of[index]
        stem = file_name.rsplit(".", 1)[0]
        for t, exprs in sorted(record.single.items()):
            texts = [e.text for e in exprs]
            all_text += texts
            sents = [_sentence(s, next_sent + k) for k, s in enumerate(texts)]
            gsents = [_sentence(s, next_gsent + k) for k, s in enumerate(texts)]
            refs.append({
                "ref_id": next_ref, "ann_id": ann_ids[t], "image_id": image_id, "split": split,
                "sentences": sents, "sent_ids": [s["sent_id"] for s in sents],
                "category_id": cat_id[record.objects[t].shape],
                "file_name": f"{stem}_{ann_ids[t]}.{image_format}",
            })
            grefs.append({
                "ref_id": next_gref, "ann_id": [ann_ids[t]], "image_id": image_id, "split": split,
                "sentences": gsents, "sent_ids": [s["sent_id"] for s in gsents],
                "category_id": [cat_id[record.objects[t].shape]], "no_target": False,
                "file_name": f"{stem}_{ann_ids[t]}.{image_format}",
            })
            next_ref, next_gref = next_ref + 1, next_gref + 1
            next_sent, next_gsent = next_sent + len(texts), next_gsent + len(texts)
        for expr in record.multi:
            all_text.append(expr.text)
            targets = sorted(expr.targets)
            grefs.append({
                "ref_id": next_gref, "ann_id": [ann_ids[t] for t in targets], "image_id": image_id,
                "split": split, "sentences": [_sentence(expr.text, next_gsent)], "sent_ids": [next_gsent],
                "category_id": [cat_id[record.objects[t].shape] for t in targets], "no_target": False,
                "file_name": file_name,
            })
            next_gref, next_gsent, n_multi = next_gref + 1, next_gsent + 1, n_multi + 1
        if record.none:
            texts = [e.text for e in record.none]
            all_text += texts
            gsents = [_sentence(s, next_gsent + k) for k, s in enumerate(texts)]
            grefs.append({
                "ref_id": next_gref, "ann_id": [-1], "image_id": image_id, "split": split,
                "sentences": gsents, "sent_ids": [s["sent_id"] for s in gsents],
                "category_id": [-1], "no_target": True,
                "file_name": file_name,
            })
            next_gref, next_gsent, n_none = next_gref + 1, next_gsent + len(texts), n_none + 1
        if progress is not None:
            progress(1)

    instances = json.dumps(
        {"info": {"description": "lvg synthetic shapes", "version": FORMAT_VERSION},
         "images": coco_images, "annotations": annotations, "categories": categories},
        separators=(",", ":"),
    ).encode()
    _write_atomic(refer_dir / "instances.json", instances)
    _write_atomic(grefer_dir / "instances.json", instances)
    # Protocol 2, plain containers only: what REFER's own refs(*.p) files are.
    _write_atomic(refer_dir / "refs(unc).p", pickle.dumps(refs, protocol=2))
    _write_atomic(grefer_dir / "grefs(unc).json", json.dumps(grefs, separators=(",", ":")).encode())
    tokenizer = train_sentencepiece(all_text, out / "synthetic.spm", vocab_size=vocab_size, seed=seed)

    split_counts: dict[str, int] = {}
    for s in split_of:
        split_counts[s] = split_counts.get(s, 0) + 1
    summary = SynthSummary(
        out_dir=out,
        seed=int(seed),
        images=images,
        size_range=(lo, hi),
        splits=split_counts,
        refs=len(refs),
        ref_sentences=sum(len(r["sentences"]) for r in refs),  # type: ignore[arg-type]
        grefs=len(grefs),
        gref_sentences=sum(len(r["sentences"]) for r in grefs),  # type: ignore[arg-type]
        multi_target_refs=n_multi,
        no_target_refs=n_none,
        tokenizer=tokenizer,
    )
    meta = {
        "format": "lvg-synth",
        "version": FORMAT_VERSION,
        "seed": int(seed),
        "images": images,
        "size_range": [lo, hi],
        "image_format": image_format,
        "vocab_size": vocab_size,
        "splits": split_counts,
        "datasets": {"refcoco-synth": {"refs": summary.refs, "sentences": summary.ref_sentences},
                     "grefcoco-synth": {"refs": summary.grefs, "sentences": summary.gref_sentences,
                                        "multi_target": n_multi, "no_target": n_none}},
        "tokenizer": "synthetic.spm",
    }
    _write_atomic(out / "synth.json", (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
    return summary
