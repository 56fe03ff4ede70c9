"""``lvg infer`` over folders and videos (JSON Lines), its honest notes, ``lvg info --model`` and CLI polish, as
real subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import sentencepiece as spm
from PIL import Image

from lvg.runtime.grounder import Grounder
from tests.helpers.artifacts import make_image

TEXT = "the man on the left"
EXAMPLE = "examples/shapes.jpg"


def _lvg(*args: str, pre: str = "") -> subprocess.CompletedProcess:
    code = pre + "from lvg.cli import main\nimport sys\nsys.argv = ['lvg', *sys.argv[1:]]\nmain()\n"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


def _lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_folder_gives_one_json_line_per_file_and_writes_overlays(micro, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    files = [make_image(folder / f"{name}.png", w=60 + 10 * i, h=50, seed=i) for i, name in enumerate("abc")]
    (folder / "notes.txt").write_text("not an image")  # not an image suffix: not an input
    (folder / "d.jpg").write_bytes(b"broken")  # an image suffix but no image: its own error line
    out = tmp_path / "ov"
    proc = _lvg("infer", str(folder), TEXT, "--model", str(micro.onnx), "--json", "--no-mask", "--out", str(out))
    assert proc.returncode == 2, proc.stderr  # one input failed
    lines = _lines(proc.stdout)
    assert [d["file"] for d in lines] == [str(p) for p in [*files, folder / "d.jpg"]]
    g = Grounder.load(micro.onnx, device="cpu")
    for d, path in zip(lines, files):
        want = g.predict(path, TEXT)
        assert d["box"] == (list(want.box) if want.box else None) and "mask_rle" not in d
        assert Image.open(out / f"{path.stem}.png").size == Image.open(path).size
    assert "error" in lines[-1] and "d.jpg" in proc.stderr and "Traceback" not in proc.stderr


def test_video_gives_one_json_line_per_frame_and_an_overlay_video(micro, tmp_path):
    av = pytest.importorskip("av")
    clip = tmp_path / "clip.mp4"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(6):
            arr = np.asarray(Image.open(make_image(tmp_path / f"{i}.png", w=64, h=48, seed=i)).convert("RGB"))
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(clip)) as container:  # the frames as the decoder gives them back
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    overlay = tmp_path / "overlay.mp4"
    proc = _lvg("infer", str(clip), TEXT, "--model", str(micro.onnx), "--json", "--out", str(overlay))
    assert proc.returncode == 0, proc.stderr
    lines = _lines(proc.stdout)
    assert [d["frame"] for d in lines] == list(range(len(decoded))) == list(range(6))
    assert [d["time"] for d in lines] == pytest.approx([i / 5 for i in range(6)])
    g = Grounder.load(micro.onnx, device="cpu")
    for d, frame in zip(lines, decoded):
        want = g.predict(frame, TEXT)
        assert d["box"] == (list(want.box) if want.box else None) and d["mask_rle"]["size"] == [48, 64]
    with av.open(str(overlay)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 6
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"no video here")
    proc = _lvg("infer", str(bad), TEXT, "--model", str(micro.onnx))
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1


def test_default_model_notes_its_domain_and_unknown_words():
    proc = _lvg("infer", EXAMPLE, "the woman with a rocket", "--json")
    assert proc.returncode == 0, proc.stderr
    (data,) = _lines(proc.stdout)  # one compact line
    assert data["unknown_words"] == ["woman", "with", "a", "rocket"]
    err = proc.stderr.splitlines()
    assert err[0].startswith("note: the default model is a synthetic-scene demo")
    assert sum("never saw" in line for line in err) == 1 and "'rocket'" in proc.stderr
    proc = _lvg("infer", EXAMPLE, "the big red shape", "--task", "rec")
    assert proc.returncode == 0 and "never saw" not in proc.stderr


def test_info_model_describes_the_bundled_onnx_without_torch():
    block = "import sys; sys.modules['torch'] = None\n"
    proc = _lvg("info", "--model", "lvg/assets/default/model.onnx", "--json", pre=block)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["variant"] == "lvg-s-xy-stem-relpos-branch-tokens-ctx-match"
    assert data["kind"] == "onnx" and data["input_size"] == 480
    assert data["params"] > 7_000_000 and data["gflops_per_sample"] > 2 and data["precision"] == "fp32"
    assert data["description"].startswith("synthetic-scene demo") and data["train_words"] > 40
    # The word pieces of the tokenizer the file carries (the ids add one for padding).
    from lvg.core.model_file import ModelFile

    pieces = spm.SentencePieceProcessor(
        model_proto=ModelFile.open("lvg/assets/default/model.onnx").info.tokenizer_bytes).GetPieceSize()
    assert pieces > 300 and data["tokenizer_pieces"] == pieces and data["tokenizer_ids"] == pieces + 1
    proc = _lvg("info", "--model", "lvg/assets/default/model.onnx", pre=block)
    assert proc.returncode == 0 and "synthetic-scene demo" in proc.stdout
    assert f"parameters   {data['params'] / 1e6:.2f}M" in proc.stdout


def test_bare_lvg_prints_help_and_flags_read_as_flags():
    proc = _lvg()
    assert proc.returncode == 0 and proc.stdout.startswith("Usage: lvg") and not proc.stderr
    proc = _lvg("infer", "--help")
    assert proc.returncode == 0 and "--json " in proc.stdout and "<bool>" not in proc.stdout


def test_python_api_lists_itself():
    code = textwrap.dedent("""
        import lvg
        print(sorted(set(lvg.__all__) - set(dir(lvg))), "Grounder" in dir(lvg), lvg.Result.__name__)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["[]", "True", "Result"]
