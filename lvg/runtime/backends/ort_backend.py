"""ONNX Runtime backend for ``.onnx`` artifacts (CPU, CUDA and TensorRT execution providers).

One :class:`onnxruntime.InferenceSession` is created in the constructor and reused; ONNX Runtime
documents ``InferenceSession.run`` as safe to call concurrently from several threads, so this backend
takes no lock.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lvg.core.artifact import OUTPUT_NO_TARGET, OUTPUT_PROB
from lvg.core.model_file import ModelFile
from lvg.core.outputs import ModelOutput
from lvg.errors import ArtifactError, InputError, first_line
from lvg.runtime.backends.base import Backend

__all__ = ["OnnxRuntimeBackend", "physical_cores", "providers_for", "session_options"]

_CPU = "CPUExecutionProvider"
_CUDA = "CUDAExecutionProvider"
_TRT = "TensorrtExecutionProvider"


def providers_for(device: str, available: list[str]) -> list[str | tuple[str, dict]]:
    """Execution providers for ``device``: ``"auto"`` (CUDA if installed, else CPU), ``"cpu"``,
    ``"cuda"`` / ``"cuda:N"``, or ``"tensorrt"`` / ``"tensorrt:N"`` (ONNX Runtime's TensorRT EP, with CUDA
    and CPU as fallbacks for nodes it does not take).

    Raises:
        InputError: an unknown device, or a provider this onnxruntime build lacks (names the extra).
    """
    kind, _, index = device.partition(":")
    if index and not index.isdigit():
        raise InputError(f"bad device {device!r}: use cpu, cuda, cuda:N, tensorrt or auto")
    opts = {"device_id": int(index)} if index else {}
    if kind == "auto":
        return [(_CUDA, opts), _CPU] if _CUDA in available else [_CPU]
    if kind == "cpu":
        return [_CPU]
    if kind == "cuda":
        if _CUDA not in available:
            raise InputError(
                "device 'cuda' needs onnxruntime's CUDA provider, which this install lacks: "
                "pip install 'latent-vg[gpu]'"
            )
        return [(_CUDA, opts), _CPU]
    if kind == "tensorrt":
        if _TRT not in available:
            raise InputError(
                "device 'tensorrt' needs onnxruntime's TensorRT provider, which this install lacks: "
                "pip install 'latent-vg[gpu]' (onnxruntime-gpu) and 'latent-vg[trt]'"
            )
        return [(_TRT, opts), (_CUDA, opts), _CPU]
    raise InputError(f"unknown device {device!r}: use cpu, cuda, cuda:N, tensorrt or auto")


def physical_cores() -> int:
    """Physical CPU cores this process may use (hyper-threads of one core count once; read from Linux sysfs)."""
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return max(1, (os.cpu_count() or 2) // 2)
    cores: set[tuple[str, str]] = set()
    try:
        for cpu in allowed:
            topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
            cores.add(((topo / "physical_package_id").read_text().strip(), (topo / "core_id").read_text().strip()))
    except OSError:
        return max(1, len(allowed))
    return max(1, len(cores))


def session_options(ort, *, threads: int = 0):
    """The ``SessionOptions`` every Latent-VG session uses (``ort`` is the imported onnxruntime module).

    - all graph optimisations (constant folding, LayerNorm/GELU/MatMul+Add fusions, layout transforms);
    - sequential execution with one inter-op thread: the graph is a chain of large GEMMs, so parallel
      branches only add scheduling overhead, while each GEMM uses every core through the intra-op pool;
    - intra-op threads = ``threads`` or the number of *physical* cores (hyper-threads slow GEMMs down);
    - errors-only logging (ORT's warnings about unused initializers are noise here);
    - no spinning of idle intra-op threads when ``OMP_WAIT_POLICY=PASSIVE`` (the ``lvg`` command sets it
      unless told otherwise), the same policy as torch's OpenMP threads.
    """
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = int(threads) if threads else physical_cores()
    opts.log_severity_level = 3
    if os.environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE":
        # Spinning threads poll between operators: a little faster on idle cores, but on a CPU shared with
        # other processes they fight them (bundled model, batch 1, one core busy: 40 ms spinning, 27 ms not;
        # 20 vs 22 ms when idle).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


class OnnxRuntimeBackend(Backend):
    """Runs an exported ``.onnx`` file. ``device``: see :func:`providers_for`. ``threads``: intra-op threads
    (0 = one per physical core). Session settings: :func:`session_options`."""

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike[str] | ModelFile, *, device: str = "auto", threads: int = 0) -> None:
        import onnxruntime as ort  # a core dependency of latent-vg (not an extra)

        super().__init__(ModelFile.open(path))
        p = self.info.path
        opts = session_options(ort, threads=threads)
        providers = providers_for(device, list(ort.get_available_providers()))
        try:
            self._session = ort.InferenceSession(str(p), sess_options=opts, providers=providers)
        except Exception as exc:  # ORT raises its own Fail / InvalidProtobuf / NoSuchFile types
            raise ArtifactError(f"{p} is not a loadable ONNX model ({first_line(exc)})") from None
        names = {o.name for o in self._session.get_outputs()}
        self.check_io(p, {i.name: tuple(i.shape) for i in self._session.get_inputs()}, names)
        self._outputs = [OUTPUT_PROB] + ([OUTPUT_NO_TARGET] if OUTPUT_NO_TARGET in names else [])
        self._providers = list(self._session.get_providers())

    @property
    def device(self) -> str:
        return f"onnxruntime:{self._providers[0]}"

    @property
    def on_cpu(self) -> bool:
        return self._providers[0] == "CPUExecutionProvider"

    @property
    def providers(self) -> list[str]:
        """The execution providers the session actually uses, in priority order."""
        return list(self._providers)

    def run(
        self, image: np.ndarray, text_ids: np.ndarray, text_mask: np.ndarray, *, return_attention: bool = False,
        return_expressions: bool = False,
    ) -> ModelOutput:
        feeds = self.feeds(image, text_ids, text_mask, return_attention=return_attention)
        out = self._session.run(self._outputs, feeds)
        prob = np.asarray(out[0], dtype=np.float32)
        nt = np.asarray(out[1], dtype=np.float32) if len(out) > 1 else None
        return ModelOutput(prob=prob, no_target_logit=nt)
