"""Group batches and the expression curriculum (lvg.train.sampling), on a real synthetic dataset."""

from __future__ import annotations

import pytest

from lvg.errors import ConfigError
from lvg.train.config import CurriculumStep, TrainConfig
from lvg.train.data import flip_allowed, open_dataset
from lvg.train.sampling import GroupBatchSampler, SentenceIndex, allowed_kinds
from lvg.train.synth import expression_kind

CURRICULUM = (CurriculumStep("position", 0.5), CurriculumStep("relation", 0.75))


@pytest.fixture(scope="module")
def index(synth_dataset) -> SentenceIndex:
    return SentenceIndex.of(open_dataset(synth_dataset.out_dir, split="train", prefer_gres=True))


def _sampler(index: SentenceIndex, **kw) -> GroupBatchSampler:
    base = dict(batch_size=6, per_image=3, curriculum=(), total_steps=100, start_step=0, stop_step=100, seed=1)
    base.update(kw)
    return GroupBatchSampler(index, **base)


def test_groups_share_an_image_and_prefer_distinct_targets(index: SentenceIndex) -> None:
    sampler = _sampler(index)
    for step in range(40):
        items = sampler.step_items(step)
        assert len(items) == 6
        for g in range(0, 6, 3):
            group = items[g:g + 3]
            images = {index.image_of[it.sample_index] for it in group}
            assert len(images) == 1
            image = images.pop()
            own = [i for i, im in enumerate(index.image_of) if im == image]
            # As many different samples (targets) as the image has, up to K.
            assert len({it.sample_index for it in group}) == min(3, len(own))
            # One flip for the whole image, and only when every sentence allows it.
            assert len({it.flip for it in group}) == 1
            texts = [index.sentences[it.sample_index][it.sentence_index] for it in group]
            if group[0].flip:
                assert all(flip_allowed(t) for t in texts)


def test_draws_are_a_function_of_seed_and_step(index: SentenceIndex) -> None:
    a = list(_sampler(index, start_step=0, stop_step=20))
    b = list(_sampler(index, start_step=12, stop_step=20))
    assert a[12:] == b  # a run resumed at step 12 reads what the uninterrupted run read
    assert a != list(_sampler(index, seed=2, stop_step=20))
    keys = [it.key for batch in a for it in batch]
    assert len(keys) == len(set(keys))  # every item seeds its own jitter


def test_ranks_take_disjoint_slices_of_one_global_batch(index: SentenceIndex) -> None:
    ranks = [list(_sampler(index, batch_size=3, world_size=2, rank=r, stop_step=5)) for r in (0, 1)]
    whole = _sampler(index, batch_size=3, world_size=2, stop_step=5)
    for step in range(5):
        assert ranks[0][step] + ranks[1][step] == whole.step_items(step)


def test_curriculum_delays_kinds(index: SentenceIndex) -> None:
    assert allowed_kinds(CURRICULUM, 0.0) == {"attribute", "multi", "none"}
    assert allowed_kinds(CURRICULUM, 0.5) == {"attribute", "multi", "none", "position"}
    assert "relation" in allowed_kinds(CURRICULUM, 0.8)
    sampler = _sampler(index, curriculum=CURRICULUM)

    def kinds(steps: range) -> set[str]:
        return {index.kinds[it.sample_index][it.sentence_index] for s in steps for it in sampler.step_items(s)}

    assert kinds(range(0, 50)) <= {"attribute", "multi", "none"}
    late = kinds(range(75, 100))
    assert {"position", "relation"} & late  # the tiny dataset has a few of each
    # The index's kinds are the generator's own reading of its sentences.
    for i, ks in enumerate(index.kinds):
        n = len(index.sentences[i])
        assert len(ks) == n and all(k == expression_kind(t, 0 if k == "none" else (2 if k == "multi" else 1))
                                    for k, t in zip(ks, index.sentences[i]))


def test_configuration_errors(index: SentenceIndex) -> None:
    with pytest.raises(ConfigError, match="must divide"):
        _sampler(index, batch_size=4, per_image=3)
    with pytest.raises(ConfigError, match="divide batch_size"):
        TrainConfig(batch_size=4, sentences_per_image=3)
    with pytest.raises(ConfigError, match="twice"):
        TrainConfig(curriculum=(CurriculumStep("position", 0.1), CurriculumStep("position", 0.2)))
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        CurriculumStep("relation", 1.0)
    only_relations = SentenceIndex(image_of=(1,), kinds=(("relation",),), sentences=(("the x left of y",),))
    with pytest.raises(ConfigError, match="no training sentence"):
        _sampler(only_relations, curriculum=(CurriculumStep("relation", 0.5),)).step_items(0)
