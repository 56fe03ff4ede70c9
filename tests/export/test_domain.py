"""Training words and the domain description: written by export, added by ``lvg annotate``, read by the runtime."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import onnx
import pytest

from lvg.core.domain import KEY_DESCRIPTION, KEY_TRAIN_WORDS, SYNTH_DESCRIPTION, vocabulary, words_of
from lvg.core.model_file import ModelFile
from lvg.errors import InputError
from lvg.export.annotate import annotate
from lvg.export.onnx_export import export_onnx


def _meta(path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def _lvg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lvg.cli", *args], capture_output=True, text=True, timeout=300)


def _synth_words(synth_dataset, names=("refcoco-synth", "grefcoco-synth")) -> set[str]:
    """Every word of the training split of the layouts ``names``, read from the files the generator wrote."""
    from lvg.train.data import open_dataset

    words: set[str] = set()
    for name in names:
        source = open_dataset(f"{synth_dataset.out_dir}:{name}", split="train")
        words.update(w for _, s in source.sentences_flat() for w in s.lower().split())
    return words


def test_words_of_normalises_case_punctuation_and_apostrophes():
    assert words_of("The man's  RED-cup!\u200b") == ["the", "man's", "red", "cup"]
    assert words_of("l\u2019homme") == ["l'homme"]
    assert vocabulary(["b a", "A c"]) == ["a", "b", "c"]


def test_export_onnx_records_words_and_description(artifacts, tmp_path):
    from lvg.export.onnx_export import export_onnx

    out = tmp_path / "m.onnx"
    export_onnx(artifacts.ckpt["lvg-tiny"], out, check=False, words=["Red", "red", "cup"], description="a  test\n")
    domain = ModelFile.open(out).info.domain
    assert domain.words == {"red", "cup"} and domain.description == "a test"
    assert domain.unknown_words("the RED rocket, the rocket") == ["the", "rocket"]
    with pytest.raises(InputError, match="description"):
        export_onnx(artifacts.ckpt["lvg-tiny"], tmp_path / "x.onnx", check=False, description="x" * 400)
    assert not (tmp_path / "x.onnx").exists()


def test_annotate_replaces_entries_and_keeps_the_graph(artifacts, tmp_path):
    path = tmp_path / "m.onnx"
    shutil.copy(artifacts.onnx[("lvg-tiny", False)], path)
    before = onnx.load(str(path))
    assert KEY_TRAIN_WORDS not in _meta(path)
    annotate(path, words=["cup", "dog"], description="first")
    annotate(path, words=["cat"])  # re-runnable: replaces the words, keeps the description
    meta = _meta(path)
    assert json.loads(meta[KEY_TRAIN_WORDS]) == ["cat"] and meta[KEY_DESCRIPTION] == "first"
    assert sum(p.key == KEY_TRAIN_WORDS for p in onnx.load(str(path)).metadata_props) == 1
    after = onnx.load(str(path))
    assert after.graph.SerializeToString() == before.graph.SerializeToString()
    before_meta = {p.key: p.value for p in before.metadata_props}
    assert {k: v for k, v in meta.items() if k not in (KEY_TRAIN_WORDS, KEY_DESCRIPTION)} == before_meta
    with pytest.raises(InputError, match="checkpoint"):
        annotate(artifacts.ckpt["lvg-tiny"], description="x")


def test_cli_export_takes_words_from_the_training_data(artifacts, synth_dataset, tmp_path):
    out = tmp_path / "m.onnx"
    proc = _lvg("export", "--ckpt", str(artifacts.ckpt["lvg-tiny"]), "--out", str(out), "--no-check",
                "--train-data", str(synth_dataset.out_dir))
    assert proc.returncode == 0, proc.stderr
    domain = ModelFile.open(out).info.domain
    assert domain.words == _synth_words(synth_dataset) and "hexagon" in domain.words
    assert domain.description == SYNTH_DESCRIPTION


def test_cli_export_finds_the_data_a_checkpoint_names(artifacts, synth_dataset, tmp_path):
    """A checkpoint of ``lvg train`` names its data (``train_config``): no flag needed while it is there."""
    from lvg.modeling.checkpoint import load_checkpoint, save_checkpoint

    model = load_checkpoint(artifacts.ckpt["lvg-tiny"], impl="reference")
    ckpt = tmp_path / "run" / "last.safetensors"
    ckpt.parent.mkdir()
    src = ModelFile.open(artifacts.ckpt["lvg-tiny"], checkpoint=True).metadata
    meta = {k: v for k, v in src.items() if k.startswith("lvg.tokenizer")}
    meta["train_config"] = json.dumps({"data": f"{synth_dataset.out_dir}:grefcoco-synth", "train_split": "train"})
    save_checkpoint(model, ckpt, metadata=meta)
    proc = _lvg("export", "--ckpt", str(ckpt), "--no-check", "--description", "shapes")
    assert proc.returncode == 0, proc.stderr
    domain = ModelFile.open(ckpt.with_suffix(".onnx")).info.domain
    assert domain.description == "shapes" and "warning" not in proc.stderr
    assert domain.words == _synth_words(synth_dataset, ["grefcoco-synth"])
    # Without any data: a warning says the model cannot report unknown words; the export still succeeds.
    proc = _lvg("export", "--ckpt", str(artifacts.ckpt["lvg-tiny"]), "--out", str(tmp_path / "n.onnx"), "--no-check")
    assert proc.returncode == 0 and "no training words recorded" in proc.stderr


def test_cli_export_copies_the_words_a_checkpoint_carries(artifacts, tmp_path):
    """Checkpoints of ``lvg train`` carry their training words: an export needs neither flags nor the data."""
    from lvg.core.domain import domain_metadata
    from lvg.modeling.checkpoint import load_checkpoint, save_checkpoint

    model = load_checkpoint(artifacts.ckpt["lvg-tiny"], impl="reference")
    src = ModelFile.open(artifacts.ckpt["lvg-tiny"], checkpoint=True).metadata
    meta = {k: v for k, v in src.items() if k.startswith("lvg.tokenizer")}
    meta.update(domain_metadata(["the", "red", "cup"], "cups on tables"))
    meta["train_config"] = json.dumps({"data": str(tmp_path / "gone"), "train_split": "train"})
    ckpt = save_checkpoint(model, tmp_path / "last.safetensors", metadata=meta)
    proc = _lvg("export", "--ckpt", str(ckpt), "--no-check")
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr
    domain = ModelFile.open(tmp_path / "last.onnx").info.domain
    assert domain.words == frozenset({"the", "red", "cup"}) and domain.description == "cups on tables"
    # The same from Python; what the caller gives replaces the checkpoint's own.
    export_onnx(ckpt, tmp_path / "api.onnx", check=False, description="cups")
    domain = ModelFile.open(tmp_path / "api.onnx").info.domain
    assert domain.words == frozenset({"the", "red", "cup"}) and domain.description == "cups"


def test_cli_annotate(artifacts, synth_dataset, tmp_path):
    path = tmp_path / "m.onnx"
    shutil.copy(artifacts.onnx[("lvg-tiny-gres", False)], path)
    proc = _lvg("annotate", str(path), "--train-data", str(synth_dataset.out_dir))
    assert proc.returncode == 0, proc.stderr
    assert "training words" in proc.stdout
    domain = ModelFile.open(path).info.domain
    assert domain.words == _synth_words(synth_dataset) and domain.description == SYNTH_DESCRIPTION
    proc = _lvg("annotate", str(path))
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    proc = _lvg("annotate", str(tmp_path / "missing.onnx"), "--description", "x")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
