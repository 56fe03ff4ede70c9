"""The worker process of ``bench_e2e.py``: one (model, backend) case, timed per request over a line protocol.

    python benchmarks/_e2e_worker.py SPEC_JSON   # started by bench_e2e.py; requests on stdin, replies on stdout
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _e2e_prepare import IMAGE_WH, ROOT, TEXTS, Case, _build, _encoder_text_len, _EncoderOnly, _variant_names
from _gpu import matmul_tflops

WARMUP_DEVICE_CALLS = 3


def _rss_mb(field_name: str = "VmHWM") -> float | None:
    """``VmHWM`` (peak RSS since the last reset) or ``VmRSS`` of this process in MiB (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class _Worker:
    """Runs inside the worker process: one model on one backend, timed per request."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import numpy as np
        from PIL import Image

        from lvg.config import get_config
        from lvg.core.tokenizer import Tokenizer

        self.case = Case(**{**spec["case"], "batches": tuple(spec["case"]["batches"])})
        self.import_rss_mb = _rss_mb("VmRSS")
        t0 = time.perf_counter()
        names = _variant_names(spec["variant"])
        self.cfg = get_config(names[self.case.model])
        self.text_len = self.cfg.preprocess.max_text_len
        self.extra = _encoder_text_len(self.cfg) - self.text_len if self.case.model == "encoder" else 0
        self.tok = Tokenizer.from_file(spec["tokenizer"])
        rng = np.random.default_rng(0)
        self.images = []
        for _ in range(max(self.case.batches)):
            arr = rng.integers(0, 256, size=(IMAGE_WH[1], IMAGE_WH[0], 3), dtype=np.uint8)
            self.images.append(Image.fromarray(arr))
        self.texts = [TEXTS[i % len(TEXTS)] for i in range(max(self.case.batches))]
        self.threads = int(spec["threads"])
        self.np = np
        self.gpu_peak: dict[int, float] = {}
        self.device_ms: dict[int, dict[str, Any]] = {}
        self.matmul_tflops: float | None = None
        self.rss_peak: dict[int, float] = {}
        self.setup_s: dict[str, float] = {}
        self._cuda = self.case.device == "cuda"
        if self.case.backend in ("ort", "ort-fp16"):
            self._setup_ort(spec["onnx"])
        elif self.case.backend == "ov":
            self._setup_ov(spec["onnx"])
        elif self.case.backend == "trt":
            self._setup_trt(spec["onnx"], spec["cache"])
        else:
            self._setup_torch()
        self.setup_s["load"] = time.perf_counter() - t0
        self.load_rss_mb = _rss_mb("VmRSS")

    # -- backends
    def _setup_torch(self) -> None:
        import torch

        torch.set_num_threads(self.threads)
        self.torch = torch
        model = _build(self.cfg.name, impl=self.case.impl)
        if self.case.model == "encoder":
            model = _EncoderOnly.make(model)
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.case.precision]
        self.dtype = dtype
        self.dev = torch.device("cuda" if self._cuda else "cpu")
        model = model.to(self.dev, dtype)
        self.module = model
        if self.case.backend == "compile":
            mode = "reduce-overhead" if self.case.cuda_graphs else None
            self.module = torch.compile(model, mode=mode, dynamic=False)

        def forward(image, ids, mask):
            with torch.inference_mode():
                x, i, m = self._to_device(image, ids, mask, non_blocking=True)
                y = self._call(x, i, m)
                return y.float().cpu().numpy()  # the copy to host synchronises the device

        self.forward = forward

    def _to_device(self, image, ids, mask, *, non_blocking: bool = False):
        torch = self.torch
        return (torch.from_numpy(image).to(self.dev, self.dtype, non_blocking=non_blocking),
                torch.from_numpy(ids).to(self.dev, non_blocking=non_blocking),
                torch.from_numpy(mask).to(self.dev, non_blocking=non_blocking))

    def _call(self, x, i, m):
        """The torch module on device tensors; ``prob`` (lvg) or the tokens (bare encoder)."""
        if self.case.cuda_graphs:
            self.torch.compiler.cudagraph_mark_step_begin()
        out = self.module(x, i, m)
        return out["prob"] if self.case.model != "encoder" else out

    def _setup_ort(self, onnx_paths: dict[str, str]) -> None:
        import onnxruntime as ort

        from lvg.runtime.backends.ort_backend import OnnxRuntimeBackend, providers_for, session_options

        path = onnx_paths[self.case.model]
        device = "cuda" if self._cuda else "cpu"
        if self.case.model != "encoder":
            backend = OnnxRuntimeBackend(path, device=device, threads=self.threads)

            def forward(image, ids, mask):
                return backend.run(image, ids, mask).prob

        else:
            # The bare encoder has no Latent-VG outputs: same session settings, plain session.
            sess = ort.InferenceSession(
                path, sess_options=session_options(ort, threads=self.threads),
                providers=providers_for(device, list(ort.get_available_providers())),
            )

            def forward(image, ids, mask):
                return sess.run(None, {"image": image, "text_ids": ids, "text_mask": mask})[0]

        self.forward = forward

    def _setup_ov(self, onnx_paths: dict[str, str]) -> None:
        from lvg.runtime.backends.openvino_backend import OpenVINOBackend

        path = onnx_paths["lvg-int8" if self.case.precision == "int8" else "lvg"]
        backend = OpenVINOBackend(path, precision=self.case.precision, threads=self.threads)

        def forward(image, ids, mask):
            return backend.run(image, ids, mask).prob

        self.forward = forward

    def _setup_trt(self, onnx_paths: dict[str, str], cache: str) -> None:
        from lvg.export.trt import build_engine
        from lvg.runtime.backends.trt_backend import TensorRTBackend

        engines = {}
        for b in self.case.batches:
            out = Path(cache) / (Path(onnx_paths[self.case.model]).stem + f"-b{b}.engine")
            if not out.is_file():
                build_engine(onnx_paths[self.case.model], out, batch=b, fp16=True)
            engines[b] = TensorRTBackend(out, device="cuda")

        def forward(image, ids, mask):
            return engines[image.shape[0]].run(image, ids, mask).prob

        self.forward = forward

    # -- one measurement
    def run(self, batch: int) -> dict[str, float]:
        from lvg.core.postprocess import mask_from_prob

        if self._cuda and hasattr(self, "torch"):
            self.torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        image, boxes, ids, mask = self._inputs(batch)
        t1 = time.perf_counter()
        prob = self.forward(image, ids, mask)
        t2 = time.perf_counter()
        if self.case.model != "encoder":
            thr = self.cfg.preprocess.mask_threshold
            masks = [mask_from_prob(prob[i], boxes[i], thr) for i in range(batch)]
            assert len(masks) == batch
        t3 = time.perf_counter()
        if self._cuda and hasattr(self, "torch"):
            peak = self.torch.cuda.max_memory_allocated() / 2**20
            self.gpu_peak[batch] = max(self.gpu_peak.get(batch, 0.0), peak)
        rss = _rss_mb("VmHWM")
        if rss is not None:
            self.rss_peak[batch] = max(self.rss_peak.get(batch, 0.0), rss)
        return {"total_ms": (t3 - t0) * 1e3, "pre_ms": (t1 - t0) * 1e3, "model_ms": (t2 - t1) * 1e3,
                "post_ms": (t3 - t2) * 1e3}

    def _inputs(self, batch: int):
        """Preprocessed images (+ letterbox boxes) and token ids / mask of the first ``batch`` samples."""
        from lvg.core.preprocess import preprocess_batch

        np = self.np
        image, boxes = preprocess_batch(self.images[:batch], self.cfg.preprocess)
        ids, mask = self.tok.encode_batch(self.texts[:batch], self.text_len)
        if self.extra:
            # The bare encoder's extra positions stand where lvg's latent tokens are: always attended.
            ids = np.concatenate([ids, np.ones((batch, self.extra), dtype=np.int64)], axis=1)
            mask = np.concatenate([mask, np.ones((batch, self.extra), dtype=bool)], axis=1)
        return image, boxes, ids, mask

    def device_time(self, batch: int, n: int) -> dict[str, Any]:
        """The forward alone on inputs already on the GPU, each call between two CUDA events; the median.

        torch workers on CUDA only. Calls are queued back to back, as a serving loop would: where the host
        cannot keep the GPU busy (small batches in eager mode) the gaps count, as they do for a user. The
        inputs are not rotated: the weights (hundreds of MB) are what each call reads, far more than the L2.
        """
        if not (self._cuda and hasattr(self, "module")):
            return {"device_ms": None}
        torch = self.torch
        image, _, ids, mask = self._inputs(batch)
        x, i, m = self._to_device(image, ids, mask)
        events = []
        with torch.inference_mode():
            for k in range(WARMUP_DEVICE_CALLS + n):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                self._call(x, i, m)
                end.record()
                if k >= WARMUP_DEVICE_CALLS:
                    events.append((start, end))
            torch.cuda.synchronize()
        ms = [s.elapsed_time(e) for s, e in events]
        self.device_ms[batch] = {"p50": statistics.median(ms), "min": min(ms), "n": len(ms),
                                 "samples": [round(t, 4) for t in ms]}
        return {"device_ms": self.device_ms[batch]["p50"]}

    def warmup(self, batch: int, n: int) -> dict[str, float]:
        t = time.perf_counter()
        for _ in range(n):
            self.run(batch)
        key = f"warmup_b{batch}"
        self.setup_s[key] = time.perf_counter() - t
        # Peak memory per batch is measured from here on (weights + this batch's activations).
        self.rss_peak.pop(batch, None)
        self.gpu_peak.pop(batch, None)
        _reset_peak_rss()
        return {"seconds": self.setup_s[key]}

    def stats(self) -> dict[str, Any]:
        import resource

        return {
            "import_rss_mb": self.import_rss_mb,
            "load_rss_mb": self.load_rss_mb,
            "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_rss_mb": {str(k): v for k, v in self.rss_peak.items()},
            "gpu_max_allocated_mb": {str(k): v for k, v in self.gpu_peak.items()},
            "device_ms": {str(k): v for k, v in self.device_ms.items()},
            "matmul_tflops": self.matmul_tflops,
            "setup_s": self.setup_s,
        }


def worker_main(spec_json: str) -> None:
    """Line protocol on the original stdout (library prints go to stderr): requests in, JSON replies out."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    try:
        worker = _Worker(json.loads(spec_json))
        proto.write(json.dumps({"ok": True, "ready": True}) + "\n")
    except Exception as exc:  # reported to the parent as a skipped case
        from lvg.errors import first_line

        proto.write(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {first_line(exc)}"}) + "\n")
        return
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["op"] == "run":
                reply = worker.run(int(req["batch"]))
            elif req["op"] == "warmup":
                reply = worker.warmup(int(req["batch"]), int(req["n"]))
            elif req["op"] == "probe":
                # The ceiling this case's achieved rate is compared with, measured in this process.
                worker.matmul_tflops = matmul_tflops() if worker._cuda else None
                reply = {"matmul_tflops": worker.matmul_tflops}
            elif req["op"] == "device_time":
                reply = worker.device_time(int(req["batch"]), int(req["n"]))
            elif req["op"] == "stats":
                reply = worker.stats()
            else:
                break
            proto.write(json.dumps({"ok": True, **reply}) + "\n")
        except Exception as exc:
            proto.write(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}) + "\n")


class _Proc:
    """Parent-side handle of a worker process."""

    def __init__(self, case: Case, spec: dict[str, Any]) -> None:
        self.case = case
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(spec["threads"]))
        # Idle OpenMP threads sleep instead of spinning: with ACTIVE waiting, torch on a machine where any
        # other process holds a core slows down up to 50x (every parallel region waits on a descheduled
        # thread), and a spinning idle worker would steal cycles from the one being measured.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self.p = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None if spec.get("verbose") else subprocess.DEVNULL,
            text=True, bufsize=1, env=env, cwd=str(ROOT),
        )
        self.error: str | None = None

    def recv(self) -> dict[str, Any]:
        line = self.p.stdout.readline()
        if not line:
            return {"ok": False, "error": f"worker exited (code {self.p.wait()})"}
        return json.loads(line)

    def send(self, **req: Any) -> bool:
        """Write one request; False when the worker is gone (its reply then reads as an error)."""
        try:
            self.p.stdin.write(json.dumps(req) + "\n")
            self.p.stdin.flush()
        except BrokenPipeError:
            return False
        return True

    def call(self, **req: Any) -> dict[str, Any]:
        if not self.send(**req):
            return {"ok": False, "error": "worker pipe closed"}
        return self.recv()

    def close(self) -> None:
        try:
            self.p.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.p.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        try:
            self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.p.kill()


if __name__ == "__main__":
    worker_main(sys.argv[1])
