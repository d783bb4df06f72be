"""Runners: one model on one runtime, able to run a timed batch and to classify real inputs.

- ``torch``: eager PyTorch under ``torch.inference_mode``;
- ``compile``: ``torch.compile`` (Inductor by default) of the same module;
- ``onnxruntime``: an ONNX file in an ONNX Runtime session, either a file the user gave or
  the checked export :func:`effnet.export.export_model` writes for a PyTorch model;
- ``openvino``: the same ONNX file on OpenVINO's CPU plugin (:mod:`effnet.export.ov_runtime`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from effnet.bench.measure import MiB, peak_memory_mb, synchronize, tensor_bytes
from effnet.errors import EffnetError
from effnet.export.formats import onnx_metadata, onnxruntime_session

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
RUNTIMES = ("torch", "compile", "onnxruntime", "openvino")
_ORT_TYPES = {"tensor(float)": ("fp32", np.float32), "tensor(float16)": ("fp16", np.float16)}


class Runner(ABC):
    """A model ready to run on one runtime; subclasses fill the size fields when they know them."""

    runtime: str
    precision: str
    img_size: int
    params: int | None = None
    size_mb: float | None = None

    @abstractmethod
    def prepare(self, batch_size: int) -> Callable[[], None]:
        """A callable that runs one batch of random inputs and returns when the device is done."""

    @abstractmethod
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Float32 outputs on the CPU for a float32 CPU batch (for accuracy)."""

    def peak_memory_mb(self, batch_size: int) -> float | None:
        """Peak memory of one batch in MiB, or None where this runtime cannot tell."""
        return None


class TorchRunner(Runner):
    """Eager or ``torch.compile``-d PyTorch on CPU or CUDA, in fp32, fp16 or bf16."""

    def __init__(
        self,
        module: nn.Module,
        img_size: int,
        in_chans: int,
        device: torch.device,
        precision: str = "fp32",
        compile_backend: str | None = None,
        channels_last: bool = False,
    ) -> None:
        self.runtime = "torch" if compile_backend is None else "compile"
        self.precision = precision
        self.img_size = img_size
        self.in_chans = in_chans
        self.device = device
        self.dtype = PRECISIONS[precision]
        # NHWC lets oneDNN (CPU) and cuDNN pick their fastest depthwise and 1x1 kernels.
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.module = module.to(device=device, dtype=self.dtype, memory_format=self.memory_format).eval()
        self.params = sum(p.numel() for p in self.module.parameters())
        self.size_mb = tensor_bytes(self.module) / MiB
        self.forward = self.module if compile_backend is None else torch.compile(self.module, backend=compile_backend)

    def _input(self, batch_size: int) -> torch.Tensor:
        shape = (batch_size, self.in_chans, self.img_size, self.img_size)
        return torch.randn(shape, device=self.device, dtype=self.dtype).contiguous(memory_format=self.memory_format)

    def prepare(self, batch_size: int) -> Callable[[], None]:
        x = self._input(batch_size)

        def run() -> None:
            with torch.inference_mode():
                self.forward(x)
            synchronize(self.device)

        if self.runtime == "compile":
            run()  # compiling for this shape is set-up, not latency, even with no warm-up runs
        return run

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            out = self.forward(images.to(device=self.device, dtype=self.dtype, memory_format=self.memory_format))
        if not isinstance(out, torch.Tensor):
            raise EffnetError("the model does not return a tensor of class scores, so accuracy cannot be measured")
        return out.float().cpu()

    def peak_memory_mb(self, batch_size: int) -> float | None:
        if self.runtime == "compile" and self.device.type != "cuda":
            return None  # compiled kernels allocate outside the dispatcher's view
        x = self._input(batch_size)

        def run_once() -> None:
            with torch.inference_mode():
                self.forward(x)

        return peak_memory_mb(self.module, run_once, self.device)


class OrtRunner(Runner):
    """An ONNX file in an ONNX Runtime session (CPU, or CUDA with onnxruntime-gpu)."""

    runtime = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None, device: torch.device, img_size: int | None = None):
        self.path = Path(path)
        self.threads = threads
        self.device = device
        self.session = onnxruntime_session(self.path, threads, device.type)
        spec = self.session.get_inputs()[0]
        self.input_name = spec.name
        if spec.type not in _ORT_TYPES or len(spec.shape) != 4:
            raise EffnetError(f"{self.path}: expected one 4-D float image input, found {spec.type} {spec.shape}")
        self.precision, self.np_dtype = _ORT_TYPES[spec.type]
        # A quantized file takes float input: its precision is the one `effnet quantize` recorded.
        self.precision = onnx_metadata(self.session).get("quantization", {}).get("dtype", self.precision)
        batch, channels, height, width = (d if isinstance(d, int) else None for d in spec.shape)
        self.fixed_batch = batch
        if channels is None:
            raise EffnetError(f"{self.path}: the input's channel count is not fixed ({spec.shape})")
        self.in_chans = channels
        if height is not None and img_size is not None and (height, width) != (img_size, img_size):
            raise EffnetError(f"{self.path} takes {height}x{width} images, not {img_size}x{img_size}; drop --img-size")
        self.img_size = img_size or height or 224
        self.size_mb = self.path.stat().st_size / MiB
        self.params = _onnx_parameter_count(self.path)

    def _input(self, batch_size: int) -> np.ndarray:
        if self.fixed_batch is not None and batch_size != self.fixed_batch:
            raise EffnetError(
                f"{self.path.name} was exported for batch size {self.fixed_batch}; use --batch-sizes "
                f"{self.fixed_batch} or export it again with effnet export (any batch size by default)"
            )
        rng = np.random.default_rng(0)
        return rng.standard_normal((batch_size, self.in_chans, self.img_size, self.img_size)).astype(self.np_dtype)

    def prepare(self, batch_size: int) -> Callable[[], None]:
        feed = {self.input_name: self._input(batch_size)}
        session = self.session

        def run() -> None:
            session.run(None, feed)

        return run

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        x = images.numpy().astype(self.np_dtype)
        step = self.fixed_batch or len(x)
        outputs = []
        for start in range(0, len(x), step):
            chunk = x[start : start + step]
            real = len(chunk)
            if real < step:  # a fixed-batch file: pad the last chunk, then drop the padding
                chunk = np.concatenate([chunk, np.zeros((step - real, *chunk.shape[1:]), chunk.dtype)])
            outputs.append(self._run(chunk)[:real])
        return torch.from_numpy(np.concatenate(outputs)).float()

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]

    def peak_memory_mb(self, batch_size: int) -> float | None:
        """Resident memory the session adds to a fresh process (weights, arena, workspace), in MiB.

        ONNX Runtime has no allocator statistics, so a small child process (which imports only
        onnxruntime and numpy) loads the file, runs three batches and reports how far its peak
        resident set rose above where it stood before the session was created. Linux only.
        """
        if self.device.type != "cpu" or not Path("/proc/self/status").exists():
            return None
        self._input(batch_size)  # the same batch-size check as timing
        shape = [batch_size, self.in_chans, self.img_size, self.img_size]
        args = [str(self.path), json.dumps(shape), str(self.threads or 0), np.dtype(self.np_dtype).name]
        try:
            done = subprocess.run(
                [sys.executable, "-c", _ORT_MEMORY_PROBE, *args], capture_output=True, text=True, timeout=300
            )
        except subprocess.TimeoutExpired:
            return None
        if done.returncode != 0:
            if "allocate" in done.stderr.lower() or "memory" in done.stderr.lower():
                raise MemoryError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "out of memory")
            return None
        return json.loads(done.stdout)["bytes"] / MiB


class OpenVinoRunner(OrtRunner):
    """An ONNX file on OpenVINO's CPU plugin; ONNX Runtime's session only reads the file's input and metadata."""

    runtime = "openvino"

    def __init__(self, path: str | Path, threads: int | None, device: torch.device, img_size: int | None = None):
        from effnet.export.ov_runtime import OpenVinoSession

        if device.type != "cpu":
            raise EffnetError("effnet runs OpenVINO on the CPU only; use --device cpu")
        super().__init__(path, threads, device, img_size)
        self.openvino = OpenVinoSession(self.path, threads)

    def prepare(self, batch_size: int) -> Callable[[], None]:
        x = self._input(batch_size)
        request = self.openvino.request(x.shape)

        def run() -> None:
            request.infer({0: x})

        return run

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.openvino.run(x)

    def peak_memory_mb(self, batch_size: int) -> float | None:
        return None  # no allocator statistics, and the probe process measures ONNX Runtime


# The peak is read from VmHWM, the high-water mark of this process's own address space;
# getrusage's ru_maxrss would include the parent's peak from before exec.
_ORT_MEMORY_PROBE = r"""
import json, sys
import numpy as np
import onnxruntime as ort

def status(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

path, shape, threads, dtype = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
before = status("VmRSS")
options = ort.SessionOptions()
options.log_severity_level = 3
if threads:
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
feed = {session.get_inputs()[0].name: np.zeros(shape, dtype=dtype)}
for _ in range(3):
    session.run(None, feed)
print(json.dumps({"bytes": max(status("VmHWM") - before, 0)}))
"""


def _onnx_parameter_count(path: Path) -> int | None:
    """Weights in an ONNX file, float or quantized (``onnx_weight_count``), if onnx is installed."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # unreadable here means unknown, not an error: the session already loaded it
        return None
    from effnet.export.formats import onnx_weight_count

    return onnx_weight_count(model)[0]
