"""``lvg train`` given names: ``--pretrained beit3-base`` and ``--data refcoco:unc`` resolve through the cache,
fetched from the publisher the first time; the dry run counts the samples of data already in the cache."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from lvg.cli import app
from lvg.hub import cache_home, is_cached
from tests.helpers.http_server import Served

runner = CliRunner()


def test_train_resolves_pretrained_and_data_names_through_the_cache(publisher: Served, hub_synth, tmp_path, caplog):
    caplog.set_level("INFO", logger="lvg.train")
    out = tmp_path / "run"
    args = ["train", "--variant", "lvg-tiny", "--pretrained", "beit3-base", "--data", "refcoco:unc", "--tokenizer",
            str(hub_synth.tokenizer), "--steps", "1", "-b", "2", "--val-split", "", "--out", str(out), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert all(is_cached(n) for n in ("beit3-base", "refcoco", "coco-train2014"))
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["pretrained"] == str(cache_home() / "beit3_base_patch16_224.pth")
    assert saved["data"] == f"{cache_home() / 'data'}:refcoco:unc"
    assert (out / "last.safetensors").is_file()
    # The official key check passed and the 224 position table was resampled to the model's grid.
    assert "0 missing, 0 unexpected; resampled beit3.encoder.embed_positions.A.weight 52->228" in caplog.text
    evaluated = runner.invoke(app, ["eval", "--ckpt", str(out / "last.safetensors"), "--data", "refcoco:unc",
                                    "--split", "val", "--json"])
    assert evaluated.exit_code == 0 and '"mIoU"' in evaluated.output, evaluated.output
    fetched = len(publisher.requests)
    again = runner.invoke(app, [*args[:-3], "--out", str(tmp_path / "run2")])
    assert again.exit_code == 0, again.output
    assert len(publisher.requests) == fetched  # the second run downloads nothing


def test_the_dry_run_counts_the_samples_of_cached_data(publisher: Served, hub_synth):
    assert runner.invoke(app, ["fetch", "refcoco", "coco-train2014", "beit3-spm"]).exit_code == 0
    result = runner.invoke(app, ["train", "--recipe", "refcoco-unc", "--dry-run", "--json"])
    data = json.loads(result.output)
    assert data["samples_from"].startswith("counted in ") and data["plan"]["train_samples"] > 0
    assert all(row["cached"] for row in data["data"])
    assert data["pretrained"]["cached"] is False
