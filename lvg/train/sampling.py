"""Which sentences a training step reads: several per image, and expression kinds in curriculum order.

One-sentence-per-sample epochs (:class:`~lvg.train.distributed.ShardedBatchSampler`) let a model that
segments every salient object, whatever the sentence says, lower its loss for a long time. Two things
here make such a mask wrong within a step:

- **Groups**: a batch of ``B`` sentences holds ``B / K`` images with ``K`` sentences each, about different
  targets where the image has them (its other referred objects, a multi-target or a no-target
  expression), so one text-independent mask cannot fit them all.
- **Curriculum**: expression kinds join in order (attribute expressions first, positions and relations
  once the model reads colours and shapes), from a fraction of the run's steps on.

A step's draw is a pure function of ``(seed, step)`` (with replacement across steps, no epochs), so a run
resumed at any step reads exactly what the uninterrupted run would have, and ranks under ``torchrun``
take disjoint slices of one global batch. This module is torch-free.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from lvg.errors import ConfigError
from lvg.train.config import CurriculumStep
from lvg.train.data import ReferSource, flip_allowed, mentions_colour
from lvg.train.synth import expression_kind

__all__ = ["FLIP_PROBABILITY", "GroupBatchSampler", "JITTER_PROBABILITY", "Planned", "SentenceIndex", "allowed_kinds"]

FLIP_PROBABILITY = 0.5
JITTER_PROBABILITY = 0.8


class Planned(NamedTuple):
    """One training item: sample, which of its sentences, its augmentations, and ``key``, unique to the
    item within a run (it seeds the item's photometric jitter)."""

    sample_index: int
    sentence_index: int
    flip: bool
    jitter: bool
    key: int


@dataclass(frozen=True)
class SentenceIndex:
    """For every sample of a split: its image, and the kind of each of its sentences."""

    image_of: tuple[int, ...]
    kinds: tuple[tuple[str, ...], ...]
    sentences: tuple[tuple[str, ...], ...]

    @classmethod
    def of(cls, source: ReferSource) -> SentenceIndex:
        kinds = []
        for s in source.samples:
            n = 0 if s.no_target else len(s.ann_ids)
            kinds.append(tuple(expression_kind(t, n) for t in s.sentences))
        return cls(image_of=tuple(s.image_id for s in source.samples), kinds=tuple(kinds),
                   sentences=tuple(s.sentences for s in source.samples))


def allowed_kinds(curriculum: Sequence[CurriculumStep], progress: float) -> frozenset[str]:
    """The expression kinds in use at ``progress`` (fraction of the run's steps done)."""
    delayed = {c.kind: c.start for c in curriculum}
    every = ("attribute", "position", "relation", "multi", "none")
    return frozenset(k for k in every if delayed.get(k, 0.0) <= progress)


class GroupBatchSampler:
    """Yields, for each step in ``[start_step, stop_step)``, this rank's list of :class:`Planned` items.

    Args:
        index: the split's :class:`SentenceIndex`.
        batch_size: sentences per rank and step; ``per_image`` must divide it.
        per_image: sentences per image (K).
        curriculum: delayed kinds; ``total_steps`` turns a step into the progress they are measured in.
        seed, rank, world_size: the draw and this rank's slice of the global batch.
        augment: flips and jitter as :class:`~lvg.train.torch_data.GroundingDataset` applies them (a
            flip only when every sentence of the group allows it, so one image is flipped for all).
    """

    def __init__(self, index: SentenceIndex, *, batch_size: int, per_image: int,
                 curriculum: Sequence[CurriculumStep], total_steps: int, start_step: int, stop_step: int,
                 seed: int, rank: int = 0, world_size: int = 1, augment: bool = True) -> None:
        if per_image < 1 or batch_size % per_image:
            raise ConfigError(f"sentences per image ({per_image}) must divide the batch size ({batch_size})")
        self.index, self.batch_size, self.per_image = index, batch_size, per_image
        self.curriculum, self.total = tuple(curriculum), max(1, total_steps)
        self.start, self.stop = start_step, stop_step
        self.seed, self.rank, self.world, self.augment = seed, rank, world_size, augment
        self._pools: dict[frozenset[str], dict[int, list[tuple[int, list[int]]]]] = {}

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[Planned]]:
        for step in range(self.start, self.stop):
            yield self.step_items(step)[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]

    def _pool(self, kinds: frozenset[str]) -> dict[int, list[tuple[int, list[int]]]]:
        """image -> [(sample, its sentences of an allowed kind)], the samples with at least one."""
        if kinds not in self._pools:
            pool: dict[int, list[tuple[int, list[int]]]] = {}
            for i, (image, ks) in enumerate(zip(self.index.image_of, self.index.kinds)):
                ok = [j for j, k in enumerate(ks) if k in kinds]
                if ok:
                    pool.setdefault(image, []).append((i, ok))
            if not pool:
                raise ConfigError(f"no training sentence of the kinds {sorted(kinds)} the curriculum allows")
            self._pools[kinds] = pool
        return self._pools[kinds]

    def step_items(self, step: int) -> list[Planned]:
        """The global batch of ``step`` (all ranks), images in groups of ``per_image`` sentences."""
        rng = np.random.default_rng([self.seed, 0x6B17, step])
        pool = self._pool(allowed_kinds(self.curriculum, step / self.total))
        images = sorted(pool)
        groups = self.batch_size * self.world // self.per_image
        picks = rng.choice(len(images), size=groups, replace=groups > len(images))
        items: list[Planned] = []
        for g in picks:
            candidates = pool[images[int(g)]]
            order = rng.permutation(len(candidates))
            # Distinct samples (targets) first; an image with fewer than K repeats them.
            chosen = [candidates[int(order[k % len(order)])] for k in range(self.per_image)]
            sentences = [(i, ok[int(rng.integers(len(ok)))]) for i, ok in chosen]
            texts = [self.index.sentences[i][j] for i, j in sentences]
            # Every draw is made whatever the outcome, so one decision never shifts another's stream.
            flip_draw, jitter_draws = rng.random(), rng.random(self.per_image)
            flip = self.augment and flip_draw < FLIP_PROBABILITY and all(flip_allowed(t) for t in texts)
            for (i, j), text, draw in zip(sentences, texts, jitter_draws):
                jitter = self.augment and draw < JITTER_PROBABILITY and not mentions_colour(text)
                items.append(Planned(i, j, flip, jitter, step * self.batch_size * self.world + len(items)))
        return items
