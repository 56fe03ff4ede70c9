"""Our safetensors checkpoints and official BEiT-3 .pth loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lvg.config import get_config
from lvg.core.model_file import ModelFile
from lvg.errors import CheckpointError, InputError
from lvg.modeling import (
    build_model,
    load_beit3_pretrained,
    load_checkpoint,
    load_weights,
    resolve_device,
    save_checkpoint,
)
from lvg.modeling.checkpoint import resample_patch_kernel
from tests.modeling.conftest import make_inputs


def test_round_trip_reproduces_outputs_exactly(tmp_path):
    torch.manual_seed(0)
    model = build_model("lvg-tiny-gres").eval()
    path = save_checkpoint(model, tmp_path / "ckpt" / "model.safetensors")
    assert [p.name for p in path.parent.iterdir()] == ["model.safetensors"]  # no temp file left behind

    # The config sits in the safetensors header, readable without our code.
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    assert json.loads(meta["config"])["name"] == "lvg-tiny-gres"
    assert ModelFile.open(path).config == model.cfg

    loaded = load_checkpoint(path)
    image, ids, mask = make_inputs(model.cfg, batch=2)
    with torch.no_grad():
        a, b = model(image, ids, mask), loaded(image, ids, mask)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_bad_checkpoints_give_clear_errors(tmp_path):
    model = build_model("lvg-tiny")
    good = save_checkpoint(model, tmp_path / "good.safetensors")

    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match="directory"):
        load_checkpoint(tmp_path)
    text = tmp_path / "notes.safetensors"
    text.write_text("hello, not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(text)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError):
        load_checkpoint(truncated)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a Latent-VG checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(good, expect=get_config("lvg-tiny-gres"))
    # A checkpoint written by a newer format is refused rather than misread (torch and torch-free readers).
    newer = save_checkpoint(model, tmp_path / "newer.safetensors", metadata={"format_version": "99"})
    with pytest.raises(CheckpointError, match="format version '99'"):
        load_checkpoint(newer)
    from lvg.errors import ArtifactError

    with pytest.raises(ArtifactError, match="format version '99'"):
        ModelFile.open(newer)


def test_checkpoint_files_get_the_usual_permissions(tmp_path):
    # Written through a temporary file and a rename, yet readable like any file the user creates.
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    ckpt = save_checkpoint(build_model("lvg-tiny"), tmp_path / "m.safetensors")
    assert ckpt.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
    assert [f.name for f in tmp_path.iterdir() if f.name.endswith(".tmp")] == []


def test_load_weights_needs_the_architecture_not_the_thresholds(tmp_path):
    from dataclasses import replace

    base = get_config("lvg-tiny")
    # As if lvg-tiny's thresholds and dropout had been retuned since this run was made.
    older = base.replace(
        encoder=replace(base.encoder, drop_path_rate=0.1),
        preprocess=replace(base.preprocess, mask_threshold=0.2, no_target_threshold=0.8),
    )
    torch.manual_seed(3)
    path = save_checkpoint(build_model(older), tmp_path / "older.safetensors")
    model = build_model("lvg-tiny")
    load_weights(model, path)
    saved = load_checkpoint(path).state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    assert model.cfg == base  # the new run keeps its own settings
    # Resuming (load_checkpoint's expect) still wants the run's exact config.
    with pytest.raises(CheckpointError, match="same name, other config"):
        load_checkpoint(path, expect=base)
    # Another architecture under the same name is refused before any tensor is read.
    wider = base.replace(latent=replace(base.latent, num_concepts=base.latent.num_concepts + 1))
    other = save_checkpoint(build_model(wider), tmp_path / "wider.safetensors")
    with pytest.raises(CheckpointError, match="same name, other config"):
        load_weights(build_model("lvg-tiny"), other)


def test_weights_of_another_shape_are_refused(tmp_path):
    model = build_model("lvg-tiny")
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    # Same header config, but tensors of another variant: rewrite the file by hand.
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    tensors = load_file(str(path))
    tensors["text_head.fc1.weight"] = torch.zeros(3, 3)
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match="other shape.*text_head.fc1.weight"):
        load_checkpoint(path)


# --- official BEiT-3 weights ----------------------------------------------------------------------


def official_beit3_state(d: int, layers: int, ffn: int, vocab: int, grid: int, text_pos: int = 1024):
    """A state dict with the key names and shapes of unilm's ``beit3_*_patch16_224.pth`` (written out here,
    independently of our module tree)."""
    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.02

    sd = {
        "beit3.text_embed.weight": r(vocab, d),
        "beit3.vision_embed.proj.weight": r(d, 3, 16, 16),
        "beit3.vision_embed.proj.bias": r(d),
        "beit3.vision_embed.cls_token": r(1, 1, d),
        "beit3.vision_embed.mask_token": r(1, 1, d),
        "beit3.encoder.embed_positions.A.weight": r(grid * grid + 3, d),
        "beit3.encoder.embed_positions.B.weight": r(text_pos, d),
    }
    for e in "AB":
        sd[f"beit3.encoder.layer_norm.{e}.weight"] = 1 + r(d)
        sd[f"beit3.encoder.layer_norm.{e}.bias"] = r(d)
    for i in range(layers):
        p = f"beit3.encoder.layers.{i}"
        for e in "AB":
            for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                sd[f"{p}.self_attn.{proj}.{e}.weight"] = r(d, d)
                sd[f"{p}.self_attn.{proj}.{e}.bias"] = r(d)
            for ln, n in (("self_attn.inner_attn_ln", d), ("self_attn_layer_norm", d), ("final_layer_norm", d),
                          ("ffn.{e}.ffn_layernorm", ffn)):
                key = ln.format(e=e)
                name = f"{p}.{key}" if "{e}" in ln else f"{p}.{key}.{e}"
                sd[f"{name}.weight"] = 1 + r(n)
                sd[f"{name}.bias"] = r(n)
            sd[f"{p}.ffn.{e}.fc1.weight"] = r(ffn, d)
            sd[f"{p}.ffn.{e}.fc1.bias"] = r(ffn)
            sd[f"{p}.ffn.{e}.fc2.weight"] = r(d, ffn)
            sd[f"{p}.ffn.{e}.fc2.bias"] = r(d)
    return sd


def _bicubic_reference(table: torch.Tensor, g1: int) -> torch.Tensor:
    g0 = int((table.shape[0] - 3) ** 0.5)
    grid = table[3:].T.reshape(1, -1, g0, g0)
    out = F.interpolate(grid, size=(g1, g1), mode="bicubic", align_corners=False)
    return torch.cat([table[:3], out.reshape(-1, g1 * g1).T])


@pytest.mark.slow
def test_official_224_checkpoint_loads_into_lvg_b(tmp_path):
    sd = official_beit3_state(768, 12, 3072, 64010, 14)
    sd["head.weight"] = torch.zeros(2, 768)  # a classification head of a fine-tuned model
    path = tmp_path / "beit3_base_patch16_224.pth"
    torch.save({"model": sd}, path)
    model = build_model("lvg-b")
    report = load_beit3_pretrained(model, path)
    assert report.missing == []
    assert report.unexpected == ["head.weight"]
    key = "beit3.encoder.embed_positions.A.weight"
    assert report.resampled == {key: ((199, 768), (903, 768))}
    own = model.state_dict()
    torch.testing.assert_close(own[key], _bicubic_reference(sd[key], 30))
    for k in ("beit3.text_embed.weight", "beit3.encoder.layers.11.ffn.B.fc2.weight",
              "beit3.encoder.layers.3.self_attn.inner_attn_ln.A.bias", "beit3.encoder.layer_norm.B.weight"):
        assert torch.equal(own[k], sd[k]), k
    assert report.new > 40e6  # heads and latent parts stay freshly initialised
    assert "resampled" in report.summary()


def test_384_position_table_resamples_and_small_model_loads(tmp_path):
    cfg = get_config("lvg-tiny")
    enc = cfg.encoder
    sd = official_beit3_state(enc.embed_dim, enc.depth, enc.ffn_dim, enc.vocab_size, 24, enc.max_text_positions)
    sd["beit3.vision_embed.proj.weight"] = torch.randn(enc.embed_dim, 3, 32, 32)
    path = tmp_path / "beit3.pth"
    torch.save(sd, path)  # also accepted without the {"model": ...} wrapper
    model = build_model(cfg)
    report = load_beit3_pretrained(model, path)
    assert report.missing == [] and report.unexpected == []
    key = "beit3.encoder.embed_positions.A.weight"
    assert report.resampled[key] == ((579, enc.embed_dim), (228, enc.embed_dim))
    torch.testing.assert_close(model.state_dict()[key], _bicubic_reference(sd[key], 15))


def test_non_beit3_files_are_refused(tmp_path):
    model = build_model("lvg-tiny")
    other = tmp_path / "resnet.pth"
    torch.save({"model": {"conv1.weight": torch.zeros(1)}}, other)
    with pytest.raises(CheckpointError, match="not a BEiT-3 state dict"):
        load_beit3_pretrained(model, other)
    with pytest.raises(CheckpointError, match="not found"):
        load_beit3_pretrained(model, tmp_path / "nothing.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_beit3_pretrained(model, junk)
    wide = official_beit3_state(32, 1, 64, 512, 14)
    path = tmp_path / "wide.pth"
    torch.save({"model": wide}, path)
    with pytest.raises(CheckpointError, match="another size"):
        load_beit3_pretrained(model, path)


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED_MARKER",))


def test_pickle_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    torch.save({"model": {"beit3.text_embed.weight": torch.zeros(1)}, "x": _Exploit()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_beit3_pretrained(build_model("lvg-tiny"), path)
    assert not Path("PWNED_MARKER").exists()


def test_resolve_device_picks_what_exists_and_refuses_the_rest():
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert resolve_device(None) == resolve_device("auto") == (torch.device("cuda", 0) if gpus else torch.device("cpu"))
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(InputError, match="unknown device"):
        resolve_device("gpu0")
    with pytest.raises(InputError, match="unsupported device"):
        resolve_device("meta")
    with pytest.raises(InputError, match="GPU"):
        resolve_device(f"cuda:{gpus}")  # one past the last GPU (or any GPU, where there is none)
    if gpus:
        assert resolve_device("cuda", index=gpus - 1) == torch.device("cuda", gpus - 1)


@pytest.mark.parametrize(("old", "new"), [(32, 16), (32, 8), (8, 16)])
def test_a_resized_patch_kernel_answers_a_patch_as_the_old_one_answered_it_at_the_old_size(old, new):
    # Pseudo-inverse resizing: the new kernel on a patch == the old kernel on that patch resized to the old
    # size, nearest-neighbour (exact when the old size is the larger; when it is the smaller, a patch that is
    # constant on the new kernel's blocks of the old pixels).
    torch.manual_seed(0)
    weight = torch.randn(5, 3, old, old, dtype=torch.float64)
    resized = resample_patch_kernel(weight, new)
    assert resized.shape == (5, 3, new, new)
    small, large = min(old, new), max(old, new)
    patch = torch.randn(2, 3, small, small, dtype=torch.float64)
    upsampled = F.interpolate(patch, size=(large, large), mode="nearest")
    at_small, at_large = (weight, resized) if old == small else (resized, weight)
    torch.testing.assert_close(F.conv2d(patch, at_small, stride=small), F.conv2d(upsampled, at_large, stride=large))


def test_a_patch_kernel_is_not_resized_by_a_fraction():
    with pytest.raises(CheckpointError, match="not an integer ratio"):
        resample_patch_kernel(torch.zeros(4, 3, 32, 32), 24)
