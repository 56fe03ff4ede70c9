"""Evaluation at the original resolution, against metrics computed independently from the dataset files.

Constant-output models make the expected numbers exact: a map of ones predicts the whole original image
(letterbox padding removed), a map of zeros predicts nothing, a large no-target logit predicts "no target".
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from lvg.cli import app
from lvg.config import get_config
from lvg.core.artifact import KEY_TOKENIZER_IDENTITY, tokenizer_metadata
from lvg.core.tokenizer import Tokenizer, train_sentencepiece
from lvg.errors import InputError
from lvg.modeling import build_model, save_checkpoint
from lvg.modeling.runner import ArrayRunner
from lvg.train.data import open_dataset
from lvg.train.evaluate import _swap_partners, evaluate
from lvg.train.run_data import TokenizerMismatchWarning, TokenizerUnverifiedWarning, tokenizer_for_checkpoint
from tests.helpers.artifacts import CORPUS


class ConstantModel(nn.Module):
    """Outputs fixed per-expression probabilities (and a fixed no-target logit for GRES configs)."""

    def __init__(self, variant: str, expr_probs: list[float], no_target_logit: float | None = None) -> None:
        super().__init__()
        self.cfg = get_config(variant)
        self.expr_probs = expr_probs
        self.no_target_logit = no_target_logit

    def forward(self, image: torch.Tensor, text_ids: torch.Tensor, text_mask: torch.Tensor) -> dict:
        b, q = image.shape[0], self.cfg.prob_size
        p = torch.tensor(self.expr_probs).clamp(1e-6, 1 - 1e-6)
        logits = torch.logit(p)[None, :, None, None].expand(b, -1, q, q)  # (B, 1+N, q, q)
        out = {"logits": logits, "expression_prob": logits.sigmoid(), "prob": logits.sigmoid().mean(1)}
        if self.no_target_logit is not None:
            out["no_target_logit"] = torch.full((b,), self.no_target_logit)
        return out


def _box_iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


@pytest.fixture(scope="module")
def tokenizer(synth_dataset) -> Tokenizer:
    return Tokenizer.from_file(synth_dataset.tokenizer)


def test_whole_image_prediction_gives_area_fractions(synth_dataset, tokenizer) -> None:
    source = open_dataset(synth_dataset.out_dir, split="val")
    model = ConstantModel("lvg-tiny", [1.0, 1.0, 1.0])
    result = evaluate(ArrayRunner(model), source, "val", tokenizer, batch_size=4)

    ious, inter, union, box_ok = [], 0, 0, []
    for sample in source.samples:
        gt = source.mask(sample)
        for _ in sample.sentences:  # every sentence is one evaluation item
            ious.append(gt.sum() / gt.size)
            inter += int(gt.sum())
            union += gt.size
            box = source.box(sample)
            box_ok.append(_box_iou((0, 0, sample.width, sample.height), box) >= 0.5)
    assert result["task"] == "ris" and result["n"] == len(ious) == source.num_sentences()
    assert result["mIoU"] == pytest.approx(float(np.mean(ious)), rel=1e-9)
    assert result["oIoU"] == pytest.approx(inter / union, rel=1e-9)
    assert result["acc@0.5"] == pytest.approx(float(np.mean(box_ok)))
    assert result["prec@0.5"] == pytest.approx(float(np.mean([i >= 0.5 for i in ious])))
    per = result["per_expression"]
    assert set(per) == {"input", "latent_1", "latent_2"}
    assert per["latent_2"]["mIoU"] == pytest.approx(result["mIoU"], rel=1e-9)


def test_per_expression_maps_are_thresholded_separately(synth_dataset, tokenizer) -> None:
    source = open_dataset(synth_dataset.out_dir, split="val")
    # Input expression says "everywhere", latent 1 "nowhere", latent 2 "everywhere": the average
    # (2/3 > 0.35) predicts everywhere.
    model = ConstantModel("lvg-tiny", [1.0, 0.0, 1.0])
    result = evaluate(ArrayRunner(model), source, "val", tokenizer, batch_size=3, max_sentences=5)
    assert result["n"] == 5
    per = result["per_expression"]
    assert per["latent_1"]["mIoU"] == 0.0 and per["latent_1"]["oIoU"] == 0.0
    assert per["input"]["mIoU"] == pytest.approx(result["mIoU"]) and result["mIoU"] > 0


def test_mask_threshold_is_the_models_unless_given(synth_dataset, tokenizer) -> None:
    source = open_dataset(synth_dataset.out_dir, split="val")
    model = ConstantModel("lvg-tiny", [0.5, 0.5, 0.5])  # every map at 0.5: above 0.35, below 0.6
    default = evaluate(ArrayRunner(model), source, "val", tokenizer, max_sentences=5)
    whole = evaluate(ArrayRunner(ConstantModel("lvg-tiny", [1.0, 1.0, 1.0])), source, "val", tokenizer, max_sentences=5)
    assert default["mask_threshold"] == model.cfg.preprocess.mask_threshold == 0.35
    assert default["mIoU"] == pytest.approx(whole["mIoU"]) and default["mIoU"] > 0
    high = evaluate(ArrayRunner(model), source, "val", tokenizer, max_sentences=5, mask_threshold=0.6)
    assert high["mask_threshold"] == 0.6 and high["mIoU"] == 0.0
    assert all(v["mIoU"] == 0.0 for v in high["per_expression"].values())  # each expression's map too
    with pytest.raises(InputError, match=r"\[0, 1\)"):
        evaluate(ArrayRunner(model), source, "val", tokenizer, mask_threshold=1.0)


def test_gres_no_target_head_decides_empty_predictions(synth_dataset, tokenizer) -> None:
    source = open_dataset(synth_dataset.out_dir, split="val", prefer_gres=True)
    n_sent = source.num_sentences()
    n_empty = sum(len(s.sentences) for s in source.samples if s.no_target)
    assert 0 < n_empty < n_sent

    always_empty = evaluate(ArrayRunner(ConstantModel("lvg-tiny-gres", [1.0, 1.0, 1.0], no_target_logit=8.0)), source,
                            "val", tokenizer)
    assert always_empty["task"] == "gres" and always_empty["n"] == n_sent
    assert always_empty["N-acc"] == 1.0 and always_empty["T-acc"] == 0.0
    assert always_empty["gIoU"] == pytest.approx(n_empty / n_sent)
    assert always_empty["cIoU"] == 0.0

    never_empty = evaluate(ArrayRunner(ConstantModel("lvg-tiny-gres", [1.0, 1.0, 1.0], no_target_logit=-8.0)), source,
                           "val", tokenizer)
    assert never_empty["N-acc"] == 0.0 and never_empty["T-acc"] == 1.0
    fractions = [source.mask(s).mean() for s in source.samples if not s.no_target for _ in s.sentences]
    assert never_empty["gIoU"] == pytest.approx(float(np.sum(fractions)) / n_sent, rel=1e-9)


def test_real_model_is_batch_independent_and_split_checked(synth_dataset, tokenizer) -> None:
    torch.manual_seed(0)
    model = build_model("lvg-tiny").train()
    source = open_dataset(synth_dataset.out_dir, split="val")
    a = evaluate(ArrayRunner(model), source, "val", tokenizer, batch_size=4, task="rec", max_sentences=6)
    assert a["task"] == "rec" and a["n"] == 6 and 0.0 <= a["acc@0.5"] <= 1.0
    assert model.training  # evaluation restores the caller's mode
    b = evaluate(ArrayRunner(model), source, "val", tokenizer, batch_size=3, task="rec", max_sentences=6)
    assert a == b  # eval mode is deterministic and batch-independent
    with pytest.raises(ValueError, match="split"):
        evaluate(ArrayRunner(model), source, "train", tokenizer)


def test_lvg_eval_cli_json(tmp_path: Path, synth_dataset) -> None:
    torch.manual_seed(0)
    ckpt = save_checkpoint(build_model("lvg-tiny"), tmp_path / "model.safetensors")
    runner = CliRunner()
    res = runner.invoke(app, ["eval", "--ckpt", str(ckpt), "--data", str(synth_dataset.out_dir), "--split", "val",
                              "--json", "--device", "cpu", "--max-sentences", "4"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["variant"] == "lvg-tiny" and data["n"] == 4 and "mIoU" in data and "per_expression" in data
    assert "text_swap" not in data
    swap = runner.invoke(app, ["eval", "--ckpt", str(ckpt), "--data", str(synth_dataset.out_dir), "--split", "val",
                               "--device", "cpu", "--max-sentences", "6", "--batch-size", "6", "--text-swap"])
    assert swap.exit_code == 0, swap.output
    assert "with another image's sentence" in swap.stdout
    assert "mask_threshold: 0.35\n" in swap.stdout  # a setting: not shown as a percentage like the metrics

    high = runner.invoke(app, ["eval", "--ckpt", str(ckpt), "--data", str(synth_dataset.out_dir), "--split", "val",
                               "--json", "--device", "cpu", "--max-sentences", "4", "--threshold", "0.9"])
    assert high.exit_code == 0 and json.loads(high.stdout)["mask_threshold"] == 0.9, high.output
    # An impossible threshold is refused before the checkpoint is even looked for.
    over = runner.invoke(app, ["eval", "--ckpt", str(tmp_path / "nope.safetensors"), "--data", "x",
                               "--threshold", "1.5"])
    assert over.exit_code == 2 and over.stderr.startswith("error: mask threshold must be in [0, 1)"), over.output
    bad = runner.invoke(app, ["eval", "--ckpt", str(ckpt), "--data", str(synth_dataset.out_dir), "--task", "xyz"])
    assert bad.exit_code == 2 and "error:" in bad.stderr and "Traceback" not in bad.output
    missing = runner.invoke(app, ["eval", "--ckpt", str(tmp_path / "nope.safetensors"), "--data",
                                  str(synth_dataset.out_dir)])
    assert missing.exit_code == 2 and "checkpoint not found" in missing.stderr
    # A wrong --data is reported as such (not as a tokenizer missing beside it); a device this machine
    # lacks is refused before any work, as a one-line error.
    nodata = runner.invoke(app, ["eval", "--ckpt", str(ckpt), "--data", str(tmp_path / "nope")])
    assert nodata.exit_code == 2 and "tokenizer" not in nodata.stderr and str(tmp_path / "nope") in nodata.stderr
    devices = ["mps", "nonsense"] + ([] if torch.cuda.is_available() else ["cuda"])
    for device in devices:
        res = runner.invoke(app, ["eval", "--ckpt", str(ckpt), "--data", str(synth_dataset.out_dir),
                                  "--device", device])
        assert res.exit_code == 2 and res.stderr.startswith("error:") and device in res.stderr, res.output


def test_eval_uses_the_checkpoints_own_tokenizer(tmp_path: Path, synth_dataset) -> None:
    # Another `lvg data synth` call (e.g. held-out data) writes its own tokenizer beside the data: other ids
    # for the same words. A checkpoint that carries its tokenizer must be evaluated with that one.
    own = train_sentencepiece(CORPUS * 3, tmp_path / "own.spm", vocab_size=120, seed=0)
    own_tok = Tokenizer.from_file(own)
    beside = Tokenizer.from_file(synth_dataset.tokenizer)
    assert own_tok.model_bytes != beside.model_bytes
    model = build_model("lvg-tiny")
    cfg = model.cfg
    carrying = save_checkpoint(model, tmp_path / "carrying.safetensors",
                               metadata=tokenizer_metadata(own_tok.model_bytes, own_tok.identity))
    bare = save_checkpoint(model, tmp_path / "bare.safetensors")
    data = str(synth_dataset.out_dir)

    assert tokenizer_for_checkpoint(carrying, data, cfg).model_bytes == own_tok.model_bytes
    # Nothing else to go by, but the ids may mean other words to a checkpoint that cannot say: a warning.
    with pytest.warns(TokenizerUnverifiedWarning, match="carries no tokenizer"):
        assert tokenizer_for_checkpoint(bare, data, cfg).model_bytes == beside.model_bytes
    # One that names its tokenizer without carrying it is checked against the file found.
    named = save_checkpoint(model, tmp_path / "named.safetensors",
                            metadata={KEY_TOKENIZER_IDENTITY: own_tok.identity})
    with pytest.warns(TokenizerMismatchWarning, match="not the tokenizer"):
        tokenizer_for_checkpoint(named, data, cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fresh weights learn the ids they are given: nothing to warn about
        tokenizer_for_checkpoint(None, data, cfg)
    with pytest.warns(TokenizerMismatchWarning, match="not the tokenizer"):
        chosen = tokenizer_for_checkpoint(carrying, data, cfg, str(synth_dataset.tokenizer))
    assert chosen.model_bytes == beside.model_bytes  # an explicit file still wins

    runner = CliRunner()
    base = ["eval", "--ckpt", str(carrying), "--data", data, "--device", "cpu", "--max-sentences", "2", "--json"]
    quiet = runner.invoke(app, base)
    assert quiet.exit_code == 0 and "not the tokenizer" not in quiet.stderr, quiet.stderr
    # The checkpoint's tokenizer was made from other sentences, so it splits the synthetic words finely:
    # the truncation warnings show which one ran, and the numbers equal a run given that file explicitly.
    assert "truncated" in quiet.stderr
    explicit = runner.invoke(app, [*base, "--tokenizer", str(own)])
    assert explicit.exit_code == 0 and json.loads(explicit.stdout) == json.loads(quiet.stdout)
    loud = runner.invoke(app, [*base, "--tokenizer", str(synth_dataset.tokenizer)])
    assert loud.exit_code == 0 and "warning:" in loud.stderr and "not the tokenizer" in loud.stderr
    unverified = runner.invoke(app, [*base[:2], str(bare), *base[3:]])
    assert unverified.exit_code == 0 and "warning:" in unverified.stderr, unverified.stderr
    assert "carries no tokenizer" in unverified.stderr


def test_swap_partners_pick_the_next_sentence_of_another_image() -> None:
    assert _swap_partners([5, 5, 7, 5, 9]) == [2, 2, 3, 4, 0]
    assert _swap_partners([3, 3, 3]) == [None, None, None]
    assert _swap_partners([1]) == [None]


def test_text_swap_control_equals_the_main_numbers_for_a_text_blind_model(synth_dataset, tokenizer) -> None:
    # A model that ignores its text predicts the same map with any sentence, so the control must agree with
    # the main metrics; a model that reads its text would score lower (the point of the control).
    source = open_dataset(synth_dataset.out_dir, split="val")
    ids = {s.image_id for s in source.samples}
    assert len(ids) > 1  # otherwise no sentence has a partner and the control is empty
    for variant, probs, task in (("lvg-tiny", [1.0, 0.2, 1.0], "ris"), ("lvg-tiny-gres", [1.0, 1.0, 1.0], "gres")):
        model = ConstantModel(variant, probs, no_target_logit=-8.0 if variant.endswith("gres") else None)
        # One batch holds every sentence, so every sentence has a partner from another image.
        result = evaluate(ArrayRunner(model), source, "val", tokenizer, task=task, batch_size=1000, text_swap=True)
        control = result["text_swap"]
        assert control["n"] == result["n"] > len(ids)
        for key in ("gIoU", "cIoU") if task == "gres" else ("mIoU", "oIoU"):
            assert control[key] == pytest.approx(result[key], abs=1e-12)


def test_eval_text_report_shows_undefined_metrics_as_na() -> None:
    from lvg.cli.train import format_metrics

    text = format_metrics({"n": 3, "gIoU": 0.5, "N-acc": None, "text_swap": {"n": 3, "mIoU": None}})
    assert text.splitlines() == ["n: 3", "gIoU: 50.00", "N-acc: n/a", "  with another image's sentence (3): mIoU n/a"]


def test_eval_scores_an_exported_model_like_its_checkpoint(tmp_path: Path, synth_dataset) -> None:
    from lvg.export.onnx_export import export_onnx
    from tests.helpers.artifacts import make_checkpoint

    # Spread logits (as the export tests use) so the masks are real regions, not all-or-nothing.
    ckpt = make_checkpoint("lvg-tiny-gres", tmp_path / "m.safetensors", synth_dataset.tokenizer, seed=3)
    onnx = tmp_path / "m.onnx"
    export_onnx(ckpt, onnx, check=False)
    runner = CliRunner()
    args = ["--data", str(synth_dataset.out_dir), "--split", "val", "--json", "--max-sentences", "12", "--text-swap",
            "--batch-size", "6"]
    by_torch = runner.invoke(app, ["eval", "--ckpt", str(ckpt), "--device", "cpu", *args])
    by_onnx = runner.invoke(app, ["eval", "--ckpt", str(onnx), "--device", "cpu", *args])
    assert by_torch.exit_code == 0 and by_onnx.exit_code == 0, by_torch.output + by_onnx.output
    a, b = json.loads(by_torch.stdout), json.loads(by_onnx.stdout)
    assert a["task"] == b["task"] == "gres" and a["n"] == b["n"] == 12
    assert 0.0 < a["gIoU"] < 1.0  # masks that are neither empty nor the whole image
    for key in ("gIoU", "cIoU", "N-acc", "T-acc"):
        assert b[key] == pytest.approx(a[key], abs=2e-3), key
    assert b["text_swap"]["gIoU"] == pytest.approx(a["text_swap"]["gIoU"], abs=2e-3)
    # The export holds only the averaged map: no per-expression scores rather than wrong ones.
    assert "per_expression" in a and "per_expression" not in b

    # Without --ckpt it scores the bundled model, with the tokenizer inside it.
    bundled = runner.invoke(app, ["eval", "--data", str(synth_dataset.out_dir), "--split", "val", "--json",
                                  "--max-sentences", "2"])
    assert bundled.exit_code == 0, bundled.output
    assert json.loads(bundled.stdout)["variant"] == "lvg-s-xy-stem-relpos-branch-tokens-ctx-match"
    # A file that is no model is refused by name, as lvg infer refuses it.
    pickle = tmp_path / "weights.pth"
    pickle.write_bytes(b"\x80\x04")
    res = runner.invoke(app, ["eval", "--ckpt", str(pickle), "--data", str(synth_dataset.out_dir)])
    assert res.exit_code == 2 and res.stderr.startswith("error:") and "Traceback" not in res.output
