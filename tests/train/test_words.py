"""The auxiliary losses of lvg.train.words (direction and attribute words, per-patch shape): labels from the
words, and runs that train the classifiers, keep them out of the model's weights and resume exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lvg.errors import ConfigError
from lvg.modeling import build_model
from lvg.modeling.checkpoint import read_checkpoint_tensors
from lvg.train.config import TrainConfig
from lvg.train.data import open_dataset
from lvg.train.patch_labels import IGNORE
from lvg.train.synth.language import expression_kind
from lvg.train.trainer import train
from lvg.train.words import ATTRIBUTE_WORDS, DIRECTIONS, WordsNet, attribute_classes, direction_class, with_word_losses


@pytest.mark.parametrize(("text", "direction"), [
    ("the leftmost green star", "left"),
    ("the red circle on the right", "right"),
    ("The topmost small square", "up"),
    ("the star at the bottom", "down"),
    ("the green star left of the red circle", "left"),
    ("the cup above the plate", "up"),
    ("the dog under the table", "down"),
    ("man on left", "left"),
    ("upper right corner", "up"),  # the first direction word decides
    ("the right one to the left of the car", "right"),
    ("the big red shape", None),
    ("a bright light", None),  # "right" inside a word is not a direction
    ("copyright notice", None),
])
def test_direction_class_names_the_first_direction_word(text: str, direction: str | None) -> None:
    assert direction_class(text) == (0 if direction is None else 1 + DIRECTIONS.index(direction))


@pytest.mark.parametrize(("text", "words"), [
    ("the small blue square", {"size": "small", "colour": "blue", "shape": "square"}),
    ("The BIG dotted purple hexagon", {"size": "large", "texture": "dotted", "colour": "purple", "shape": "hexagon"}),
    ("the little solid star", {"size": "small", "texture": "solid", "shape": "star"}),
    # The reference object's words are not the target's.
    ("the red circle left of the striped blue square", {"colour": "red", "shape": "circle"}),
    ("the shape above the green triangle", {}),
    ("the star under the big circle", {"shape": "star"}),
    ("the square to the right of the dotted star", {"shape": "square"}),
    ("the leftmost green star", {"colour": "green", "shape": "star"}),
    ("the circle on the right", {"shape": "circle"}),
    ("all red shapes", {"colour": "red"}),  # "shapes" names no shape
    ("the three stars", {"shape": "star"}),
    ("the red or blue circle", {"colour": "red", "shape": "circle"}),  # the first word of a group decides
    ("man on left", {}),
    ("a reddish star", {"shape": "star"}),  # whole words only
])
def test_attribute_classes_name_the_target_phrases_words(text: str, words: dict[str, str]) -> None:
    expected = tuple(1 + values.index(words[g]) if g in words else 0 for g, values in ATTRIBUTE_WORDS.items())
    assert attribute_classes(text) == expected


def test_every_generated_attribute_expression_has_its_shape_or_an_attribute_word(synth_dataset) -> None:
    source = open_dataset(synth_dataset.out_dir, split="train", prefer_gres=False)
    seen = 0
    for sample in source.samples:
        for text in sample.sentences:
            if expression_kind(text, 1) == "attribute":
                seen += 1
                assert any(attribute_classes(text)), text
    assert seen > 0


def test_every_generated_position_and_relation_expression_has_a_direction(synth_dataset) -> None:
    source = open_dataset(synth_dataset.out_dir, split="train", prefer_gres=False)
    kinds = {"attribute": 0, "position": 0, "relation": 0}
    for sample in source.samples:
        for text in sample.sentences:
            kind = expression_kind(text, 1)
            kinds[kind] += 1
            assert (direction_class(text) != 0) == (kind != "attribute"), (kind, text)
    assert min(kinds.values()) > 0, kinds


def _cfg(data: Path, **kw) -> TrainConfig:
    base = dict(variant="lvg-tiny", data=str(data), steps=4, batch_size=4, val_split=None, lr=1e-3,
                warmup_steps=1, log_every=1, save_every=0, seed=11, loss_direction=1.0)
    base.update(kw)
    return TrainConfig(**base)


_HEAD = "train/direction_head/"


@pytest.mark.parametrize(("weights", "logged", "heads"), [
    ({}, {"loss_direction"}, {"classifier"}),
    ({"loss_attribute_words": 0.5}, {"loss_direction", "loss_attribute_words"},
     {"classifier", *(f"attribute_classifiers.{g}" for g in ATTRIBUTE_WORDS)}),
    ({"loss_direction": 0.0, "loss_attribute_words": 1.0}, {"loss_attribute_words"},
     {f"attribute_classifiers.{g}" for g in ATTRIBUTE_WORDS}),
    ({"loss_direction": 0.0, "loss_direction_latent": 1.0}, {"loss_latent_direction"}, {"classifier"}),
    ({"loss_direction_latent": 0.5}, {"loss_direction", "loss_latent_direction"}, {"classifier"}),
    ({"loss_direction": 0.0, "loss_patch_shape": 1.0}, {"loss_patch_shape"}, {"patch_shape_classifier"}),
])
def test_a_run_with_the_word_losses_resumes_exactly_and_keeps_the_classifiers_out_of_the_model(
        tmp_path: Path, synth_dataset, weights: dict[str, float], logged: set[str], heads: set[str]) -> None:
    data = synth_dataset.out_dir
    full = train(_cfg(data, **weights), tmp_path / "full", show_progress=False)
    rows = [row for row in full.history if "loss" in row]
    words = ("loss_direction", "loss_attribute_words", "loss_latent_direction", "loss_patch_shape")
    assert rows and all({k for k in row if k in words} == logged for row in rows)
    train(_cfg(data, **weights), tmp_path / "split", show_progress=False, stop_at_step=2)
    train(_cfg(data, **weights), tmp_path / "split", show_progress=False, resume=True)
    a, b = (read_checkpoint_tensors(tmp_path / run / "last.safetensors") for run in ("full", "split"))
    assert {k for k in a if k.startswith(_HEAD)} == {f"{_HEAD}{h}.{p}" for h in heads for p in ("weight", "bias")}
    # Reading the heads alone gives exactly those tensors (the model and optimizer state left unread).
    only = read_checkpoint_tensors(tmp_path / "full" / "last.safetensors", prefix=_HEAD)
    assert only.keys() == {k for k in a if k.startswith(_HEAD)} and all(torch.equal(v, a[k]) for k, v in only.items())
    assert set(a) == set(b) and [k for k in a if not torch.equal(a[k], b[k])] == []
    # The classifier trained with the model, and the model's own weights are exactly the variant's.
    assert read_checkpoint_tensors(tmp_path / "full" / "last.safetensors", model_only=True).keys() == \
        build_model("lvg-tiny").state_dict().keys()
    # The optimizer moves every classifier: the split run's step-2 checkpoint (now prev) differs from step 4.
    two = read_checkpoint_tensors(tmp_path / "split" / "prev.safetensors")
    assert all(not torch.equal(two[f"{_HEAD}{h}.weight"], a[f"{_HEAD}{h}.weight"]) for h in heads)


def _inputs(cfg, b: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from lvg.export.onnx_export import example_inputs

    return example_inputs(cfg, b, seed=5)


def test_the_latent_direction_loss_is_the_shared_classifiers_cross_entropy_on_every_latent() -> None:
    torch.manual_seed(0)
    net = WordsNet(build_model("lvg-tiny"), direction=False, latent_direction=True)
    out = net(*_inputs(net.model.cfg))
    latents = out["latent_embeddings"]  # (B, N, E)
    assert latents.shape[1] >= 2
    labels = torch.tensor([0, 1, 3])
    zero = {"total": torch.zeros(())}
    parts = with_word_losses(zero, out, {"direction": labels}, 0.0, latent_weight=2.0)
    # The mean over every (sample, latent) of the t_o classifier's cross-entropy, each latent scored alone.
    each = [torch.nn.functional.cross_entropy(net.classifier(latents[:, i]), labels, reduction="none")
            for i in range(latents.shape[1])]
    want = torch.stack(each).mean()
    assert torch.allclose(parts["latent_direction"], want, atol=1e-6)
    assert torch.allclose(parts["total"], 2.0 * want, atol=1e-6) and "direction" not in parts
    # It trains the latent expressions (their initialiser), not only the classifier.
    parts["total"].backward()
    grads = [p.grad for p in net.model.latent_init.parameters() if p.requires_grad]
    assert grads and any(g is not None and float(g.abs().sum()) > 0 for g in grads)


def test_the_latent_direction_loss_refuses_a_variant_without_latents() -> None:
    with pytest.raises(ConfigError, match="lvg-tiny-nolatent has none"):
        WordsNet(build_model("lvg-tiny-nolatent"), direction=True, latent_direction=True)


def test_the_patch_shape_loss_reads_object_patches_only_and_trains_the_encoder() -> None:
    torch.manual_seed(0)
    net = WordsNet(build_model("lvg-tiny"), direction=False, patch_shape=True)
    out = net(*_inputs(net.model.cfg))
    logits = out["patch_shape_logits"]  # (B, n, shapes)
    b, n, c = logits.shape
    assert n == net.model.cfg.encoder.num_patches
    labels = torch.full((b, n), IGNORE)
    labels[0, :5], labels[2, 7] = torch.arange(5) % c, 1
    zero = {"total": torch.zeros(())}
    parts = with_word_losses(zero, out, {"patch_shape": labels}, 0.0, patch_shape_weight=0.5)
    on = labels >= 0
    want = torch.nn.functional.cross_entropy(logits[on], labels[on])
    assert torch.allclose(parts["patch_shape"], want, atol=1e-6) and torch.allclose(parts["total"], 0.5 * want)
    # Background patches (IGNORE) do not count: changing their logits leaves the loss as it is.
    moved = {**out, "patch_shape_logits": torch.where(on[..., None], logits, logits + 3.0)}
    again = with_word_losses(zero, moved, {"patch_shape": labels}, 0.0, patch_shape_weight=0.5)
    assert torch.allclose(again["patch_shape"], want, atol=1e-6)
    parts["total"].backward()
    grads = [p.grad for p in net.model.beit3.parameters() if p.requires_grad]
    assert any(g is not None and float(g.abs().sum()) > 0 for g in grads)
    # A batch with no object patch gives a zero, not a NaN.
    empty = with_word_losses(zero, out, {"patch_shape": torch.full((b, n), IGNORE)}, 0.0, patch_shape_weight=1.0)
    assert float(empty["patch_shape"].detach()) == 0.0
    with pytest.raises(ConfigError, match="loss_patch_shape needs"):
        with_word_losses(zero, out, {}, 0.0, patch_shape_weight=1.0)


def test_the_patch_shape_loss_from_the_branch_trains_the_branch_alone() -> None:
    """With ``patch_shape_from = "branch"`` the classifier reads the shape branch's patch-grid features, in the
    patch grid's raster order (the labels' order): its loss moves the branch's convolutions and no other
    weight of the model."""
    torch.manual_seed(1)
    net = WordsNet(build_model("lvg-tiny-xy-stem-relpos-branch"), direction=False, patch_shape=True,
                   patch_shape_from="branch")
    branch = net.model.shape_branch
    assert net.patch_shape_classifier.in_features == branch.channels
    inputs = _inputs(net.model.cfg)
    out = net(*inputs)
    b, n = out["patch_shape_logits"].shape[:2]
    g = net.model.cfg.encoder.grid
    assert n == g * g
    grid = branch.grid(inputs[0])  # (B, w, g, g)
    torch.testing.assert_close(out["shape_grid"][:, 1 * g + 2], grid[:, :, 1, 2])
    labels = torch.full((b, n), IGNORE)
    labels[:, :4] = 2
    parts = with_word_losses({"total": torch.zeros(())}, out, {"patch_shape": labels}, 0.0, patch_shape_weight=1.0)
    parts["total"].backward()
    moved = {name for name, p in net.model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert moved and all(k.startswith("shape_branch.down.") for k in moved), sorted(moved)
    assert net.patch_shape_classifier.weight.grad.abs().sum() > 0


def test_the_patch_shape_loss_from_the_branch_needs_one() -> None:
    with pytest.raises(ConfigError, match="reads the shape branch; lvg-tiny has none"):
        WordsNet(build_model("lvg-tiny"), direction=False, patch_shape=True, patch_shape_from="branch")
    with pytest.raises(ConfigError, match="patch_shape_from must be 'tokens' or 'branch', got 'pixels'"):
        WordsNet(build_model("lvg-tiny"), direction=False, patch_shape=True, patch_shape_from="pixels")


@pytest.mark.parametrize("name", ["loss_direction", "loss_attribute_words", "loss_direction_latent",
                                  "loss_patch_shape"])
def test_a_negative_auxiliary_weight_is_a_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match=f"{name} must be >= 0, got -0.5"):
        TrainConfig(**{name: -0.5})


def test_the_shape_match_classifiers_train_on_their_own_losses_in_a_real_run(tmp_path: Path, synth_dataset) -> None:
    variant = "lvg-tiny-xy-stem-relpos-branch-tokens-ctx-match"
    cfg = _cfg(synth_dataset.out_dir, variant=variant, steps=2, save_every=1, loss_direction=0.0,
               loss_patch_shape=1.0, patch_shape_from="branch", loss_shape_word=1.0)
    result = train(cfg, tmp_path / "run", show_progress=False)
    rows = [row for row in result.history if "loss" in row]
    assert rows and all(row["loss_shape_word"] > 0 and row["loss_patch_shape"] > 0 for row in rows)
    last = read_checkpoint_tensors(tmp_path / "run" / "last.safetensors")
    # The per-patch shape loss trained the model's own classifier: no training-only copy beside it.
    assert not [k for k in last if k.startswith(_HEAD)]
    assert read_checkpoint_tensors(tmp_path / "run" / "last.safetensors", model_only=True).keys() == \
        build_model(variant).state_dict().keys()
    first = read_checkpoint_tensors(tmp_path / "run" / "prev.safetensors")  # step 1
    for name in ("shape_match.word.weight", "shape_match.focus.weight", "shape_match.patch.weight"):
        assert not torch.equal(first[name], last[name]), name  # each classifier learns from the first steps
    with pytest.raises(ConfigError, match="head.shape_match"):
        train(_cfg(synth_dataset.out_dir, loss_shape_word=1.0), tmp_path / "plain", show_progress=False)
