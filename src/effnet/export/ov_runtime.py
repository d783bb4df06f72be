"""OpenVINO as a second runtime for effnet's ONNX files (float exports and int8 QDQ files alike).

OpenVINO's CPU plugin reads an ONNX file directly; for a QDQ file its low-precision
transformations run the quantized layers in int8 (https://docs.openvino.ai). effnet compiles
one model per input shape (static shapes are OpenVINO's fast path), with one stream, the given
number of threads, and ``INFERENCE_PRECISION_HINT=f32``: on CPUs with bf16 units OpenVINO would
otherwise compute float layers in bf16, which changes accuracy and is not the float model the
user measured. With one thread, inference runs on the calling thread, so the thread's CPU time
is its cost (as for ONNX Runtime). ``openvino`` is an optional dependency: ``pip install openvino``.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from effnet.errors import EffnetError
from effnet.export.formats import short_message

RUNTIMES = ("onnxruntime", "openvino")  # the runtimes that run effnet's ONNX files


def import_openvino() -> ModuleType:
    """The ``openvino`` module, or an :class:`EffnetError` that says how to install it."""
    try:
        import openvino
    except ImportError:
        raise EffnetError("the openvino runtime needs the openvino package; pip install openvino") from None
    return openvino


def openvino_available() -> bool:
    """Whether ``openvino`` can be imported here."""
    try:
        import_openvino()
    except EffnetError:
        return False
    return True


class OpenVinoSession:
    """An ONNX file on OpenVINO's CPU plugin: ``run(x)`` returns the first output for a float32 batch.

    >>> import effnet, tempfile, numpy as np
    >>> from effnet.export import export_model
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = folder + "/m.onnx"
    ...     _ = export_model(effnet.create_model("efficientnet_lite0", num_classes=3), "onnx", path, img_size=32)
    ...     OpenVinoSession(path, threads=1).run(np.zeros((2, 3, 32, 32), np.float32)).shape
    (2, 3)
    """

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None) -> None:
        ov = import_openvino()
        self.path = Path(path)
        if not self.path.is_file():
            raise EffnetError(f"{self.path}: no such ONNX file")
        self.threads = threads
        self.core = ov.Core()
        try:
            self.model = self.core.read_model(str(self.path))
        except Exception as exc:  # OpenVINO raises its own exception types for every bad-file case
            raise EffnetError(f"{self.path} is not an ONNX model OpenVINO can load ({short_message(exc)})") from None
        self._requests: dict[tuple[int, ...], Any] = {}

    def request(self, shape: tuple[int, ...]) -> Any:
        """An inference request compiled for inputs of ``shape`` (compiled on first use, then reused)."""
        if shape not in self._requests:
            model = self.model.clone()
            config: dict[str, Any] = {"NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "f32"}
            if self.threads:
                config["INFERENCE_NUM_THREADS"] = self.threads
            try:
                model.reshape(list(shape))
                compiled = self.core.compile_model(model, "CPU", config)
            except Exception as exc:
                why = short_message(exc)
                raise EffnetError(f"{self.path}: OpenVINO cannot compile it for {shape} ({why})") from None
            self._requests[shape] = compiled.create_infer_request()
        return self._requests[shape]

    def run(self, x: np.ndarray) -> np.ndarray:
        request = self.request(tuple(x.shape))
        try:
            request.infer({0: x})
        except Exception as exc:
            raise EffnetError(f"{self.path}: OpenVINO failed ({short_message(exc)})") from None
        return np.array(request.get_output_tensor(0).data)  # a copy: the request reuses its buffer
