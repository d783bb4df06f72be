"""The export formats: how each one is written, and how the written file is run to check it.

- ``onnx``: PyTorch's TorchScript-based ONNX exporter (``torch.onnx.export(..., dynamo=False)``).
  It needs only ``onnx`` (to record effnet's metadata) and runs convolutional networks like
  EfficientNet robustly; the newer torch.export-based exporter additionally needs
  ``onnxscript``. Checked with ONNX Runtime (https://onnxruntime.ai/docs/api/python/).
- ``torchscript``: ``torch.jit.trace``; checked with ``torch.jit.load``. TorchScript is
  deprecated upstream in favour of torch.export, but many deployment stacks still load it.
- ``pt2``: ``torch.export.export`` and ``torch.export.save``; checked with
  ``torch.export.load``.

Every format records effnet's metadata (architecture, preprocessing, classes) as JSON:
ONNX in ``metadata_props["effnet"]``, TorchScript and pt2 as the extra file ``effnet.json``.
"""

from __future__ import annotations

import inspect
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from effnet.errors import EffnetError

DEFAULT_OPSET = 17
METADATA_KEY = "effnet"
EXTRA_FILE = "effnet.json"
MAX_DYNAMIC_BATCH = 65536

Runner = Callable[[torch.Tensor], list[torch.Tensor]]
# torch.onnx.export grew `dynamo=` in 2.5 and made the new exporter the default in 2.9.
_TORCHSCRIPT_EXPORTER = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}


@dataclass(frozen=True)
class ExportFormat:
    """One export format: its file suffix, its writer, and the loader that runs the file for checking."""

    name: str
    suffix: str
    checked_with: str
    write: Callable[..., None]
    load: Callable[[Path], Runner]


def import_onnxruntime() -> ModuleType:
    """The ``onnxruntime`` module, or an :class:`EffnetError` that says how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise EffnetError(
            "ONNX Runtime is not installed; pip install onnxruntime (or pip install 'effnet[onnx]')"
        ) from None
    return onnxruntime


def import_onnx() -> ModuleType:
    try:
        import onnx
    except ImportError:
        raise EffnetError(
            "ONNX export needs the onnx package; pip install onnx (or pip install 'effnet[onnx]')"
        ) from None
    return onnx


def onnxruntime_session(path: str | Path, threads: int | None = None, device: str = "cpu") -> Any:
    """An ONNX Runtime session for ``path`` on CPU (or CUDA), with ``threads`` intra-op threads.

    Graph optimisations are ONNX Runtime's defaults (all levels, which fold batch norms and
    fuse activations). A file that is missing or not a model raises :class:`EffnetError`.
    """
    ort = import_onnxruntime()
    p = Path(path)
    if not p.is_file():
        raise EffnetError(f"{p}: no such ONNX file")
    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise EffnetError("this onnxruntime has no CUDA provider; install onnxruntime-gpu or use --device cpu")
        providers = ["CUDAExecutionProvider"]
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no optimiser chatter on stderr
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(p), options, providers=providers)
    except Exception as exc:  # ONNX Runtime raises its own exception types for every bad-file case
        raise EffnetError(f"{p} is not an ONNX model ONNX Runtime can load ({short_message(exc)})") from None


def onnx_metadata(session: Any) -> dict[str, Any]:
    """effnet's metadata recorded in the model an ONNX Runtime session holds (empty if none)."""
    try:
        return json.loads(session.get_modelmeta().custom_metadata_map.get(METADATA_KEY, "{}"))
    except ValueError:
        return {}


def onnx_weight_count(model: Any) -> tuple[int, int]:
    """(weights, non-zero weights) of an ONNX model: every initializer with a shape, whatever its
    type (float, or int8/int32 behind a DequantizeLinear), except quantization scales, zero points
    and int64 shapes; a ``MatMulNBits`` weight, two 4-bit values to a byte, counts as its ``K x N``. So a
    float export and its quantized file count the same weights."""
    from onnx import TensorProto, helper, numpy_helper

    skip: set[str] = set()
    packed: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            skip.update(node.input[1:])
        elif node.op_type == "MatMulNBits":
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            packed[node.input[1]] = attrs["K"] * attrs["N"]
            skip.update(node.input[2:4])  # scales, zero points
    total = nonzero = 0
    for init in model.graph.initializer:
        if not init.dims or init.name in skip or init.data_type == TensorProto.INT64:  # int64: shapes
            continue
        if init.name in packed:
            total, nonzero = total + packed[init.name], nonzero + packed[init.name]
            continue
        values = numpy_helper.to_array(init)
        total, nonzero = total + values.size, nonzero + int(np.count_nonzero(values))
    return total, nonzero


def short_message(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, shortened: error messages stay one line."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _output_names(count: int) -> list[str]:
    return ["output"] if count == 1 else [f"output{i}" for i in range(count)]


def _write_onnx(
    model: nn.Module,
    sample: torch.Tensor,
    out: Path,
    *,
    dynamic_batch: bool,
    opset: int,
    metadata: dict[str, Any],
    num_outputs: int,
) -> None:
    onnx = import_onnx()
    ort = import_onnxruntime()
    names = _output_names(num_outputs)
    axes = {name: {0: "batch"} for name in ["input", *names]} if dynamic_batch else None
    raw = out.with_name(out.name + ".raw")
    try:
        with warnings.catch_warnings():
            # The TorchScript-based exporter is chosen on purpose (see the module docstring); its
            # notes about padding subgraphs it cannot fold are handled by the step below.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            torch.onnx.export(
                model,
                (sample,),
                str(raw),
                **_TORCHSCRIPT_EXPORTER,
                opset_version=opset,
                input_names=["input"],
                output_names=names,
                dynamic_axes=axes,
                do_constant_folding=True,
            )
    except (ValueError, RuntimeError, torch.onnx.errors.OnnxExporterError) as exc:
        raw.unlink(missing_ok=True)
        raise EffnetError(f"ONNX export (opset {opset}) failed: {short_message(exc)}") from exc
    try:
        _spell_out_pad_values(onnx, raw)
        # The exporter writes constant padding as a small shape subgraph it cannot fold (a
        # Slice with step -1). ONNX Runtime's *basic* optimisations (constant folding, Pad
        # into Conv, identity removal) use standard ONNX operators only, so the saved graph
        # stays portable to any runtime; the hardware-specific levels run at load time.
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(out)
        options.log_severity_level = 3
        ort.InferenceSession(str(raw), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime's own exception types
        raise EffnetError(f"ONNX Runtime could not load the exported graph: {short_message(exc)}") from exc
    finally:
        raw.unlink(missing_ok=True)
    proto = onnx.load(str(out))
    # ONNX Runtime declares its private operator domains when saving; keep only those in use.
    used = {node.domain for node in proto.graph.node} | {""}
    kept = [imp for imp in proto.opset_import if imp.domain in used]
    del proto.opset_import[:]
    proto.opset_import.extend(kept)
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    proto.producer_name = "effnet"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))


def _spell_out_pad_values(onnx: ModuleType, path: Path) -> None:
    """Give every constant-mode ``Pad`` an explicit zero ``constant_value`` input.

    The value is optional in ONNX and zero when absent, which is how the exporter writes it,
    but ONNX Runtime folds a ``Pad`` into the following ``Conv`` only when the value is spelled
    out (onnxruntime 1.31). An unfused ``Pad`` also breaks its NCHWc convolution chain, so a
    TF-padded model (EfficientNet-Lite) would pay for layout conversions around every strided conv.
    """
    proto = onnx.load(str(path))
    pads = [
        node
        for node in proto.graph.node
        if node.op_type == "Pad"
        and next((a.s for a in node.attribute if a.name == "mode"), b"constant") == b"constant"
        and (len(node.input) < 3 or not node.input[2])
    ]
    if not pads:
        return
    dtype = onnx.helper.tensor_dtype_to_np_dtype(proto.graph.input[0].type.tensor_type.elem_type)
    zero = onnx.numpy_helper.from_array(np.zeros((), dtype=dtype), "effnet_pad_zero")
    proto.graph.initializer.append(zero)
    for node in pads:
        while len(node.input) < 2:
            node.input.append("")
        if len(node.input) < 3:
            node.input.append(zero.name)
        else:
            node.input[2] = zero.name
    onnx.save(proto, str(path))


def _load_onnx(path: Path) -> Runner:
    session = onnxruntime_session(path)
    input_name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> list[torch.Tensor]:
        return [torch.from_numpy(y) for y in session.run(None, {input_name: x.detach().cpu().numpy()})]

    return run


def _write_torchscript(
    model: nn.Module, sample: torch.Tensor, out: Path, *, metadata: dict[str, Any], **_: Any
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
        try:
            traced = torch.jit.trace(model, sample, check_trace=False)
        except RuntimeError as exc:
            raise EffnetError(f"TorchScript export failed: {short_message(exc)}") from exc
        torch.jit.save(traced, str(out), _extra_files={EXTRA_FILE: json.dumps(metadata)})


def _load_torchscript(path: Path) -> Runner:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu")  # a file this process just wrote

    def run(x: torch.Tensor) -> list[torch.Tensor]:
        with torch.inference_mode():
            return _as_list(module(x.cpu()))

    return run


def _write_pt2(
    model: nn.Module, sample: torch.Tensor, out: Path, *, dynamic_batch: bool, metadata: dict[str, Any], **_: Any
) -> None:
    shapes = ({0: torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)},) if dynamic_batch else None
    try:
        program = torch.export.export(model, (sample,), dynamic_shapes=shapes, strict=False)
    except Exception as exc:  # torch.export raises many error types (UserError, GuardOnDataDependent...)
        raise EffnetError(f"torch.export failed: {short_message(exc)}") from exc
    with open(out, "wb") as fh:  # a handle: torch.export.save insists on a .pt2 suffix for paths
        torch.export.save(program, fh, extra_files={EXTRA_FILE: json.dumps(metadata)})


def _load_pt2(path: Path) -> Runner:
    with open(path, "rb") as fh:  # a file this process just wrote
        module = torch.export.load(fh).module()

    def run(x: torch.Tensor) -> list[torch.Tensor]:
        with torch.inference_mode():
            return _as_list(module(x.cpu()))

    return run


def _as_list(outputs: Any) -> list[torch.Tensor]:
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, (list, tuple)):
        return [t for t in outputs]
    raise TypeError(f"expected a tensor or a list of tensors, got {type(outputs).__name__}")


FORMATS: dict[str, ExportFormat] = {
    f.name: f
    for f in (
        ExportFormat("onnx", ".onnx", "onnxruntime", _write_onnx, _load_onnx),
        ExportFormat("torchscript", ".pt", "torch.jit.load", _write_torchscript, _load_torchscript),
        ExportFormat("pt2", ".pt2", "torch.export.load", _write_pt2, _load_pt2),
    )
}


def get_format(name: str) -> ExportFormat:
    key = name.strip().lower()
    if key not in FORMATS:
        raise EffnetError(f"unknown export format {name!r}; choose one of {', '.join(FORMATS)}")
    return FORMATS[key]
