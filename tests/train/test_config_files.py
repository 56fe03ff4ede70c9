"""benchmarks/configs/*.toml and the recipes: every shipped training config loads, names a known variant and
trains something; ``base = "other.toml"`` layers one config over another inside one folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvg.config import list_variants
from lvg.errors import ConfigError
from lvg.train.config import BASE_KEY, TrainConfig

tomllib = pytest.importorskip("tomllib")  # TOML configs need Python 3.11+

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "benchmarks" / "configs").glob("*.toml"))
SHIPPED = CONFIGS + sorted((ROOT / "lvg" / "train" / "recipes").glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_loads(path: Path) -> None:
    cfg = TrainConfig.from_file(path)
    assert cfg.variant in list_variants()
    assert cfg.steps > 0 or cfg.epochs > 0
    assert cfg.data.startswith("data/")  # relative to the folder the README's commands run from


def test_the_finetune_config_groups_sentences_by_image() -> None:
    cfg = TrainConfig.from_file(next(p for p in CONFIGS if p.stem == "lvg-s-finetune"))
    assert cfg.sentences_per_image == 3 and cfg.batch_size % cfg.sentences_per_image == 0 and not cfg.curriculum


def _keys_along(path: Path) -> set[str]:
    """The keys that ``path`` and its base files set themselves."""
    own = tomllib.loads(path.read_text())
    base = own.pop(BASE_KEY, None)
    return set(own) | (_keys_along(path.parent / base) if base else set())


@pytest.mark.parametrize("path", [p for p in SHIPPED if BASE_KEY in tomllib.loads(p.read_text())],
                         ids=lambda p: p.stem)
def test_a_shipped_variant_lists_only_what_it_changes(path: Path) -> None:
    own = tomllib.loads(path.read_text())
    base_file = path.parent / own.pop(BASE_KEY)
    base, derived = TrainConfig.from_file(base_file).to_dict(), TrainConfig.from_file(path).to_dict()
    assert own, "a variant that changes nothing is its base"
    # Repeating what the base files already say is the copy this layering exists to avoid; naming a default
    # the bases leave unset (a paper value, with its source) is not.
    repeated = [k for k in own if k in _keys_along(base_file) and derived[k] == base[k]]
    assert not repeated, f"{path.name} repeats its base's {repeated}"
    assert {k: v for k, v in derived.items() if k not in own} == {k: v for k, v in base.items() if k not in own}


def test_base_layers_keys_over_a_chain(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('variant = "lvg-tiny"\nsteps = 7\nlr = 5e-4\n'
                                     'curriculum = [{ kind = "none", start = 0.5 }]\n')
    (tmp_path / "b.json").write_text('{"base": "a.toml", "steps": 9, "curriculum": []}')
    (tmp_path / "c.toml").write_text('base = "b.json"\nlr = 1e-3\n')
    c = TrainConfig.from_file(tmp_path / "c.toml")
    # c's own key, then b's (a list is replaced whole, not merged), then a's.
    assert (c.lr, c.steps, c.curriculum, c.variant) == (1e-3, 9, (), "lvg-tiny")
    assert TrainConfig.from_file(tmp_path / "a.toml").steps == 7  # reading a base leaves it as it was


@pytest.mark.parametrize(("files", "match"), [
    ({"x.toml": 'base = "x.toml"'}, r"comes back to a file it has read: x.toml -> x.toml"),
    ({"x.toml": 'base = "y.toml"', "y.toml": 'base = "x.toml"'}, r"x.toml -> y.toml -> x.toml"),
    ({"x.toml": 'base = "../outside.toml"'}, "file name of a config in the same folder"),
    ({"x.toml": 'base = ".."'}, "file name of a config in the same folder"),
    ({"x.toml": "base = 3"}, "file name of a config in the same folder"),
    ({"x.toml": 'base = "missing.toml"'}, "cannot read train config .*missing.toml"),
    ({"x.toml": 'base = "y.toml"', "y.toml": "stepz = 1"}, "unknown field"),
])
def test_bad_bases_are_one_line_errors(tmp_path: Path, files: dict[str, str], match: str) -> None:
    (tmp_path / "outside.toml").write_text("steps = 1\n")
    sub = tmp_path / "configs"
    sub.mkdir()
    for name, text in files.items():
        (sub / name).write_text(text + "\n")
    with pytest.raises(ConfigError, match=match) as err:
        TrainConfig.from_file(sub / "x.toml")
    assert "\n" not in str(err.value)
