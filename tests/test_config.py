import dataclasses
import json

import pytest

from lvg.config import (
    EncoderConfig,
    LatentConfig,
    ModelConfig,
    PreprocessConfig,
    get_config,
    list_variants,
)
from lvg.errors import ConfigError


def test_named_variants_exist_and_are_frozen():
    names = list_variants()
    for required in ("lvg-b", "lvg-b-nolatent", "lvg-b-gres", "lvg-tiny"):
        assert required in names
    cfg = get_config("lvg-b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "x"  # type: ignore[misc]
    assert get_config("lvg-b") == cfg and get_config("lvg-b") is not cfg


def test_paper_variant_values():
    b = get_config("lvg-b")
    assert (b.encoder.embed_dim, b.encoder.depth, b.encoder.num_heads, b.encoder.ffn_dim) == (768, 12, 12, 3072)
    assert b.encoder.vocab_size == 64010 and b.encoder.vision_positions == 903
    assert b.latent.lengths == (4, 10) and b.latent.dropout == (0.2, 0.15) and b.latent.num_concepts == 100
    assert b.num_tokens == 901 + 40 + (4 + 2) + (10 + 2)
    assert not get_config("lvg-b-nolatent").latent.enabled
    gres = get_config("lvg-b-gres")
    assert gres.head.gres and not gres.latent.subject_distributor


@pytest.mark.parametrize("name", [n for n in list_variants() if n.endswith("-nolatent")])
def test_latent_off_twins_differ_only_in_latent_expressions(name):
    # Table 4 compares each variant with its -nolatent twin: anything else that differed would be measured too.
    # A disabled LatentConfig's other fields build nothing, so only the enabled flag is compared.
    on, off = get_config(name.removesuffix("-nolatent")), get_config(name)
    assert on.latent.enabled and not off.latent.enabled
    assert off.replace(name=on.name, latent=on.latent) == on


@pytest.mark.parametrize("name", list_variants())
def test_json_round_trip(name):
    cfg = get_config(name)
    text = cfg.to_json()
    assert ModelConfig.from_json(text) == cfg
    assert json.loads(text)["latent"]["lengths"] == list(cfg.latent.lengths)


def test_an_unknown_variant_is_one_short_line_with_the_nearest_names():
    """However many variants there are, the error stays one readable line: the closest names and where the
    full list is (``lvg info --list``), not every name."""
    with pytest.raises(ConfigError) as info:
        get_config("lvg-s-xy-stem-relpos-token")
    message = str(info.value)
    assert "\n" not in message and len(message) < 200, message
    assert "'lvg-s-xy-stem-relpos-tokens'" in message and "lvg info --list" in message
    with pytest.raises(ConfigError, match="unknown variant 'qqq'; see `lvg info --list`") as info:
        get_config("qqq")  # nothing close: no guess
    assert "did you mean" not in str(info.value)


def test_bad_configs_are_rejected_with_clear_errors():
    with pytest.raises(ConfigError, match="unknown variant"):
        get_config("lvg-xl")
    with pytest.raises(ConfigError, match="differ in length"):
        ModelConfig(latent=LatentConfig(lengths=(4, 10, 16), dropout=(0.1,)))
    with pytest.raises(ConfigError, match="concept_gain must be 0"):
        ModelConfig(latent=LatentConfig(concept_gain=-1.0))
    with pytest.raises(ConfigError, match="not a multiple"):
        ModelConfig(encoder=EncoderConfig(img_size=481), preprocess=PreprocessConfig(size=481))
    data = get_config("lvg-tiny").to_dict()
    data["latent"]["surprise"] = 1
    with pytest.raises(ConfigError, match="unknown field"):
        ModelConfig.from_dict(data)
    data = get_config("lvg-tiny").to_dict()
    data["latent"]["threshold"] = "median"
    with pytest.raises(ConfigError, match="not one of"):
        ModelConfig.from_dict(data)
    with pytest.raises(ConfigError, match="not valid JSON"):
        ModelConfig.from_json("{")
