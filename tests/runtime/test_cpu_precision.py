"""bf16 on the CPU, chosen at load time from one fp32 file: OpenVINO for .onnx (the ``openvino`` extra), bf16
weights for .safetensors; the same masks as fp32; a missing OpenVINO named by its extra.

The CPU's flags are faked (``features=``), so these run on any x86 machine; OpenVINO emulates bf16 where the
CPU lacks it, which changes speed, not the numbers checked here.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from lvg.core.precision import ENV, CpuFeatures
from lvg.errors import InputError
from lvg.runtime.backends import open_backend

BF16_CPU = CpuFeatures.of(["avx512f", "avx512_bf16", "avx512_vnni"])
PLAIN_CPU = CpuFeatures.of(["avx2", "fma"])
#: Masks (prob > the RIS threshold) of a bf16 run agree with fp32's on at least this share of pixels.
AGREEMENT = 0.995


def _inputs(cfg, batch, seed=0):
    rng = np.random.default_rng(seed)
    s, length = cfg.encoder.img_size, cfg.preprocess.max_text_len
    image = rng.uniform(-1, 1, (batch, 3, s, s)).astype(np.float32)  # (B, 3, S, S)
    ids = np.ones((batch, length), dtype=np.int64)
    ids[:, 0], ids[:, 1:6], ids[:, 6] = 0, rng.integers(4, 100, (batch, 5)), 2
    return image, ids, ids != 1


def _agreement(a: np.ndarray, b: np.ndarray, threshold: float) -> float:
    return float(((a > threshold) == (b > threshold)).mean())


@pytest.fixture(autouse=True)
def _auto_means_auto(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)


@pytest.fixture(scope="module")
def ov_cache(tmp_path_factory):
    pytest.importorskip("openvino")
    return tmp_path_factory.mktemp("ov-cache")


@pytest.mark.parametrize("variant", ["lvg-tiny", "lvg-tiny-gres"])
def test_openvino_bf16_masks_match_onnxruntime_fp32(artifacts, variant, ov_cache, monkeypatch):
    monkeypatch.setenv("LVG_HOME", str(ov_cache))
    path = artifacts.onnx[(variant, False)]
    fast = open_backend(path, precision="auto", features=BF16_CPU)
    ref = open_backend(path, precision="fp32", features=BF16_CPU)
    assert (fast.name, fast.precision, fast.device) == ("openvino", "bf16", "openvino:CPU")
    assert (ref.name, ref.precision) == ("onnxruntime", "fp32")
    cfg = ref.info.config
    image, ids, mask = _inputs(cfg, 3)
    a, b = fast.run_arrays(image, ids, mask), ref.run_arrays(image, ids, mask)
    assert a.prob.dtype == np.float32 and a.prob.shape == b.prob.shape
    assert _agreement(a.prob, b.prob, cfg.preprocess.mask_threshold) >= AGREEMENT
    assert np.abs(a.prob - b.prob).max() < 0.05
    if variant.endswith("gres"):
        np.testing.assert_allclose(a.no_target_logit, b.no_target_logit, atol=0.1)
    else:
        assert a.no_target_logit is None
    assert any((ov_cache / "openvino").iterdir())  # the compiled model is cached for the next load


def test_openvino_fp32_by_name_equals_onnxruntime(micro, ov_cache, monkeypatch):
    monkeypatch.setenv("LVG_HOME", str(ov_cache))
    ov = open_backend(micro.onnx, backend="openvino", features=PLAIN_CPU)  # no bf16 instructions: fp32
    assert (ov.name, ov.precision) == ("openvino", "fp32")
    ref = open_backend(micro.onnx, backend="onnxruntime", precision="auto", features=BF16_CPU)
    assert ref.name == "onnxruntime" and ref.note is None
    image, ids, mask = _inputs(ref.info.config, 2)
    np.testing.assert_allclose(ov.run(image, ids, mask).prob, ref.run(image, ids, mask).prob, atol=1e-4)


def test_openvino_runs_requests_from_several_threads(micro, ov_cache, monkeypatch):
    monkeypatch.setenv("LVG_HOME", str(ov_cache))
    be = open_backend(micro.onnx, precision="bf16", features=BF16_CPU)
    batches = [_inputs(be.info.config, 1, seed=i) for i in range(4)]
    want = [be.run(*b).prob for b in batches]
    got: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        for _ in range(3):
            got[i] = be.run(*batches[i]).prob

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        np.testing.assert_array_equal(got[i], want[i])


def test_a_process_compiling_into_the_cache_makes_the_next_one_wait(micro, tmp_path):
    """OpenVINO writes a cache blob in place and maps it on load, so two processes compiling one new model at
    once could map a half-written blob (SIGBUS). Another process holding the cache's compile lock makes a
    new backend wait, say so, and then compile into the cache."""
    pytest.importorskip("openvino")
    from lvg.core.atomic import file_lock

    cache = tmp_path / "ov"
    code = ("from lvg.runtime.backends.openvino_backend import OpenVINOBackend\n"
            f"OpenVINOBackend({str(micro.onnx)!r}, precision='fp32', cache={str(cache)!r})\nprint('compiled')")
    with file_lock(cache / ".compile.lock"):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        lines = iter(proc.stderr.readline, "")  # ends when the process exits (it must not, while we hold it)
        said = next((line for line in lines if "waiting for" in line), "")
        assert said.strip() == f"waiting for another process compiling into {cache} ..."
        assert proc.poll() is None and not list(cache.glob("*.blob"))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and out.strip() == "compiled", err
    assert list(cache.glob("*.blob"))


def test_precision_refusals(micro):
    with pytest.raises(InputError, match="bf16 instructions"):
        open_backend(micro.onnx, precision="bf16", features=PLAIN_CPU)
    with pytest.raises(InputError, match="backend 'openvino'"):
        open_backend(micro.onnx, backend="onnxruntime", precision="bf16", features=BF16_CPU)
    with pytest.raises(InputError, match="unknown precision"):
        open_backend(micro.onnx, precision="int4")
    with pytest.raises(InputError, match="int8 needs a quantised file"):  # int8 is a file, not a load option
        open_backend(micro.onnx, precision="int8")
    with pytest.raises(InputError, match="precision must be a string"):
        open_backend(micro.onnx, precision=16)  # type: ignore[arg-type]
    assert open_backend(micro.onnx, precision="auto", features=PLAIN_CPU).name == "onnxruntime"


def test_torch_backend_bf16_matches_fp32(micro):
    fast = open_backend(micro.ckpt, device="cpu", precision="auto", features=BF16_CPU)
    ref = open_backend(micro.ckpt, device="cpu", precision="fp32", features=BF16_CPU)
    assert (fast.precision, ref.precision) == ("bf16", "fp32")
    assert next(fast.model.parameters()).dtype.is_floating_point and str(next(fast.model.parameters()).dtype) == (
        "torch.bfloat16")
    cfg = ref.info.config
    image, ids, mask = _inputs(cfg, 3)
    a = fast.run(image, ids, mask, return_attention=True, return_expressions=True)
    b = ref.run(image, ids, mask, return_attention=True, return_expressions=True)
    assert a.prob.dtype == np.float32 and a.attention.dtype == np.float32
    assert _agreement(a.prob, b.prob, cfg.preprocess.mask_threshold) >= AGREEMENT
    assert np.abs(a.prob - b.prob).max() < 0.05
    assert np.abs(a.attention - b.attention).max() < 0.02
    assert open_backend(micro.ckpt, device="cpu", precision="auto", features=PLAIN_CPU).precision == "fp32"


_NO_OPENVINO = "import sys; sys.modules['openvino'] = None  # any 'import openvino' now raises ImportError\n"


def test_without_openvino_the_extra_is_named(micro):
    """A process where OpenVINO cannot be imported: auto falls back to ONNX Runtime fp32 with a note naming
    the extra; bf16 and the openvino backend are missing-dependency errors naming it."""
    code = f"""
        import json, os
        os.environ.pop({ENV!r}, None)
        from lvg.core.precision import CpuFeatures
        from lvg.errors import MissingDependencyError
        from lvg.runtime.backends import open_backend
        cpu = CpuFeatures.of(["avx512_bf16"])
        be = open_backend({str(micro.onnx)!r}, precision="auto", features=cpu)
        out = {{"auto": [be.name, be.precision, be.note]}}
        for kwargs in ({{"precision": "bf16"}}, {{"backend": "openvino"}}):
            try:
                open_backend({str(micro.onnx)!r}, features=cpu, **kwargs)
            except MissingDependencyError as exc:
                out[str(kwargs)] = str(exc)
        print(json.dumps(out))
        """
    proc = subprocess.run([sys.executable, "-c", _NO_OPENVINO + textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    import json

    out = json.loads(proc.stdout.strip().splitlines()[-1])
    name, precision, note = out.pop("auto")
    assert (name, precision) == ("onnxruntime", "fp32")
    assert "pip install 'latent-vg[openvino]'" in note
    assert len(out) == 2
    for message in out.values():
        assert "pip install 'latent-vg[openvino]'" in message


def test_openvino_cache_lives_under_lvg_home(monkeypatch, tmp_path):
    from lvg.core.home import cache_home
    from lvg.runtime.backends.openvino_backend import cache_dir, compile_config

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("LVG_HOME", "~/models")  # "~" is expanded, as lvg fetch expands it
    assert cache_dir() == cache_home() / "openvino" == tmp_path / "models" / "openvino"
    # The flags an engine was chosen from decide an int8 file's floating-point precision, not /proc/cpuinfo.
    assert compile_config("int8", bf16_cpu=True)["INFERENCE_PRECISION_HINT"] == "bf16"
    assert compile_config("int8", bf16_cpu=False)["INFERENCE_PRECISION_HINT"] == "f32"
