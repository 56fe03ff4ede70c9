"""The expression language: queries over a scene's objects, their denotations, and checked sentences.

Expressions are built from a tiny query language and checked programmatically against the scene:

- attribute: ``"the small blue square"`` (a minimal attribute set that singles the object out);
- position: ``"the leftmost triangle"``, ``"the circle on the right"`` (the extreme object must lead the
  runner-up by a margin);
- relation: ``"the red circle left of the striped square"`` (the reference object is itself unique; every
  other candidate must *clearly* fail the relation: a three-valued test, "unsure" rejects the expression);
- multi-target (gREFER only): ``"all red shapes"``, ``"both circles"``, ``"the three stars"``;
- no-target (gREFER only): ``"the purple star"`` when no purple star exists; with ``forms="varied"`` also
  other noun phrases (``"the big striped star"``, ``"the purple shape"``, ``"the hexagon"``) and positions
  over nothing (``"the leftmost purple star"``).

A single-target expression is kept only when its denotation is exactly its target; a multi-target one
only when it is exactly the target set; a no-target one only when it denotes nothing. Every query evaluates
to (true, unsure) sets.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations, product
from typing import Literal

import numpy as np

from lvg.train.synth.objects import COLOURS, SHAPES, SIZES, TEXTURES, Expression, Kind, SceneObject

__all__ = [
    "NO_TARGET_FORMS",
    "NoTargetForms",
    "denotation",
    "expression_kind",
    "minimal_descriptions",
    "multi_expressions",
    "no_target_expressions",
    "single_expressions",
]

_PLURAL = {s: s + "s" for s in SHAPES}
_SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
_ATTRS = ("size", "texture", "colour", "shape")  # also the word order of a noun phrase
_NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}

#: How no-target expressions are worded: "plain" = always "the <colour> <shape>" (the generator's first
#: datasets; a sentence of that form then denotes nothing four times in five, and a model learns the form
#: instead of looking), "varied" = the noun phrases and positions that target expressions use too.
NoTargetForms = Literal["plain", "varied"]
NO_TARGET_FORMS: tuple[NoTargetForms, ...] = ("plain", "varied")
Direction = Literal["left", "right", "top", "bottom"]
Relation = Literal["left", "right", "above", "below"]


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


def minimal_descriptions(objects: Sequence[SceneObject], t: int) -> list[_Desc]:
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


_WORD_ATTRIBUTE = {
    **{w: ("size", size) for size, words in _SIZE_WORDS.items() for w in words},
    **{t: ("texture", t) for t in TEXTURES},
    **{c: ("colour", c) for c in COLOURS},
    **{s: ("shape", s) for s in SHAPES},
    **{plural: ("shape", s) for s, plural in _PLURAL.items()},
}


def head_description(text: str) -> dict[str, str]:
    """The attribute values that the head noun phrase of a generated single-target expression names.

    The head is the object the sentence describes before any position or relation: "the leftmost large green
    star" and "the green star left of the red circle" give ``{"size": "large", "colour": "green", "shape":
    "star"}`` and ``{"colour": "green", "shape": "star"}``. The scene's objects that match it are the
    candidates among which a position or relation has to choose; "shape" alone names no attribute. Any
    sentence has one: case is ignored, plural shape words name their shape ("all the stars" -> ``{"shape":
    "star"}``) and the first word of an attribute decides.
    """
    head = _RELATION_RE.split(text.lower(), maxsplit=1)[0]  # the reference object's words come after the relation
    found: dict[str, str] = {}
    for word in re.findall(r"\w+", head):
        if word in _WORD_ATTRIBUTE:
            found.setdefault(*_WORD_ATTRIBUTE[word])
    return found


def single_expressions(objects: Sequence[SceneObject], t: int, width: int, height: int,
                        minimal: Sequence[Sequence[_Desc]], rng: np.random.Generator) -> list[Expression]:
    """Up to three checked expressions for object ``t``, one per kind where possible.

    ``minimal[i]`` are the minimal unique descriptions of object ``i`` (:func:`minimal_descriptions`).
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


def multi_expressions(objects: Sequence[SceneObject], rng: np.random.Generator) -> list[Expression]:
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


def no_target_expressions(objects: Sequence[SceneObject], rng: np.random.Generator, *,
                          forms: NoTargetForms = "plain") -> list[Expression]:
    """One or two descriptions that denote nothing, preferring attribute values present in the scene.

    ``forms`` (:data:`NoTargetForms`): "plain" words each as "the <colour> <shape>"; "varied" draws its noun
    phrase from :data:`_NONE_PHRASES` and puts about a quarter of them in a position ("the leftmost ...").
    """
    if forms == "varied":
        return _varied_no_target(objects, rng)
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


#: The attributes a "varied" no-target noun phrase names, drawn with equal weight: "the <colour> <shape>" is
#: one form in seven, as rare among no-target sentences as the others, so no wording predicts "nothing".
_NONE_PHRASES: tuple[tuple[str, ...], ...] = (
    ("colour", "shape"), ("size", "colour", "shape"), ("texture", "colour", "shape"), ("size", "shape"),
    ("texture", "shape"), ("colour",), ("shape",),
)
_VALUES: dict[str, tuple[str, ...]] = {"size": tuple(SIZES), "texture": tuple(TEXTURES), "colour": tuple(COLOURS),
                                       "shape": tuple(SHAPES)}
#: Share of "varied" no-target expressions worded as a position over the empty selection, among those whose
#: noun phrase is one of the heads of target position expressions.
_NONE_POSITION_SHARE = 0.4
_POSITION_HEADS = {("shape",), ("colour",), ("colour", "shape"), ("size", "shape")}


def _varied_no_target(objects: Sequence[SceneObject], rng: np.random.Generator) -> list[Expression]:
    """``no_target_expressions(forms="varied")``: each pick draws a form, then a description of that form that
    selects no object (70% of the time one whose every value occurs in the scene: the hard case)."""
    out: list[Expression] = []
    for _ in range(1 + int(rng.random() < 0.3)):
        names = _NONE_PHRASES[int(rng.integers(len(_NONE_PHRASES)))]
        candidates = [_Desc(**dict(zip(names, values, strict=True)))
                      for values in product(*(_VALUES[a] for a in names))]
        candidates = [d for d in candidates if not d.select(objects)]
        if not candidates:  # every value of this form occurs: e.g. "the star" with a star in the scene
            continue
        hard = [d for d in candidates
                if all(any(o.attr(a) == getattr(d, a) for o in objects) for a in names)]
        pool = hard if hard and rng.random() < 0.7 else candidates
        desc = pool[int(rng.integers(len(pool)))]
        phrase = desc.phrase(rng)
        # Only the heads that target position expressions use (_coarse_descs): "the leftmost dotted red
        # star" is never said of a target, so that wording alone would mean "nothing".
        if names in _POSITION_HEADS and rng.random() < _NONE_POSITION_SHARE:
            directions = tuple(_DIRECTION_TEXT)
            templates = _DIRECTION_TEXT[directions[int(rng.integers(len(directions)))]]
            text = templates[int(rng.integers(len(templates)))].format(d=phrase)
        else:
            text = f"the {phrase}"
        if text not in {e.text for e in out}:
            out.append(Expression(text, "none", frozenset()))
    return out
