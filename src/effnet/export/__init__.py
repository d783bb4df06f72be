"""Deployment: inference-time fusion, static padding, and checked export to ONNX, TorchScript and pt2.

>>> import effnet, tempfile
>>> from effnet.export import export_model, fuse_for_inference
>>> model = effnet.create_model("efficientnet_b0")
>>> fused = fuse_for_inference(model)  # batch norms folded; `model` is untouched
>>> with tempfile.TemporaryDirectory() as folder:
...     report = export_model(model, "onnx", folder + "/b0.onnx", img_size=64)
>>> report.checked_with
'onnxruntime'
"""

from effnet.export.formats import DEFAULT_OPSET, FORMATS, ExportFormat, onnxruntime_session
from effnet.export.fuse import count_foldable_batchnorms, fuse_for_inference
from effnet.export.onnx_module import OnnxModule
from effnet.export.padding import PaddedConv2d, freeze_same_padding
from effnet.export.pipeline import (
    ExportReport,
    default_input_size,
    export_model,
    input_channels,
    max_abs_difference,
    prepare_for_export,
)
from effnet.export.source import load_model

__all__ = [
    "DEFAULT_OPSET",
    "FORMATS",
    "ExportFormat",
    "ExportReport",
    "OnnxModule",
    "PaddedConv2d",
    "count_foldable_batchnorms",
    "default_input_size",
    "export_model",
    "freeze_same_padding",
    "fuse_for_inference",
    "input_channels",
    "load_model",
    "max_abs_difference",
    "onnxruntime_session",
    "prepare_for_export",
]
