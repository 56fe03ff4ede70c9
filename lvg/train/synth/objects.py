"""The synthetic world: its attribute vocabularies, the objects of a scene and the expressions about them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["COLOURS", "SHAPES", "SIZES", "TEXTURES", "Expression", "Kind", "SceneObject"]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "hexagon")
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
