"""An exported ONNX file behind the ``nn.Module`` call interface, so ``effnet predict`` can run it.

``effnet export`` records the weights' preprocessing and class names in the file's metadata
(:func:`effnet.export.pipeline.export_metadata`); :class:`OnnxModule` reads them back into
``pretrained_meta``, the attribute :func:`effnet.predict.classify` takes them from, and runs
batches in ONNX Runtime. The metadata is untrusted input and is checked like a checkpoint's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from effnet.errors import EffnetError
from effnet.export.formats import onnx_metadata, onnxruntime_session, short_message
from effnet.weights.specs import Preprocessing, recorded_classes_and_preprocessing


class OnnxModule(nn.Module):
    """An ONNX image classifier run by ONNX Runtime; ``module(images)`` returns its logits as a CPU tensor.

    >>> import effnet, tempfile
    >>> from effnet.export import export_model
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = folder + "/lite0.onnx"
    ...     _ = export_model(effnet.create_model("efficientnet_lite0", num_classes=3), "onnx", path, img_size=32)
    ...     OnnxModule(path)(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 3])
    """

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None, device: str = "cpu") -> None:
        super().__init__()
        self.path = Path(path)
        self.session = onnxruntime_session(self.path, threads, device)
        spec = self.session.get_inputs()[0]
        if spec.type != "tensor(float)" or len(spec.shape) != 4:
            raise EffnetError(f"{self.path}: expected one 4-D float32 image input, found {spec.type} {spec.shape}")
        self.input_name = spec.name
        batch, _, height, width = (d if isinstance(d, int) else None for d in spec.shape)
        self.fixed_batch = batch
        self.pretrained_meta = self._metadata(height, width)

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
            try:
                outputs.append(self.session.run(None, {self.input_name: chunk})[0][:real])
            except Exception as exc:  # ONNX Runtime raises its own exception types
                raise EffnetError(f"{self.path}: ONNX Runtime failed ({short_message(exc)})") from None
        return torch.from_numpy(np.concatenate(outputs)) if outputs else torch.empty(0)
