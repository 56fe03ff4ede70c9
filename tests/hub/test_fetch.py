"""``lvg fetch`` against a publisher and a mirror on 127.0.0.1 serving small files in the official layout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lvg.cli import app
from lvg.errors import MissingDependencyError
from lvg.hub import FetchError, cache_home, fetch, get_item, is_cached, resolve_data, resolve_pretrained
from lvg.hub.catalog import _ITEMS
from lvg.hub.download import sha256_of
from lvg.train.data import open_dataset
from tests.helpers.http_server import Served, serve
from tests.hub.conftest import TINY_224, beit3_state_bytes

runner = CliRunner()
WEIGHTS = "beit3_base_patch16_224.pth"


def _leftovers(home: Path) -> list[str]:
    """Every file in the cache but locks (partials, temporaries, landed files)."""
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


def test_fresh_fetch_lands_verified_files_and_a_second_fetch_downloads_nothing(publisher: Served):
    result = runner.invoke(app, ["fetch", "beit3-base", "beit3-spm", "--json"])
    assert result.exit_code == 0, result.output
    paths = json.loads(result.output)
    home = cache_home()
    assert paths == {"beit3-base": str(home / WEIGHTS), "beit3-spm": str(home / "beit3.spm")}
    assert (home / WEIGHTS).read_bytes() == publisher.files[WEIGHTS]
    record = json.loads((home / f".{WEIGHTS}.lvg.json").read_text())
    assert record["sha256"] == sha256_of(home / WEIGHTS) and record["from"].startswith(publisher.url)
    assert publisher.gets(WEIGHTS) == [None] and is_cached("beit3-base")

    assert runner.invoke(app, ["fetch", "beit3-base", "beit3-spm"]).exit_code == 0
    assert len(publisher.requests) == 2  # nothing more
    listing = json.loads(runner.invoke(app, ["fetch", "--list", "--json"]).output)
    cached = {row["name"] for row in listing["items"] if row["cached"]}
    assert cached == {"beit3-base", "beit3-spm"}


def test_a_download_cut_midway_is_resumed_with_a_range_request(publisher: Served):
    publisher.cut[WEIGHTS] = 1
    path = fetch("beit3-base", show_progress=False)
    size = len(publisher.files[WEIGHTS])
    assert publisher.gets(WEIGHTS) == [None, f"bytes={size // 2}-"]
    assert path.read_bytes() == publisher.files[WEIGHTS]


def test_a_download_that_keeps_failing_keeps_its_part_for_the_next_fetch(publisher: Served):
    publisher.cut[WEIGHTS] = 2
    with pytest.raises(FetchError, match="the next fetch continues"):
        fetch("beit3-base", retries=1, show_progress=False)
    home = cache_home()
    part = home / "downloads" / f"{WEIGHTS}.part"
    size = len(publisher.files[WEIGHTS])
    assert part.stat().st_size == size // 2 + (size - size // 2) // 2 and not (home / WEIGHTS).exists()
    fetch("beit3-base", show_progress=False)
    got = size // 2 + (size - size // 2) // 2
    assert publisher.gets(WEIGHTS) == [None, f"bytes={size // 2}-", f"bytes={got}-"]
    assert (home / WEIGHTS).read_bytes() == publisher.files[WEIGHTS] and not part.exists()


def test_a_server_that_ignores_range_restarts_the_file(publisher: Served):
    publisher.ranges = False
    publisher.cut[WEIGHTS] = 1
    assert fetch("beit3-base", show_progress=False).read_bytes() == publisher.files[WEIGHTS]


@pytest.mark.parametrize("body, reason", [
    (b"\x80\x02not a state dict at all", "not a readable PyTorch state dict"),
    (beit3_state_bytes(TINY_224.__class__(**{**TINY_224.__dict__, "embed_dim": 32, "num_heads": 4})),
     "of another shape"),
])
def test_a_corrupt_or_wrong_file_is_refused_and_not_left_in_the_cache(publisher: Served, body: bytes, reason: str):
    publisher.files[WEIGHTS] = body
    result = runner.invoke(app, ["fetch", "beit3-base"])
    assert result.exit_code != 0 and reason in result.output, result.output
    assert "Traceback" not in result.output
    assert _leftovers(cache_home()) == []


def test_a_tokenizer_of_another_size_and_a_wrong_sha256_are_refused(publisher: Served, monkeypatch):
    spm = get_item("beit3-spm")
    monkeypatch.setitem(_ITEMS, "beit3-spm", spm.__class__(**{**spm.__dict__, "pieces": 64000}))
    with pytest.raises(FetchError, match="pieces; the beit3-spm tokenizer has 64000"):
        fetch("beit3-spm", show_progress=False)
    weights = get_item("beit3-base")
    monkeypatch.setitem(_ITEMS, "beit3-base", weights.__class__(**{**weights.__dict__, "sha256": "0" * 64}))
    with pytest.raises(FetchError, match="is not the published"):
        fetch("beit3-base", show_progress=False)
    assert _leftovers(cache_home()) == []


def test_the_mirror_serves_each_file_under_its_official_name(publisher: Served, monkeypatch):
    with serve(Served(files={"refcoco+.zip": publisher.files["refcoco+.zip"],
                             WEIGHTS: publisher.files[WEIGHTS]})) as mirror:
        monkeypatch.setenv("LVG_MIRROR", mirror.url + "/lvg/")
        # The mirror's paths are URL/<file>: strip the prefix the server sees.
        mirror.files = {f"lvg/{k}": v for k, v in mirror.files.items()}
        result = runner.invoke(app, ["fetch", "refcoco+", "beit3-base"])
        assert result.exit_code == 0, result.output
        assert [n for n, _ in mirror.requests] == ["lvg/refcoco+.zip", f"lvg/{WEIGHTS}"]
    assert publisher.requests == []
    folder = cache_home() / "data" / "refcoco+"
    assert sorted(p.name for p in folder.iterdir()) == [".lvg-fetched.json", "instances.json", "refs(unc).p"]


def test_offline_names_the_file_and_where_to_put_it_then_uses_what_is_put_there(publisher: Served, monkeypatch):
    monkeypatch.setenv("LVG_OFFLINE", "1")
    proc = subprocess.run([sys.executable, "-m", "lvg.cli", "fetch", "beit3-base"], capture_output=True, text=True,
                          env=os.environ)
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1, proc.stderr
    home = cache_home()
    assert WEIGHTS in proc.stderr and str(home / WEIGHTS) in proc.stderr and "LVG_OFFLINE" in proc.stderr
    result = runner.invoke(app, ["fetch", "refcoco"])
    assert str(home / "downloads" / "refcoco.zip") in result.output
    home.mkdir(parents=True, exist_ok=True)
    (home / WEIGHTS).write_bytes(publisher.files[WEIGHTS])  # copied in by hand
    assert runner.invoke(app, ["fetch", "beit3-base"]).exit_code == 0
    assert publisher.requests == [] and is_cached("beit3-base")


def test_annotations_and_images_land_where_a_data_spec_reads_them(publisher: Served, hub_synth):
    spec = resolve_data("refcoco:unc", show_progress=False)
    home = cache_home()
    assert spec == f"{home / 'data'}:refcoco:unc"
    source = open_dataset(spec, split="val")
    assert len(source) > 0 and source.load_image(0).size[0] > 0
    assert len(list((home / "data" / "images").glob("*.jpg"))) == hub_synth.images
    assert not [p for p in (home / "downloads").iterdir() if not p.name.endswith(".lock")]  # archives removed
    assert resolve_data("refcoco:unc") == spec and len(publisher.requests) == 2
    assert resolve_data(str(hub_synth.out_dir)) == str(hub_synth.out_dir)  # a local spec is left alone


def test_grefcoco_has_no_direct_link_but_comes_from_a_mirror(publisher: Served, monkeypatch):
    with pytest.raises(FetchError, match="no direct download.*gRefCOCO.*downloads/grefcoco.zip"):
        fetch("grefcoco")
    monkeypatch.setenv("LVG_MIRROR", publisher.url)
    assert (fetch("grefcoco", show_progress=False) / "grefs(unc).json").is_file()


def test_a_damaged_archive_is_refused_and_removed(publisher: Served):
    publisher.files["refcoco.zip"] = publisher.files["refcoco.zip"][:-40]
    with pytest.raises(FetchError):
        fetch("refcoco", show_progress=False)
    assert _leftovers(cache_home()) == []


def test_checking_weights_without_torch_names_the_extra(publisher: Served, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MissingDependencyError, match=r"latent-vg\[torch\]"):
        fetch("beit3-base", show_progress=False)


def test_pretrained_names_resolve_through_the_cache_and_paths_stay(publisher: Served, tmp_path):
    assert resolve_pretrained("beit3-base") == str(cache_home() / WEIGHTS)
    assert resolve_pretrained(str(tmp_path / "mine.pth")) == str(tmp_path / "mine.pth")


def test_nothing_is_fetched_at_import(tmp_path):
    env = {**os.environ, "LVG_HOME": str(tmp_path / "home")}
    code = "import lvg, lvg.hub, lvg.cli, lvg.hub.store; import sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    assert not (tmp_path / "home").exists()
