"""Choice of engine and precision from the CPU's flags (faked here), the request and what is installed."""

from __future__ import annotations

import pytest

from lvg.core.precision import ENV, CpuFeatures, PrecisionChoice, choose_precision
from lvg.errors import InputError, MissingDependencyError

SPR = CpuFeatures.of("avx512f avx512_bf16 avx512_vnni amx_bf16 amx_int8 amx_tile".split())  # Sapphire Rapids
ZEN4 = CpuFeatures.of("avx2 avx512f avx512_bf16 avx512_vnni".split())
OLD = CpuFeatures.of("sse4_2 avx avx2 fma".split())  # no bf16, no VNNI


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)


def test_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx512_bf16 AVX512_VNNI\n\nprocessor\t: 1\n")
    cpu = CpuFeatures.read(info)
    assert cpu.bf16 and cpu.int8 and not cpu.amx
    assert cpu.summary() == "avx512_bf16 avx512_vnni"
    assert CpuFeatures.read(tmp_path / "missing").flags == frozenset()
    assert SPR.amx and OLD.summary() == "none" and not OLD.bf16


@pytest.mark.parametrize("cpu", [SPR, ZEN4], ids=["amx", "avx512-bf16"])
def test_auto_picks_bf16_on_bf16_cpus(cpu):
    assert choose_precision("auto", kind="onnx", features=cpu, openvino=True) == PrecisionChoice("openvino", "bf16")
    assert choose_precision("AUTO", kind="torch", features=cpu) == PrecisionChoice("torch", "bf16")


def test_auto_stays_fp32_without_bf16_instructions():
    assert choose_precision("auto", kind="onnx", features=OLD, openvino=True) == PrecisionChoice("onnxruntime", "fp32")
    assert choose_precision("auto", kind="torch", features=OLD) == PrecisionChoice("torch", "fp32")


def test_auto_without_openvino_stays_on_onnxruntime_and_names_the_extra():
    choice = choose_precision("auto", kind="onnx", features=ZEN4, openvino=False)
    assert (choice.engine, choice.precision) == ("onnxruntime", "fp32")
    assert "pip install 'latent-vg[openvino]'" in choice.note


def test_bf16_without_openvino_is_a_missing_extra():
    with pytest.raises(MissingDependencyError, match=r"pip install 'latent-vg\[openvino\]'"):
        choose_precision("bf16", kind="onnx", features=ZEN4, openvino=False)


def test_explicit_choices_and_refusals():
    assert choose_precision("fp32", kind="onnx", features=SPR, openvino=True) == PrecisionChoice("onnxruntime", "fp32")
    assert choose_precision("fp32", kind="torch", features=SPR).precision == "fp32"
    with pytest.raises(InputError, match="bf16 instructions"):
        choose_precision("bf16", kind="onnx", features=OLD, openvino=True)
    with pytest.raises(InputError, match="unknown precision"):
        choose_precision("int4", kind="onnx", features=SPR)
    # An fp16 export keeps its own precision under auto; TensorRT engines run as built.
    assert choose_precision("auto", kind="onnx", file_precision="fp16", features=SPR, openvino=True).precision == "fp16"
    assert choose_precision("auto", kind="tensorrt", file_precision="fp16") == PrecisionChoice("tensorrt", "fp16")
    with pytest.raises(InputError, match="TensorRT engine"):
        choose_precision("bf16", kind="tensorrt", file_precision="fp16")


def test_gpu_ignores_cpu_flags():
    assert choose_precision("auto", kind="onnx", gpu=True, features=SPR, openvino=True).engine == "onnxruntime"
    assert choose_precision("auto", kind="torch", gpu=True, features=SPR).precision == "fp32"
    assert choose_precision("bf16", kind="torch", gpu=True, features=OLD).precision == "bf16"
    with pytest.raises(InputError, match="torch backend"):
        choose_precision("bf16", kind="onnx", gpu=True, features=SPR, openvino=True)


def test_environment_says_what_auto_means(monkeypatch):
    monkeypatch.setenv(ENV, "fp32")
    assert choose_precision("auto", kind="onnx", features=SPR, openvino=True).engine == "onnxruntime"
    assert choose_precision("bf16", kind="onnx", features=SPR, openvino=True).engine == "openvino"  # explicit wins
    monkeypatch.setenv(ENV, "fast")
    with pytest.raises(InputError, match=ENV):
        choose_precision("auto", kind="onnx", features=SPR)
    monkeypatch.setenv(ENV, "int8")  # a file, not something auto can mean for every model: named, not obeyed
    with pytest.raises(InputError, match=f"{ENV}='int8' is not a precision auto can mean"):
        choose_precision("auto", kind="onnx", features=SPR)


@pytest.mark.parametrize("cpu", [SPR, ZEN4, OLD], ids=["amx", "avx512-bf16", "avx2"])
def test_an_int8_file_runs_at_int8_on_the_cpu(cpu, monkeypatch):
    for request in ("auto", "int8", "INT8"):
        got = choose_precision(request, kind="onnx", file_precision="int8", features=cpu, openvino=True)
        assert got == PrecisionChoice("openvino", "int8")
    plain = choose_precision("auto", kind="onnx", file_precision="int8", features=cpu, openvino=False)
    assert (plain.engine, plain.precision) == ("onnxruntime", "int8") and "latent-vg[openvino]" in plain.note
    monkeypatch.setenv(ENV, "fp32")  # what auto means for floating-point files; an int8 file's auto stays int8
    assert choose_precision("auto", kind="onnx", file_precision="int8", features=cpu, openvino=True).precision == "int8"


def test_int8_refusals_name_the_file_to_use():
    for request in ("fp32", "bf16"):
        with pytest.raises(InputError, match="fp32 .onnx it was made from"):
            choose_precision(request, kind="onnx", file_precision="int8", features=SPR, openvino=True)
    for kind, own in (("onnx", "fp32"), ("onnx", "fp16"), ("torch", "fp32"), ("tensorrt", "fp16")):
        with pytest.raises(InputError, match="lvg export --ckpt MODEL --int8 --calib DATA"):
            choose_precision("int8", kind=kind, file_precision=own, features=SPR, openvino=True)
    with pytest.raises(InputError, match="runs on the CPU"):
        choose_precision("auto", kind="onnx", file_precision="int8", gpu=True, features=SPR, openvino=True)
