"""ModelFile: the one place a model path is opened (kind, refusals, one metadata read, tokenizer, vocabulary)."""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import onnx
import pytest

import lvg.core.model_file as model_file_module
from lvg.core import artifact as art
from lvg.core.headers import read_onnx_metadata
from lvg.core.model_file import ModelFile
from lvg.core.tokenizer import Tokenizer, train_sentencepiece
from lvg.errors import ArtifactError, CheckpointError, ConfigError, TokenizerError
from tests.helpers.artifacts import make_checkpoint


def test_onnx_metadata_is_read_from_the_protobuf_as_onnx_reads_it(artifacts) -> None:
    for path in artifacts.onnx.values():
        want = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert read_onnx_metadata(path) == want
        assert ModelFile.open(path).metadata == want


def test_broken_onnx_files_are_refused_before_any_session(artifacts, tmp_path: Path) -> None:
    data = artifacts.onnx[("lvg-tiny", False)].read_bytes()
    cases = {
        "cut.onnx": data[: len(data) // 2],
        "garbage.onnx": b"this is not a protobuf" * 10,
        "pickle.onnx": pickle.dumps({"state_dict": list(range(100))}),
        "graphless.onnx": onnx.ModelProto(ir_version=8, producer_name="x").SerializeToString(),
    }
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(ArtifactError, match="not a loadable ONNX model"):
            ModelFile.open(tmp_path / name)


def test_kind_and_refusals_by_name(artifacts, tmp_path: Path) -> None:
    assert ModelFile.open(artifacts.onnx[("lvg-tiny", True)]).kind == "onnx"
    checkpoint = ModelFile.open(artifacts.ckpt["lvg-tiny"])
    assert checkpoint.kind == "torch" and checkpoint.config.name == "lvg-tiny"
    assert ModelFile.open(checkpoint) is checkpoint
    evil = tmp_path / "weights.pth"
    evil.write_bytes(b"\x80\x04 not even read")
    with pytest.raises(ArtifactError, match="pickles, which can run code"):
        ModelFile.open(evil)
    with pytest.raises(ArtifactError, match="unknown model file type '.txt'"):
        ModelFile.open(tmp_path / "model.txt")
    with pytest.raises(ArtifactError, match="directory"):
        ModelFile.open(tmp_path)
    with pytest.raises(ArtifactError, match="model not found"):
        ModelFile.open(tmp_path / "nothing.onnx")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ArtifactError, match="empty"):
        ModelFile.open(tmp_path / "empty.onnx")


def test_checkpoint_errors_are_checkpoint_errors(artifacts, tmp_path: Path) -> None:
    # Every failure of a .safetensors file (or of a path that had to be one) is a CheckpointError, which is
    # also an ArtifactError: the runtime and the training code catch it as they always did.
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        ModelFile.open(tmp_path / "nope.safetensors")
    notes = tmp_path / "notes.safetensors"
    notes.write_text("hello, not a checkpoint")
    with pytest.raises(CheckpointError, match="not a safetensors checkpoint"):
        ModelFile.open(notes)
    with pytest.raises(CheckpointError, match="not a .safetensors checkpoint"):
        ModelFile.open(artifacts.onnx[("lvg-tiny", False)], checkpoint=True)
    with pytest.raises(CheckpointError, match="checkpoint path is a directory"):
        ModelFile.open(tmp_path, checkpoint=True)
    assert issubclass(CheckpointError, ArtifactError)


def test_tokenizer_explicit_then_embedded_then_beside(artifacts, tmp_path: Path) -> None:
    own = artifacts.spm.read_bytes()
    other = train_sentencepiece(["completely different words here"] * 3, tmp_path / "other.spm", vocab_size=40)
    embedded = ModelFile.open(artifacts.ckpt["lvg-tiny"])
    assert embedded.tokenizer().model_bytes == own
    assert embedded.tokenizer(other).model_bytes == other.read_bytes()  # explicit first
    assert embedded.is_own(embedded.tokenizer()) and not embedded.is_own(Tokenizer.from_file(other))

    bare = make_checkpoint("lvg-tiny", tmp_path / "bare.safetensors", artifacts.spm, with_tokenizer=False)
    assert ModelFile.open(bare).tokenizer() is None
    assert ModelFile.open(bare).is_own(Tokenizer.from_file(other))  # nothing to be another model's
    (tmp_path / "bare.spm").write_bytes(other.read_bytes())  # <stem>.spm
    assert ModelFile.open(bare).tokenizer().model_bytes == other.read_bytes()
    (tmp_path / "bare.safetensors.spm").write_bytes(own)  # <name>.spm comes first
    beside = ModelFile.open(bare)
    assert beside.tokenizer().model_bytes == own and not beside.is_own(Tokenizer.from_file(other))


def test_vocabulary_check(artifacts, tmp_path: Path) -> None:
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 7))) for _ in range(3000)]
    big = train_sentencepiece([" ".join(words[i : i + 8]) for i in range(0, 3000, 8)], tmp_path / "big.spm",
                              vocab_size=900)
    assert Tokenizer.from_file(big).vocab_size > 512  # lvg-tiny embeds 512 ids
    with pytest.raises(TokenizerError, match="embeds only 512") as info:
        ModelFile.open(artifacts.ckpt["lvg-tiny"]).tokenizer(big)
    assert isinstance(info.value, ArtifactError) and isinstance(info.value, ConfigError)


def test_each_way_in_reads_the_header_once(artifacts, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from lvg.export.onnx_export import export_onnx
    from lvg.modeling import load_checkpoint
    from lvg.runtime.grounder import Grounder

    reads: list[Path] = []
    real = model_file_module.read_header
    monkeypatch.setattr(model_file_module, "read_header", lambda p, kind: reads.append(p) or real(p, kind))
    for run in (
        lambda: Grounder.load(artifacts.onnx[("lvg-tiny", False)], device="cpu"),
        lambda: Grounder.load(artifacts.ckpt["lvg-tiny"], device="cpu"),
        lambda: load_checkpoint(artifacts.ckpt["lvg-tiny"]),
        lambda: export_onnx(artifacts.ckpt["lvg-tiny"], tmp_path / "m.onnx", check=False, simplify=False),
    ):
        reads.clear()
        run()
        assert len(reads) == 1, reads


def test_artifact_info_keys_are_the_exporters(artifacts) -> None:
    info = ModelFile.open(artifacts.onnx[("lvg-tiny-gres", True)]).info
    assert info.precision == "fp16" and info.gres and info.tokenizer_identity.startswith("spm-sha256:")
    assert info.metadata[art.KEY_FORMAT] == art.FORMAT


def test_sidecars_linking_outside_the_models_folder_are_refused(micro, tmp_path: Path) -> None:
    # A tokenizer or engine sidecar is named after the model file, never taken from elsewhere: a link to a file
    # in another folder is refused; a link within the folder is fine.
    models, outside = tmp_path / "models", tmp_path / "outside"
    models.mkdir()
    outside.mkdir()
    bare = make_checkpoint("lvg-tiny", models / "bare.safetensors", micro.spm, with_tokenizer=False)
    (outside / "secret.spm").write_bytes(micro.spm.read_bytes())
    (models / "bare.spm").symlink_to(outside / "secret.spm")
    with pytest.raises(CheckpointError, match="outside its folder"):
        ModelFile.open(bare)
    (models / "bare.spm").unlink()
    (models / "own.spm").write_bytes(micro.spm.read_bytes())
    (models / "bare.spm").symlink_to("own.spm")
    assert ModelFile.open(bare).tokenizer().model_bytes == micro.spm.read_bytes()

    meta = dict(ModelFile.open(micro.onnx).metadata, **{art.KEY_TRT_BATCH: "1"})
    engine = models / "m.engine"
    engine.write_bytes(b"an engine's bytes")
    (outside / "meta.json").write_text(json.dumps(meta))
    (models / "m.engine.json").symlink_to(outside / "meta.json")
    with pytest.raises(ArtifactError, match="outside its folder"):
        ModelFile.open(engine)
    (models / "m.engine.json").unlink()
    (models / "meta.json").write_text(json.dumps(meta))
    (models / "m.engine.json").symlink_to("meta.json")
    assert ModelFile.open(engine).info.batch == 1


def test_the_embedded_tokenizer_travels_deflated_and_files_with_plain_base64_still_open(artifacts,
                                                                                      tmp_path: Path) -> None:
    import base64
    import zlib

    import torch

    from lvg.modeling import build_model, save_checkpoint

    own = artifacts.spm.read_bytes()
    value = art.tokenizer_metadata(own, "spm-sha256:0")[art.KEY_TOKENIZER_SPM]
    assert value.startswith("zlib:") and len(value) < len(base64.b64encode(own)) * 0.8
    torch.manual_seed(0)
    model = build_model("lvg-tiny").eval()

    def opened(text: str) -> ModelFile:
        path = save_checkpoint(model, tmp_path / f"m{len(text)}.safetensors",
                               metadata={art.KEY_TOKENIZER_SPM: text, art.KEY_TOKENIZER_IDENTITY: "spm-sha256:0"})
        return ModelFile.open(path)

    assert opened(value).tokenizer().model_bytes == own
    assert opened(base64.b64encode(own).decode("ascii")).tokenizer().model_bytes == own  # written before deflating
    for bad, match in [("zlib:" + base64.b64encode(b"not deflated").decode(), "not valid zlib"),
                       ("zlib:" + base64.b64encode(zlib.compress(own)[:-20]).decode(), "cut short"),
                       ("zlib:%%%", "not valid base64")]:
        with pytest.raises(ArtifactError, match=match):
            opened(bad).tokenizer()


def test_an_embedded_tokenizer_that_inflates_past_the_limit_is_refused(artifacts, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from lvg.modeling import build_model, save_checkpoint

    monkeypatch.setattr(art, "MAX_TOKENIZER_BYTES", 1000)  # a small bar instead of a 64 MB bomb
    torch.manual_seed(0)
    path = save_checkpoint(build_model("lvg-tiny").eval(), tmp_path / "m.safetensors",
                           metadata=art.tokenizer_metadata(artifacts.spm.read_bytes(), "spm-sha256:0"))
    with pytest.raises(ArtifactError, match="inflates past 1000 bytes"):
        ModelFile.open(path).tokenizer()
