"""``export_model``: prepare a model for deployment, write it in one format, and prove the file right.

The steps, each a function of its own so they can be used alone:

1. :func:`prepare_for_export` copies the model in eval mode, folds batch norms
   (:func:`~effnet.export.fuse.fuse_for_inference`), freezes TensorFlow "same" padding to
   constants for the export resolution (:func:`~effnet.export.padding.freeze_same_padding`) and
   makes activations out-of-place, which every exporter handles.
2. The format's writer (:mod:`effnet.export.formats`) writes the file with effnet's metadata.
3. The file is loaded by the runtime that will run it (ONNX Runtime, ``torch.jit.load``,
   ``torch.export.load``) and its outputs are compared with the *original* eager model on
   seeded random inputs; a difference above the tolerance is an error and the file is removed.

Nothing here is specific to EfficientNet: any ``nn.Module`` that maps one image batch to a
tensor (or a list of tensors) can be exported, which is what pruned and quantized models need.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effnet.errors import EffnetError
from effnet.export.formats import DEFAULT_OPSET, get_format
from effnet.export.fuse import fuse_for_inference
from effnet.export.padding import freeze_same_padding
from effnet.sizes import resolve_input_size
from effnet.weights.specs import Preprocessing


@dataclass
class ExportReport:
    """What :func:`export_model` wrote and how closely the file reproduces the eager model."""

    format: str
    path: str
    size_bytes: int
    input_shape: list[int]  # the example input the file was exported with (N, C, H, W)
    dynamic_batch: bool
    opset: int | None  # ONNX only
    fused: bool
    checked_with: str  # the runtime that ran the file for the check
    checked_batch_sizes: list[int]
    max_abs_diff: float  # largest |exported - eager| over all outputs and checked inputs
    tolerance: float
    arch: str | None = None  # the architecture recorded in the file's metadata

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_input_size(model: nn.Module) -> int:
    """The image side a model expects: its weights' preprocessing, else its config's resolution."""
    return resolve_input_size(model)


def input_channels(model: nn.Module) -> int:
    """Input channels: the config's ``in_chans``, else the first convolution's ``in_channels``."""
    config = getattr(model, "config", None)
    if getattr(config, "in_chans", None):
        return int(config.in_chans)
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return int(module.in_channels)
    raise EffnetError("cannot tell how many input channels the model takes (it has no convolution)")


def export_metadata(model: nn.Module, img_size: int) -> dict[str, Any]:
    """The JSON metadata written into every export: architecture, preprocessing, classes, input size."""
    from effnet import __version__

    meta = dict(getattr(model, "pretrained_meta", None) or {})
    config = getattr(model, "config", None)
    out: dict[str, Any] = {"effnet_version": __version__, "img_size": img_size}
    if hasattr(model, "arch_dict"):
        out["arch"] = model.arch_dict()  # block by block, so a pruned network is described exactly
    elif config is not None and hasattr(config, "to_dict"):
        out["arch"] = config.to_dict()
    for key in ("weights", "preprocessing", "classes"):
        if key in meta:
            out[key] = meta[key]
    if "preprocessing" in out:  # a file exported at another size must say how to prepare images for it
        out["preprocessing"] = Preprocessing.from_dict(out["preprocessing"]).at_size(img_size).to_dict()
    return out


def prepare_for_export(model: nn.Module, example_input: torch.Tensor, fuse: bool = True) -> nn.Module:
    """An eval-mode copy ready for tracing: batch norms folded, padding frozen, activations out-of-place.

    The input model is not modified. Folding and freezing are the ``fold_batchnorm`` and
    ``freeze_padding`` compression passes (:mod:`effnet.compress.inference`).
    """
    from effnet.compress import PassContext, apply_pass

    height, width = example_input.shape[-2:]
    if height != width:  # the passes describe square inputs; other shapes use the functions directly
        prepared = fuse_for_inference(model) if fuse else copy.deepcopy(model).eval()
        prepared = freeze_same_padding(prepared, example_input).eval()
    else:
        context = PassContext(img_size=int(width), in_chans=int(example_input.shape[1]))
        prepared = apply_pass(model, "fold_batchnorm", context)[0] if fuse else copy.deepcopy(model)
        prepared = apply_pass(prepared.eval(), "freeze_padding", context, img_size=int(width))[0].eval()
    for module in prepared.modules():
        # In-place activations on traced values are a classic source of exporter trouble
        # and gain nothing once a runtime plans the memory itself.
        if getattr(module, "inplace", False) is True:
            module.inplace = False
    return prepared


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    was_training = model.training
    try:
        yield model.eval()
    finally:
        model.train(was_training)


def _outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.inference_mode():
        y = model(x)
    return [y] if isinstance(y, torch.Tensor) else list(y)


def max_abs_difference(expected: list[torch.Tensor], actual: list[torch.Tensor]) -> float:
    """The largest absolute difference over matching outputs (``inf`` when the shapes disagree)."""
    if len(expected) != len(actual):
        return float("inf")
    worst = 0.0
    for e, a in zip(expected, actual, strict=True):
        if e.shape != a.shape:
            return float("inf")
        diff = (e.detach().float().cpu() - a.detach().float().cpu()).abs().max().item() if e.numel() else 0.0
        if diff != diff:  # NaN: never within tolerance
            return float("nan")
        worst = max(worst, diff)
    return worst


def export_model(
    model: nn.Module,
    fmt: str,
    out: str | os.PathLike[str],
    *,
    img_size: int | None = None,
    batch_size: int = 1,
    dynamic_batch: bool = True,
    opset: int = DEFAULT_OPSET,
    fuse: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-4,
) -> ExportReport:
    """Export ``model`` as ``onnx``, ``torchscript`` or ``pt2`` to ``out`` and check the file.

    The file is run by its own runtime on seeded random inputs and compared with ``model`` in
    eval mode; if the largest absolute difference exceeds ``atol + rtol * max|eager output|``,
    the file is removed and :class:`EffnetError` is raised. ``model`` itself is not modified.

    Args:
        img_size: the square input side (default: the model's preprocessing or config
            resolution). TensorFlow "same" padding is frozen for this size.
        batch_size: the batch of the example input; the check runs it (and, with a dynamic
            batch, the next size too).
        dynamic_batch: accept any batch size (the default). A fixed batch measured no faster
            in ONNX Runtime (``docs/export.md``); ``False`` is for runtimes that need static shapes.
        opset: the ONNX opset (ONNX only).
        fuse: fold batch norms into convolutions first (see :func:`fuse_for_inference`).

    >>> import effnet, tempfile
    >>> model = effnet.create_model("efficientnet_lite0")
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     report = export_model(model, "onnx", folder + "/lite0.onnx", img_size=96)
    >>> report.max_abs_diff <= report.tolerance
    True
    """
    spec = get_format(fmt)
    if batch_size < 1:
        raise EffnetError(f"batch size must be at least 1, got {batch_size}")
    size = resolve_input_size(model, img_size)
    path = Path(out)
    if path.is_dir():
        raise EffnetError(f"{path} is a directory; give a file name such as {path / ('model' + spec.suffix)}")
    path.parent.mkdir(parents=True, exist_ok=True)

    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    channels = input_channels(model)
    # torch.export specialises a dimension of size 1, so a dynamic batch is traced with two.
    trace_batch = max(batch_size, 2) if dynamic_batch else batch_size
    check_batches = [batch_size, batch_size + 1] if dynamic_batch else [batch_size]
    gen = torch.Generator().manual_seed(0)
    samples = {b: torch.randn(b, channels, size, size, generator=gen).to(device, dtype) for b in check_batches}
    trace_sample = samples.get(trace_batch, torch.randn(trace_batch, channels, size, size, generator=gen))
    trace_sample = trace_sample.to(device, dtype)

    with _eval_mode(model):
        expected = {b: _outputs(model, x) for b, x in samples.items()}
    prepared = prepare_for_export(model, trace_sample, fuse=fuse)
    metadata = export_metadata(model, size)
    spec.write(
        prepared,
        trace_sample,
        path,
        dynamic_batch=dynamic_batch,
        opset=opset,
        metadata=metadata,
        num_outputs=len(next(iter(expected.values()))),
    )

    run = spec.load(path)
    worst, tolerance = 0.0, 0.0
    for b, x in samples.items():
        diff = max_abs_difference(expected[b], run(x))
        scale = max((e.detach().float().abs().max().item() for e in expected[b] if e.numel()), default=0.0)
        tol = atol + rtol * scale
        if not diff <= tol:
            path.unlink(missing_ok=True)
            raise EffnetError(
                f"{spec.name} export check failed at batch size {b}: max abs difference {diff:.3g} "
                f"exceeds the tolerance {tol:.3g} ({spec.checked_with} vs eager); the file was removed"
            )
        worst, tolerance = max(worst, diff), max(tolerance, tol)
    return ExportReport(
        format=spec.name,
        path=str(path),
        size_bytes=path.stat().st_size,
        input_shape=list(trace_sample.shape),
        dynamic_batch=dynamic_batch,
        opset=opset if spec.name == "onnx" else None,
        fused=fuse,
        checked_with=spec.checked_with,
        checked_batch_sizes=check_batches,
        max_abs_diff=worst,
        tolerance=tolerance,
        arch=(metadata.get("arch") or {}).get("name"),
    )
