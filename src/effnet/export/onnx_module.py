"""An exported ONNX file behind the ``nn.Module`` call interface, so ``effnet predict`` can run it.

``effnet export`` records the weights' preprocessing and class names in the file's metadata
(:func:`effnet.export.pipeline.export_metadata`); :class:`OnnxModule` reads them back into
``pretrained_meta``, the attribute :func:`effnet.predict.classify` takes them from, and runs
batches in ONNX Runtime. The metadata is untrusted input and is checked like a checkpoint's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from effnet.errors import EffnetError
from effnet.export.formats import onnx_metadata, onnxruntime_session, short_message
from effnet.weights.specs import Preprocessing, recorded_classes_and_preprocessing


class OnnxModule(nn.Module):
    """An ONNX image classifier; ``module(images)`` returns its logits as a CPU tensor.

    ``runtime`` is ``onnxruntime``, ``openvino`` (CPU) or ``auto``: the runtime the file records
    (``effnet quantize`` records the one it measured fastest), else ONNX Runtime. A file that
    records OpenVINO runs in ONNX Runtime where ``openvino`` is not installed, with a note.

    >>> import effnet, tempfile
    >>> from effnet.export import export_model
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = folder + "/lite0.onnx"
    ...     _ = export_model(effnet.create_model("efficientnet_lite0", num_classes=3), "onnx", path, img_size=32)
    ...     OnnxModule(path)(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 3])
    """

    def __init__(
        self, path: str | os.PathLike[str], threads: int | None = None, device: str = "cpu", runtime: str = "auto"
    ) -> None:
        super().__init__()
        from effnet.export.ov_runtime import RUNTIMES

        if runtime not in ("auto", *RUNTIMES):
            raise EffnetError(f"unknown runtime {runtime!r} for an ONNX file; choose auto, {', '.join(RUNTIMES)}")
        self.path = Path(path)
        self.session = onnxruntime_session(self.path, threads, device)
        spec = self.session.get_inputs()[0]
        if spec.type != "tensor(float)" or len(spec.shape) != 4:
            raise EffnetError(f"{self.path}: expected one 4-D float32 image input, found {spec.type} {spec.shape}")
        self.input_name = spec.name
        batch, _, height, width = (d if isinstance(d, int) else None for d in spec.shape)
        self.fixed_batch = batch
        self.pretrained_meta = self._metadata(height, width)
        self.runtime = self._runtime(runtime, device)
        self.openvino = None
        if self.runtime == "openvino":
            from effnet.export.ov_runtime import OpenVinoSession

            self.openvino = OpenVinoSession(self.path, threads)

    def _runtime(self, asked: str, device: str) -> str:
        from effnet.export.ov_runtime import openvino_available

        if asked == "openvino" and device != "cpu":
            raise EffnetError("effnet runs OpenVINO on the CPU only; use --device cpu or the onnxruntime runtime")
        if asked != "auto":
            return asked
        recorded = recorded_runtime(onnx_metadata(self.session))
        if recorded == "openvino" and (device != "cpu" or not openvino_available()):
            why = "on this device" if device != "cpu" else "here (pip install openvino)"
            print(f"effnet: {self.path} was measured fastest in OpenVINO, which is not available {why}; "
                  "running it in ONNX Runtime", file=sys.stderr)  # fmt: skip
            return "onnxruntime"
        return recorded

    def _metadata(self, height: int | None, width: int | None) -> dict[str, Any]:
        meta = onnx_metadata(self.session)
        if not isinstance(meta, dict) or "preprocessing" not in meta:
            raise EffnetError(
                f"{self.path} records no preprocessing (input size, resize, mean/std), so its predictions "
                "cannot be trusted; export the model with 'effnet export', which records them"
            )
        checked = recorded_classes_and_preprocessing(meta, self.path)
        size = Preprocessing.from_dict(checked["preprocessing"]).input_size
        if height is not None and (height, width) != (size, size):
            raise EffnetError(f"{self.path} takes {height}x{width} images but records preprocessing for {size}x{size}")
        return {"weights": str(self.path), **checked}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.detach().float().cpu().numpy()
        step = self.fixed_batch or max(len(x), 1)
        outputs = []
        for start in range(0, len(x), step):
            chunk = x[start : start + step]
            real = len(chunk)
            if real < step:  # a file fixed to one batch size: pad the last chunk, then drop the padding
                chunk = np.concatenate([chunk, np.zeros((step - real, *chunk.shape[1:]), chunk.dtype)])
            if self.openvino is not None:
                outputs.append(self.openvino.run(chunk)[:real])
                continue
            try:
                outputs.append(self.session.run(None, {self.input_name: chunk})[0][:real])
            except Exception as exc:  # ONNX Runtime raises its own exception types
                raise EffnetError(f"{self.path}: ONNX Runtime failed ({short_message(exc)})") from None
        return torch.from_numpy(np.concatenate(outputs)) if outputs else torch.empty(0)


def recorded_runtime(meta: dict[str, Any]) -> str:
    """The runtime an ONNX file's effnet metadata names (``effnet quantize --runtime``), else ``onnxruntime``."""
    runtime = meta.get("runtime") if isinstance(meta, dict) else None
    return runtime if runtime in ("onnxruntime", "openvino") else "onnxruntime"
