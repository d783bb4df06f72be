"""Post-training quantization to an ONNX Runtime model that runs faster than float on CPU.

The network is exported to ONNX (batch norms folded, TF padding frozen, checked against eager),
then quantized with ONNX Runtime's quantizer (``onnxruntime.quantization``):

- ``static`` int8: QDQ format, per-channel symmetric int8 weights and **uint8** activations
  calibrated on real images. Signed int8 activations are ONNX Runtime's default but leave
  depthwise convolutions in float on x86 and ran 2.7x *slower* than float on our AVX2 CPU; uint8
  activations run every convolution in int8 (``docs/quantization.md`` has the measurements).
  Observers: ``minmax`` (the default: the best top-1 agreement in ``benchmarks/quantize_photos.py``
  and 20-35x faster to calibrate than the histogram ones), ``moving_average`` (the mean over the
  calibration images of each image's minimum and maximum, so a rare extreme widens the range
  less), ``percentile`` (of the absolute values, 99.999 by default), ``entropy`` (KL
  divergence, as TensorRT does) and ``mse`` (the range with the least expected squared error,
  clipping plus rounding, as PyTorch's ``HistogramObserver`` chooses it).
- **Bias correction** (Nagel et al., 2019, "Data-Free Quantization Through Weight Equalization
  and Bias Correction", https://arxiv.org/abs/1906.04721, §4.2): the mean error that rounding a
  layer's weights adds to its outputs, ``(W_q - W)·E[x]`` with ``E[x]`` measured on the
  calibration images, is subtracted from the layer's bias before the activations are
  calibrated. It matters most for depthwise convolutions, whose 9-weight kernels round coarsely.
- **AdaRound** (``rounding="adaround"``; Nagel et al., 2020, https://arxiv.org/abs/2004.10568):
  each layer's int8 weights rounded up or down as learned on calibration inputs to keep its output
  close to float, instead of to the nearest grid point; written back as float weights on ONNX
  Runtime's grid, which its quantizer then keeps exactly. Bias correction still applies, measured
  from the original float weights.
- **The stem stays float** (``float_stem=True``): the convolution that reads the image keeps its
  float weights and an unrounded input. ONNX Runtime's int8 kernels run it 1.6x *slower* than
  float (three input channels) and the image must be quantized first; float, Lite0's int8 file
  ran 9-15% faster at 224 px (2-7% at 64 px) with the same accuracy (``docs/quantization.md``).
- ``qat`` int8: the same conversion as ``static``, of a network first fine-tuned with int8
  rounding simulated (:mod:`effnet.compress.qat`; ``effnet quantize --mode qat`` runs both).
- ``dynamic`` int8: the classifier's weights int8, its input quantized per batch at run time
  (no calibration), as PyTorch's dynamic quantization does for linear layers. Convolutions stay
  float: ONNX Runtime's dynamic ``ConvInteger`` ran Lite0 10x slower than float.
- ``classifier_bits=4``: the classifier's weights at 4 bits (ONNX Runtime's ``MatMulNBits``, one
  scale per 32 inputs, bias-corrected), with the int8 modes; CPUs have no 4-bit convolution kernel.
- ``fp16``/``bf16``: weights *stored* at 16 bits and cast to float when the session loads them:
  half the file, the float model's speed and (to rounding) accuracy on CPU, whose ONNX Runtime
  kernels compute in float32.

Layers can be kept in float by ONNX node-name pattern (``keep_float``), or chosen automatically
(``auto_float=N``, mixed precision): each Conv/Gemm is quantized *alone*, its weights and its input
activation rounded as in the int8 file and the rest of the network float, and ranked by how far
that moves the network's output, the mean KL divergence of its softmax from the float model's on
calibration images (:func:`layer_sensitivity`; the sensitivity of ZeroQ, Cai et al., 2020,
https://arxiv.org/abs/2001.00281, on real images). The N layers that move it most then compute
in float, with their float weights and an unrounded input. The per-layer KLs add up to about the
fully quantized model's, where a layer's SQNR inside the quantized network mostly measures error
it inherits from upstream. Each quantized layer's output is also compared with the float model's
on calibration images (MSE and SQNR, worst first) for the report.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import math
import sys
import tempfile
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import nn

from effnet.compress.base import ModelStats, Pass, PassConfig, PassContext, register_pass
from effnet.errors import EffnetError
from effnet.export.onnx_module import OnnxModule

__all__ = [
    "Quantize",
    "QuantizeConfig",
    "QuantizedModel",
    "layer_errors",
    "layer_sensitivity",
    "quantize_model",
    "quantize_onnx",
]

Mode = Literal["static", "dynamic", "qat"]
DType = Literal["int8", "fp16", "bf16"]
Observer = Literal["minmax", "moving_average", "percentile", "entropy", "mse"]
OBSERVERS: tuple[str, ...] = get_args(Observer)
MIN_CALIBRATION_IMAGES = 16


@dataclass(frozen=True)
class QuantizeConfig(PassConfig):
    """How to quantize (recorded in the quantized file's metadata and the report)."""

    pass_name = "quantize"

    mode: Mode = "static"
    dtype: DType = "int8"
    observer: Observer = "minmax"
    percentile: float = 99.999  # of |activation| values, for the percentile observer
    per_channel: bool = True  # int8 weights: one scale per output channel
    reduce_range: bool = False  # int8 weights in 7 bits, [-64, 64] (ONNX Runtime's reduce_range)
    activations: Literal["uint8", "int8"] = "uint8"
    bias_correction: bool = True
    rounding: Literal["nearest", "adaround"] = "nearest"  # int8 weights: to nearest, or learned (AdaRound)
    adaround_iters: int = 300  # AdaRound: optimisation steps per layer
    classifier_bits: int = 8  # 4: the classifier's weights at 4 bits (ONNX Runtime MatMulNBits), int8 modes
    keep_float: tuple[str, ...] = ()  # ONNX node-name patterns left in float, e.g. "/stages/stages.0/*"
    float_stem: bool = True  # static int8: the convolution reading the image stays float (faster, measured)
    auto_float: int = 0  # static int8: also keep the N layers whose quantization moves the output most in float
    sensitivity_images: int = 32  # calibration images the output sensitivity is measured on (auto_float)
    calib_images: int = 256  # calibration images (static)
    error_images: int = 16  # images the per-layer error is measured on
    qat_epochs: int = 1  # qat: fake-quantized fine-tuning epochs before converting (effnet quantize)
    qat_lr: float = 1e-4  # qat: their learning rate

    @property
    def calibrated(self) -> bool:
        """Whether activations are calibrated: static int8, and the conversion of QAT."""
        return self.mode in ("static", "qat") and self.dtype == "int8"

    def __post_init__(self) -> None:
        if isinstance(self.keep_float, list | str):  # from YAML/JSON, or one pattern
            patterns = [self.keep_float] if isinstance(self.keep_float, str) else self.keep_float
            object.__setattr__(self, "keep_float", tuple(patterns))
        super().__post_init__()

    def validate(self) -> list[str]:
        problems = []
        if self.mode not in ("static", "dynamic", "qat"):
            problems.append(f"mode must be static, dynamic or qat, got {self.mode!r}")
        if self.dtype not in ("int8", "fp16", "bf16"):
            problems.append(f"dtype must be int8, fp16 or bf16, got {self.dtype!r}")
        if self.dtype != "int8" and self.mode == "dynamic":
            problems.append(f"{self.dtype} stores weights at 16 bits and has no dynamic mode; use --mode static")
        if self.dtype != "int8" and self.mode == "qat":
            problems.append(f"quantization-aware training trains for int8, not {self.dtype}; use --dtype int8")
        if self.mode == "qat" and self.activations != "uint8":
            problems.append("quantization-aware training simulates uint8 activations; drop --activations int8")
        if isinstance(self.qat_epochs, bool) or not isinstance(self.qat_epochs, int) or self.qat_epochs < 1:
            problems.append(f"qat_epochs must be a whole number of at least 1, got {self.qat_epochs!r}")
        if not (isinstance(self.qat_lr, int | float) and 0.0 < self.qat_lr < 1.0):
            problems.append(f"qat_lr must be a learning rate in (0, 1), got {self.qat_lr!r}")
        if self.reduce_range and self.dtype != "int8":
            problems.append(f"reduce_range narrows int8 weights to 7 bits; {self.dtype} has no int8 weights")
        elif self.reduce_range and self.mode == "qat":
            problems.append("quantization-aware training simulates 8-bit weights; drop --reduce-range for --mode qat")
        if self.rounding not in ("nearest", "adaround"):
            problems.append(f"rounding must be nearest or adaround, got {self.rounding!r}")
        elif self.rounding == "adaround" and not self.calibrated:
            problems.append(
                "adaround learns the rounding of calibrated int8 weights; use --mode static or qat with int8"
            )
        elif self.rounding == "adaround" and self.reduce_range:
            problems.append("adaround learns the rounding of 8-bit weights; drop --reduce-range")
        elif self.rounding == "adaround" and not self.per_channel:
            problems.append("adaround rounds per-channel int8 weights; drop --per-tensor")
        if isinstance(self.adaround_iters, bool) or not isinstance(self.adaround_iters, int) or self.adaround_iters < 1:
            problems.append(f"adaround_iters must be a whole number of at least 1, got {self.adaround_iters!r}")
        if self.classifier_bits not in (8, 4) or isinstance(self.classifier_bits, bool):
            problems.append(f"classifier_bits must be 8 or 4, got {self.classifier_bits!r}")
        elif self.classifier_bits == 4 and self.dtype != "int8":
            problems.append(f"classifier_bits 4 is a weight format of the int8 modes, not of {self.dtype}")
        if self.observer not in OBSERVERS:
            problems.append(f"observer must be one of {', '.join(OBSERVERS)}, got {self.observer!r}")
        if not 90.0 <= self.percentile < 100.0:
            problems.append(f"percentile must be in [90, 100), got {self.percentile}")
        if self.activations not in ("uint8", "int8"):
            problems.append(f"activations must be uint8 or int8, got {self.activations!r}")
        if self.calibrated and self.calib_images < MIN_CALIBRATION_IMAGES:
            problems.append(
                f"{self.mode} quantization needs at least {MIN_CALIBRATION_IMAGES} calibration images, "
                f"got {self.calib_images}"
            )
        if self.error_images < 1:
            problems.append(f"error_images must be at least 1, got {self.error_images}")
        if isinstance(self.auto_float, bool) or not isinstance(self.auto_float, int) or self.auto_float < 0:
            problems.append(f"auto_float must be a whole number of layers (0 or more), got {self.auto_float!r}")
        elif self.auto_float and not self.calibrated:
            problems.append("auto_float ranks layers of a calibrated int8 model; use --mode static or qat with int8")
        if isinstance(self.sensitivity_images, bool) or not isinstance(self.sensitivity_images, int):
            problems.append(f"sensitivity_images must be a whole number, got {self.sensitivity_images!r}")
        elif self.sensitivity_images < 1:
            problems.append(f"sensitivity_images must be at least 1, got {self.sensitivity_images}")
        return problems


@dataclass
class QuantizeResult:
    """The quantized file and what was measured while making it."""

    path: Path
    config: QuantizeConfig
    layers: list[dict[str, Any]] = field(default_factory=list)  # {"layer", "mse", "sqnr_db"}, worst first
    kept_float: list[str] = field(default_factory=list)
    calibration_images: int = 0
    bias_corrected: int = 0  # layers whose bias was corrected
    sensitivity: list[dict[str, Any]] = field(default_factory=list)  # {"layer", "kl"}, most sensitive first


def _ort_quantization() -> Any:
    try:
        from onnxruntime import quantization
    except ImportError:
        raise EffnetError("quantization needs onnxruntime; pip install onnxruntime") from None
    return quantization


def quantize_model(
    model: nn.Module,
    out: str | Path,
    config: QuantizeConfig | None = None,
    calibration: Iterable[Any] | None = None,
    img_size: int | None = None,
) -> QuantizeResult:
    """Export ``model`` to ONNX and quantize it to ``out`` (an ``.onnx`` file); ``model`` is untouched.

    ``calibration`` yields image batches (tensors, or ``(images, labels)`` pairs) prepared the
    way the model expects (its recorded preprocessing); static int8 needs at least 16 images.

    >>> import effnet, tempfile, torch
    >>> model = effnet.create_model("efficientnet_lite0", num_classes=3)
    >>> batches = [torch.randn(8, 3, 64, 64) for _ in range(2)]
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     result = quantize_model(model, folder + "/q.onnx", QuantizeConfig(calib_images=16), batches, 64)
    ...     result.layers[0]["sqnr_db"] > 0
    True
    """
    from effnet.export import export_model

    config = config or QuantizeConfig()
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise EffnetError(f"{out}: a quantized model is written as an .onnx file")
    images = _calibration_array(calibration, config) if calibration is not None else None
    if images is not None and len(images):
        _check_calibration(images, model, img_size)
    with tempfile.TemporaryDirectory(prefix="effnet-quantize-") as work:
        float_path = Path(work) / "float.onnx"
        export_model(model, "onnx", float_path, img_size=img_size)
        return quantize_onnx(float_path, out, config, images)


def _check_calibration(images: np.ndarray, model: nn.Module, img_size: int | None) -> None:
    """Refuse calibration images the model's recorded preprocessing cannot have produced: another
    size, 0-255 pixel values, or [0, 1] values never normalised (no value below zero anywhere,
    where normalisation maps every pixel darker than the mean below zero)."""
    pre = (getattr(model, "pretrained_meta", None) or {}).get("preprocessing")
    if not pre:
        return
    size = img_size or pre["input_size"]
    fix = "prepare them with the checkpoint's preprocessing (effnet.data.images.eval_transform)"
    if images.shape[1] != 3 or images.shape[2:] != (size, size):
        raise EffnetError(
            f"calibration images are {'x'.join(map(str, images.shape[1:]))}, the model is quantized for "
            f"3x{size}x{size}; {fix}"
        )
    mean = np.asarray(pre.get("mean", (0.0, 0.0, 0.0)), np.float64)
    std = np.asarray(pre.get("std", (1.0, 1.0, 1.0)), np.float64)
    low, high = (0.0 - mean) / std, (1.0 - mean) / std  # what a pixel in [0, 1] can become
    width = float((high - low).max())
    lowest, highest = float(images.min()), float(images.max())
    means, stds = (", ".join(f"{v:.3f}" for v in values) for values in (mean, std))
    if lowest < float(low.min()) - width or highest > float(high.max()) + width:
        raise EffnetError(
            f"calibration images range from {lowest:.3g} to {highest:.3g}, but the model's preprocessing "
            f"(mean {means}, std {stds}) gives values in [{low.min():.2f}, {high.max():.2f}]: are they 0-255 "
            f"pixels? {fix}"
        )
    if lowest >= 0.0 and float(low.max()) < -0.5:
        raise EffnetError(
            f"calibration images have no value below 0, but the model's preprocessing (mean {means}, std {stds}) "
            f"maps every pixel darker than the mean below 0: they look unnormalised; {fix}"
        )


def quantize_onnx(
    float_path: str | Path, out: str | Path, config: QuantizeConfig, images: np.ndarray | None = None
) -> QuantizeResult:
    """Quantize the float ONNX file ``float_path`` (an effnet export) to ``out``; see the module doc."""
    # ONNX Runtime's calibrators print progress on stdout, which belongs to --json output.
    with contextlib.redirect_stdout(sys.stderr):
        return _quantize_onnx(float_path, out, config, images)


def _quantize_onnx(
    float_path: str | Path, out: str | Path, config: QuantizeConfig, images: np.ndarray | None
) -> QuantizeResult:
    import onnx

    quant = _ort_quantization()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    metadata = _metadata(onnx.load(str(float_path)))
    if config.dtype in ("fp16", "bf16"):
        model = _store_weights_16bit(onnx.load(str(float_path)), config.dtype)
        _write(model, out, metadata, config)
        return QuantizeResult(out, config)
    with tempfile.TemporaryDirectory(prefix="effnet-quantize-") as work:
        pre = Path(work) / "pre.onnx"
        quant.quant_pre_process(str(float_path), str(pre), skip_symbolic_shape=True)
        graph = onnx.load(str(pre))
        excluded = _matching(graph, config.keep_float)
        if config.float_stem and config.calibrated:
            stems = set(_stems(graph))
            excluded = [n.name for n in graph.graph.node if n.name in stems or n.name in excluded]
        if config.mode == "dynamic" and config.classifier_bits == 4:  # weight-only: the classifier at 4 bits
            measured = config.bias_correction and images is not None and len(images) > 0
            means = _input_means(graph, _gemms(graph), images[:64]) if measured else None
            _write(_classifier_4bit(graph, graph, means, skip=excluded), out, metadata, config)
            errors = layer_errors(pre, out, images[: config.error_images]) if images is not None else []
            return QuantizeResult(out, config, errors, excluded)
        if config.mode == "dynamic":
            quant.quantize_dynamic(
                str(pre),
                str(out),
                weight_type=quant.QuantType.QInt8,
                per_channel=config.per_channel,
                reduce_range=config.reduce_range,
                nodes_to_exclude=excluded,
                op_types_to_quantize=["MatMul", "Gemm"],  # ConvInteger ran 10x slower than float
            )
            _write(onnx.load(str(out)), out, metadata, config)
            errors = layer_errors(pre, out, images[: config.error_images]) if images is not None else []
            return QuantizeResult(out, config, errors, excluded)
        if images is None or len(images) < MIN_CALIBRATION_IMAGES:
            have = 0 if images is None else len(images)
            raise EffnetError(
                f"static quantization needs at least {MIN_CALIBRATION_IMAGES} calibration images, got {have}; "
                "give more data or --mode dynamic"
            )
        candidates = [n.name for n in graph.graph.node if n.op_type in ("Conv", "Gemm") and n.name not in excluded]
        if config.auto_float > len(candidates):
            raise EffnetError(
                f"auto_float {config.auto_float} is more than the {len(candidates)} layers there are to quantize"
            )
        # Everything is quantized, then the layers kept in float are edited back (_with_float): left
        # to ONNX Runtime's nodes_to_exclude, a layer whose input stays rounded gets its float
        # weights rounded again, per tensor, by the runtime's graph optimizer when the file loads.
        settings = _static_settings(quant, config)
        corrected = 0
        source = pre
        original = graph  # the float weights every rounding error is measured from
        if config.rounding == "adaround":
            graph = _adaround(graph, images, set(candidates), config.adaround_iters)
            source = Path(work) / "adarounded.onnx"
            onnx.save(graph, str(source))
        if config.bias_correction:
            first = Path(work) / "first.onnx"
            ranged = _ranged(settings, config, source, images)
            quant.quantize_static(str(source), str(first), _Reader(graph, images), **ranged)
            fixed, corrected = _correct_biases(graph, onnx.load(str(first)), images[:64], original)
            source = Path(work) / "corrected.onnx"
            onnx.save(fixed, str(source))
        ranged = _ranged(settings, config, source, images)  # calibrated again on the corrected network
        quant.quantize_static(str(source), str(out), _Reader(graph, images), **ranged)
        quantized = onnx.load(str(out))
        # Layers kept in float get their original weights (not AdaRound's, which lie on the int8 grid).
        if excluded:
            kept_names = set(excluded)
            quantized = _with_float(quantized, original, kept_names, lambda node: node.name in kept_names)
        sensitivity: list[dict[str, Any]] = []
        kept = list(excluded)
        if config.auto_float:
            # Spread over the calibration set, which may come ordered by class or by source photo.
            spread = np.linspace(0, len(images) - 1, min(config.sensitivity_images, len(images))).round()
            sensitivity = _sensitivity(original, quantized, images[spread.astype(int)])
            chosen = {row["layer"] for row in sensitivity[: config.auto_float]}
            quantized = _with_float(quantized, original, chosen, lambda node: node.name in chosen)
            kept += [name for name in candidates if name in chosen]  # in graph order
        gemms = set(_gemms(graph)) - set(kept)  # a classifier kept in float stays float
        if config.classifier_bits == 4 and gemms:
            quantized = _with_float(quantized, original, gemms, lambda node: node.name in gemms)
            means = _input_means(original, sorted(gemms), images[:64]) if config.bias_correction else None
            quantized = _classifier_4bit(quantized, original, means, skip=kept)
        _write(quantized, out, metadata, config, kept)
        errors = layer_errors(source, out, images[: config.error_images])
        return QuantizeResult(out, config, errors, kept, len(images), corrected, sensitivity)


def _static_settings(quant: Any, config: QuantizeConfig) -> dict[str, Any]:
    methods = {
        "minmax": quant.CalibrationMethod.MinMax,
        "moving_average": quant.CalibrationMethod.MinMax,
        "percentile": quant.CalibrationMethod.Percentile,
        "entropy": quant.CalibrationMethod.Entropy,
        "mse": quant.CalibrationMethod.MinMax,  # ranges replaced by _mse_ranges (see _ranged)
    }
    extra: dict[str, Any] = {}
    if config.observer == "percentile":
        extra["CalibPercentile"] = config.percentile
    if config.observer == "moving_average":
        # _Reader gives one image per step: the range is the mean of the per-image extremes.
        extra["CalibMovingAverage"] = True
    return {
        "quant_format": quant.QuantFormat.QDQ,
        "activation_type": quant.QuantType.QUInt8 if config.activations == "uint8" else quant.QuantType.QInt8,
        "weight_type": quant.QuantType.QInt8,
        "per_channel": config.per_channel,
        "reduce_range": config.reduce_range,
        "calibrate_method": methods[config.observer],
        "extra_options": extra,
    }


def _ranged(settings: dict[str, Any], config: QuantizeConfig, source: Path, images: np.ndarray) -> dict[str, Any]:
    """``settings`` for calibrating ``source``: with the ``mse`` observer, every activation's
    range is given to the quantizer as an override (``TensorQuantOverrides``)."""
    if config.observer != "mse":
        return settings
    extra = {**settings["extra_options"], "TensorQuantOverrides": _mse_ranges(source, images)}
    return {**settings, "extra_options": extra}


def _mse_ranges(source: Path, images: np.ndarray) -> dict[str, list[dict[str, np.ndarray]]]:
    """The uint8 range of every activation that minimises the expected squared quantization error
    on the calibration images: clipping error outside the range plus ``step² / 12`` rounding
    error inside it, over a 2048-bin histogram collected by ONNX Runtime's own calibrator (the
    criterion of PyTorch's ``HistogramObserver``, searched on a grid of both ends)."""
    import onnx

    quant = _ort_quantization()
    with tempfile.TemporaryDirectory(prefix="effnet-mse-") as work:
        calibrator = quant.create_calibrator(
            Path(source),
            None,
            augmented_model_path=str(Path(work) / "augmented.onnx"),
            calibrate_method=quant.CalibrationMethod.Entropy,  # its collector: a histogram per activation
            extra_options={"num_bins": 2048},
        )
        calibrator.collect_data(_Reader(onnx.load(str(source)), images))
        histograms = calibrator.collector.histogram_dict
        del calibrator
    return {name: [_mse_range(hist, edges)] for name, (hist, edges, *_) in histograms.items()}


def _mse_range(hist: np.ndarray, edges: np.ndarray, levels: int = 255) -> dict[str, np.ndarray]:
    counts = hist.astype(np.float64)
    centres = ((edges[:-1] + edges[1:]) / 2).astype(np.float64)
    used = counts > 0
    if not used.any():
        return {"rmin": np.array(0.0, np.float32), "rmax": np.array(0.0, np.float32)}
    counts, centres = counts[used], centres[used]
    low, high = min(0.0, float(centres.min())), max(0.0, float(centres.max()))
    his = high * np.linspace(0.05, 1.0, 64) if high > 0 else np.zeros(1)
    los = low * np.linspace(0.05, 1.0, 16) if low < 0 else np.zeros(1)
    lo, hi = los[None, :, None], his[:, None, None]
    step = (hi - lo) / levels
    error = np.where(centres > hi, (centres - hi) ** 2, np.where(centres < lo, (lo - centres) ** 2, step**2 / 12))
    mse = (error * counts).sum(-1)
    best_hi, best_lo = np.unravel_index(np.argmin(mse), mse.shape)
    return {"rmin": np.array(los[best_lo], np.float32), "rmax": np.array(his[best_hi], np.float32)}  # as ORT takes them


class _Reader:
    """ONNX Runtime's calibration-data protocol over an array of images, one image per call."""

    def __init__(self, graph: Any, images: np.ndarray) -> None:
        self.name = graph.graph.input[0].name
        self.items = iter(images)

    def get_next(self) -> dict[str, np.ndarray] | None:
        image = next(self.items, None)
        return None if image is None else {self.name: image[None]}


def _calibration_array(batches: Iterable[Any], config: QuantizeConfig) -> np.ndarray:
    images: list[np.ndarray] = []
    count = 0
    for batch in batches:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise EffnetError("calibration data must yield image batches (N, C, H, W) or (images, labels) pairs")
        images.append(x.detach().float().cpu().numpy())
        count += len(x)
        if count >= config.calib_images:
            break
    if not images:
        return np.zeros((0, 3, 1, 1), np.float32)
    return np.concatenate(images)[: config.calib_images]


def _stems(graph: Any) -> list[str]:
    """The convolutions that read the image (a graph input) directly.

    ONNX Runtime's int8 kernels gain nothing on their three input channels, and quantizing the
    image costs a pass over it; kept in float, Lite0's int8 file ran 9-15% faster at 224 px.
    """
    inputs = {i.name for i in graph.graph.input}
    return [n.name for n in graph.graph.node if n.op_type == "Conv" and n.input[0] in inputs]


def _matching(graph: Any, patterns: Sequence[str]) -> list[str]:
    if not patterns:
        return []
    names = [n.name for n in graph.graph.node]
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in names)]
    if unmatched:
        example = next((n for n in names if "Conv" in n), names[0] if names else "")
        raise EffnetError(f"--keep-float {unmatched[0]!r} matches no layer of the model; names look like {example!r}")
    return chosen


def _metadata(model: Any) -> dict[str, Any]:
    from effnet.export.formats import METADATA_KEY

    for entry in model.metadata_props:
        if entry.key == METADATA_KEY:
            return json.loads(entry.value)
    return {}


def _write(
    model: Any, out: Path, metadata: dict[str, Any], config: QuantizeConfig, kept_float: Sequence[str] = ()
) -> None:
    """Save ``model`` with effnet's metadata (the quantizer drops it) plus the quantization settings
    and the layers left in float."""
    import onnx

    from effnet.export.formats import METADATA_KEY

    settings = config.to_dict()
    if config.calibrated:
        settings["kept_float"] = list(kept_float)
    meta = {**metadata, "quantization": settings}
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    onnx.save(model, str(out))


def _store_weights_16bit(model: Any, dtype: str) -> Any:
    """Every float32 weight stored as fp16/bf16 and cast back to float32 where it is used."""
    import onnx
    from onnx import helper, numpy_helper

    target = onnx.TensorProto.FLOAT16 if dtype == "fp16" else onnx.TensorProto.BFLOAT16
    graph = model.graph
    casts = []
    for init in list(graph.initializer):
        if init.data_type != onnx.TensorProto.FLOAT or math.prod(init.dims) < 16:
            continue  # small tensors (shapes, scalars) stay as they are
        values = numpy_helper.to_array(init)
        stored = f"{init.name}__{dtype}"
        if dtype == "fp16":
            tensor = numpy_helper.from_array(values.astype(np.float16), stored)
        else:  # bfloat16: the top 16 bits of float32, rounded to nearest even
            bits = values.astype(np.float32).view(np.uint32)
            rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
            tensor = helper.make_tensor(stored, target, values.shape, rounded.tobytes(), raw=True)
        graph.initializer.remove(init)
        graph.initializer.append(tensor)
        casts.append(helper.make_node("Cast", [stored], [init.name], to=onnx.TensorProto.FLOAT, name=f"{stored}_cast"))
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    return model


def _session_with_outputs(model: Any, tensors: Sequence[str], optimize: bool = True) -> Any:
    """An ONNX Runtime session over a copy of ``model`` whose outputs include ``tensors``.

    Graph optimisations off (``optimize=False``) keep every node, so inner tensors keep their values.
    """
    import onnx
    import onnxruntime as ort

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output}
    for tensor in dict.fromkeys(tensors):
        if tensor not in present:
            copy.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(copy.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _node_outputs(model: Any, names: Sequence[str], images: np.ndarray, optimize: bool) -> dict[str, np.ndarray]:
    """The first output of each named node on ``images`` (graph optimisations off keeps the nodes)."""
    by_name = {n.name: n.output[0] for n in model.graph.node}
    wanted = [by_name[n] for n in names]
    session = _session_with_outputs(model, wanted, optimize)
    feed = model.graph.input[0].name
    chunks: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for start in range(0, len(images), 8):
        values = session.run(wanted, {feed: images[start : start + 8]})
        for name, value in zip(names, values, strict=True):
            chunks[name].append(value)
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


def _input_means(model: Any, names: Sequence[str], images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel mean of each named node's first input on ``images``."""
    feed = model.graph.input[0].name
    inputs = {n.name: n.input[0] for n in model.graph.node}
    tensors = list(dict.fromkeys(inputs[n] for n in names if inputs[n] != feed))
    session = _session_with_outputs(model, tensors)
    sums: dict[str, np.ndarray] = {}
    for start in range(0, len(images), 8):
        batch = images[start : start + 8]
        values = dict(zip(tensors, session.run(tensors, {feed: batch}), strict=True)) if tensors else {}
        values[feed] = batch
        for tensor in [*tensors, feed]:
            v = values[tensor]
            total = v.sum(axis=(0, 2, 3)) if v.ndim == 4 else v.sum(axis=0)
            per = len(batch) * (v.shape[2] * v.shape[3] if v.ndim == 4 else 1)
            sums[tensor] = sums.get(tensor, 0) + total / per * len(batch)
    return {n: sums[inputs[n]] / len(images) for n in names}


def _correct_biases(
    float_model: Any, quantized: Any, images: np.ndarray, original: Any | None = None
) -> tuple[Any, int]:
    """``float_model`` with each quantized layer's bias reduced by ``(W_q - W)·E[x]``.

    ``W`` is the weight in ``original`` (default ``float_model``): after AdaRound, ``float_model``
    holds the learned rounding and ``original`` the float weights it rounds.
    """
    import onnx
    from onnx import numpy_helper

    fixed = onnx.ModelProto()
    fixed.CopyFrom(float_model)
    initializers = {i.name: i for i in fixed.graph.initializer}
    reference = {i.name: i for i in (original or fixed).graph.initializer}
    rounded = _dequantized_weights(quantized)
    layers = [
        n
        for n in fixed.graph.node
        if n.op_type in ("Conv", "Gemm") and n.name in rounded and len(n.input) > 2 and n.input[2] in initializers
    ]
    if not layers:
        return fixed, 0
    means = _input_means(fixed, [n.name for n in layers], images)
    for node in layers:
        weight = numpy_helper.to_array(reference[node.input[1]]).astype(np.float64)
        delta = rounded[node.name] - weight
        mean = means[node.name].astype(np.float64)
        if node.op_type == "Conv":
            groups = next((a.i for a in node.attribute if a.name == "group"), 1)
            per_input = delta.sum(axis=tuple(range(2, delta.ndim)))  # (out, in / groups)
            outs, ins = per_input.shape
            shift = (per_input.reshape(groups, outs // groups, ins) * mean.reshape(groups, 1, ins)).sum(-1)
            shift = shift.reshape(-1)
        else:
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            shift = delta @ mean if trans_b else mean @ delta
        bias = initializers[node.input[2]]
        value = numpy_helper.to_array(bias).astype(np.float64) - shift
        bias.CopyFrom(numpy_helper.from_array(value.astype(np.float32), bias.name))
    return fixed, len(layers)


def _adaround(model: Any, images: np.ndarray, layers: set[str], iters: int, seed: int = 0) -> Any:
    """A copy of ``model`` whose Conv/Gemm weights in ``layers`` lie on the int8 grid, rounded by AdaRound.

    AdaRound (Nagel et al., 2020, "Up or Down? Adaptive Rounding for Post-Training Quantization",
    https://arxiv.org/abs/2004.10568) learns, per weight, whether to round down or up so that the
    layer's output on calibration inputs stays close to the float output, instead of rounding each
    weight to its nearest grid point: a soft rounding ``h(V)`` in [0, 1] (rectified sigmoid) is
    optimised with Adam on the output MSE plus a regulariser that pushes ``h`` to 0 or 1, its
    exponent annealed from 20 to 2. Each layer sees the float network's input (the paper's basic
    form), on up to 32 calibration images. The grid is the one ONNX Runtime's quantizer uses,
    symmetric per output channel with scale ``max|w| / 127``; the largest weight sits on the grid
    already, so the quantizer recomputes the same scales and keeps the learned rounding exactly.
    """
    import onnx
    from onnx import numpy_helper

    torch.manual_seed(seed)
    rounded = onnx.ModelProto()
    rounded.CopyFrom(model)
    initializers = {i.name: i for i in rounded.graph.initializer}
    nodes = [n for n in rounded.graph.node if n.name in layers and len(n.input) > 1 and n.input[1] in initializers]
    sample = images[np.linspace(0, len(images) - 1, min(32, len(images))).round().astype(int)]
    feed = rounded.graph.input[0].name
    for start in range(0, len(nodes), 8):  # a few layers' inputs at a time bounds the memory
        group = nodes[start : start + 8]
        inputs = _tensor_values(model, [n.input[0] for n in group], sample, feed)
        for node in group:
            weight = numpy_helper.to_array(initializers[node.input[1]])
            learned = _adaround_layer(
                node, torch.from_numpy(weight.copy()), torch.from_numpy(inputs[node.input[0]]), iters
            )
            initializers[node.input[1]].CopyFrom(numpy_helper.from_array(learned.numpy(), node.input[1]))
    return rounded


def _tensor_values(model: Any, tensors: Sequence[str], images: np.ndarray, feed: str) -> dict[str, np.ndarray]:
    """The values of the named tensors of ``model`` (the graph input among them) on ``images``."""
    inner = [t for t in dict.fromkeys(tensors) if t != feed]
    session = _session_with_outputs(model, inner)
    chunks: dict[str, list[np.ndarray]] = {t: [] for t in inner}
    for start in range(0, len(images), 8):
        for tensor, value in zip(inner, session.run(inner, {feed: images[start : start + 8]}), strict=True):
            chunks[tensor].append(value)
    values = {t: np.concatenate(parts) for t, parts in chunks.items()}
    values[feed] = images
    return values


def _adaround_layer(node: Any, weight: torch.Tensor, x: torch.Tensor, iters: int) -> torch.Tensor:
    """One layer's weight rounded by AdaRound (see :func:`_adaround`), as float values on its int8 grid."""
    import torch.nn.functional as F

    zeta, gamma, lam = 1.1, -0.1, 0.01
    attrs = {a.name: a for a in node.attribute}
    if node.op_type == "Conv":
        pads = list(attrs["pads"].ints) if "pads" in attrs else [0] * (2 * (weight.dim() - 2))
        x = F.pad(x, [pads[1], pads[3], pads[0], pads[2]])  # ONNX: begins then ends; F.pad: last dim first
        strides = list(attrs["strides"].ints) if "strides" in attrs else 1
        dilations = list(attrs["dilations"].ints) if "dilations" in attrs else 1
        groups = attrs["group"].i if "group" in attrs else 1

        def layer(w: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
            return F.conv2d(inputs, w, None, strides, 0, dilations, groups)

        axis_shape = (-1,) + (1,) * (weight.dim() - 1)
        absmax = weight.abs().amax(dim=tuple(range(1, weight.dim())))
    else:  # Gemm: y = x @ W^T when transB, else x @ W; one scale per output column
        trans_b = attrs["transB"].i if "transB" in attrs else 0

        def layer(w: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
            return inputs @ (w.t() if trans_b else w)

        axis_shape = (-1, 1) if trans_b else (1, -1)
        absmax = weight.abs().amax(dim=1 if trans_b else 0)
    scale = (absmax / 127.0).clamp_min(1e-12).reshape(axis_shape)
    floor = torch.floor(weight / scale)
    rest = (weight / scale - floor).clamp(1e-4, 1 - 1e-4)
    v = (-torch.log((zeta - gamma) / (rest - gamma) - 1)).requires_grad_()  # h(v) == rest at the start

    def soft(v: torch.Tensor) -> torch.Tensor:
        return (torch.sigmoid(v) * (zeta - gamma) + gamma).clamp(0, 1)

    with torch.no_grad():
        target = layer(weight, x)
    optimizer = torch.optim.Adam([v], lr=1e-2)
    batch = min(8, len(x))
    for step in range(iters):
        picked = torch.randint(0, len(x), (batch,))
        w = scale * (floor + soft(v)).clamp(-127, 127)
        loss = (layer(w, x[picked]) - target[picked]).pow(2).mean()
        beta = 20 - (20 - 2) * step / max(iters - 1, 1)
        h = soft(v)
        loss = loss + lam * (1 - (2 * h - 1).abs().pow(beta)).sum() / v.numel()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        steps = (floor + (soft(v) >= 0.5).float()).clamp(-127, 127)
        # Each channel's largest weight stays at +-127 exactly, so the quantizer finds the same scale.
        top = (weight / scale).abs() >= 127 - 1e-3
        steps = torch.where(top, torch.sign(weight) * 127, steps)
        return (scale * steps).float()


def _dequantized_weights(model: Any) -> dict[str, np.ndarray]:
    """Each Conv/Gemm node's weight as the quantized model computes with it (int8 times scale)."""
    from onnx import numpy_helper

    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    weights = {}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 2:
            continue
        dq = producer.get(node.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in values:
            continue
        q = values[dq.input[0]].astype(np.float64)
        scale = values[dq.input[1]].astype(np.float64)
        zero = values[dq.input[2]].astype(np.float64) if len(dq.input) > 2 and dq.input[2] in values else 0.0
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        shape = [1] * q.ndim
        if np.ndim(scale):
            shape[axis] = -1
        weights[node.name] = (q - np.reshape(zero, shape if np.ndim(zero) else [])) * np.reshape(
            scale, shape if np.ndim(scale) else []
        )
    return weights


def layer_errors(float_path: str | Path, quantized_path: str | Path, images: np.ndarray) -> list[dict[str, Any]]:
    """MSE and SQNR (dB) of every Conv/Gemm output of the quantized model against the float one, worst first.

    Both run the same images with graph optimisations off, so each node's output is the one
    the graph names; a quantized layer's output is computed from its dequantized inputs.
    """
    import onnx

    float_model, quantized = onnx.load(str(float_path)), onnx.load(str(quantized_path))
    quantized_names = {n.name for n in quantized.graph.node}
    names = [n.name for n in float_model.graph.node if n.op_type in ("Conv", "Gemm") and n.name in quantized_names]
    if not names or len(images) == 0:
        return []
    reference = _node_outputs(float_model, names, images, optimize=False)
    measured = _node_outputs(quantized, names, images, optimize=False)
    rows = []
    for name in names:
        signal = reference[name].astype(np.float64)
        noise = measured[name].astype(np.float64) - signal
        mse = float(np.mean(noise**2))
        power = float(np.mean(signal**2))
        sqnr = 10.0 * math.log10(power / mse) if mse > 0 and power > 0 else None
        rows.append({"layer": name, "mse": mse, "sqnr_db": sqnr})
    return sorted(rows, key=lambda r: math.inf if r["sqnr_db"] is None else r["sqnr_db"])


def layer_sensitivity(float_path: str | Path, quantized_path: str | Path, images: np.ndarray) -> list[dict[str, Any]]:
    """How far quantizing each Conv/Gemm *alone* moves the network's output, most sensitive first.

    ``quantized_path`` is a static QDQ file of the float graph ``float_path`` (node names shared,
    as :func:`quantize_onnx` writes them). For each of its quantized layers, a copy computes in
    float except that layer's weights and input activation, rounded as the file rounds them; the
    row's ``kl`` is the mean KL divergence of that copy's softmax from the float model's on
    ``images``. Rows add up to about the fully quantized model's divergence.

    Example::

        quantize_onnx("float.onnx", "int8.onnx", QuantizeConfig(), images)
        for row in layer_sensitivity("float.onnx", "int8.onnx", images[:32])[:3]:
            print(row["layer"], row["kl"])
    """
    import onnx

    return _sensitivity(onnx.load(str(float_path)), onnx.load(str(quantized_path)), images)


def _sensitivity(float_model: Any, quantized: Any, images: np.ndarray) -> list[dict[str, Any]]:
    layers = _quantized_layers(quantized)
    names = {n.name for n in float_model.graph.node}
    stranger = next((name for name in layers if name not in names), None)
    if stranger is not None:
        raise EffnetError(f"the quantized file's layer {stranger!r} is not in the float model; quantize that model")
    reference = _log_softmax(_run(float_model, images))
    rows = []
    for name in layers:
        others = [layer for layer in layers if layer != name]
        alone = _with_float(quantized, float_model, others, lambda node, name=name: node.name != name, outputs=True)
        log_q = _log_softmax(_run(alone, images))
        kl = float(np.mean(np.sum(np.exp(reference) * (reference - log_q), axis=1)))
        rows.append({"layer": name, "kl": max(kl, 0.0)})
    return sorted(rows, key=lambda row: -row["kl"])


def _quantized_layers(model: Any) -> list[str]:
    """The Conv/Gemm nodes of a QDQ model whose weights are int8 (a DequantizeLinear feeds them)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    return [
        n.name
        for n in model.graph.node
        if n.op_type in ("Conv", "Gemm") and len(n.input) > 1 and _is_dequantized(producer.get(n.input[1]))
    ]


CLASSIFIER_BLOCK = 32  # 4-bit classifier: input features per scale


def _gemms(graph: Any) -> list[str]:
    return [n.name for n in graph.graph.node if n.op_type == "Gemm"]


def _classifier_4bit(
    model: Any, float_model: Any, means: dict[str, np.ndarray] | None, skip: Collection[str] = ()
) -> Any:
    """A copy of ``model`` whose float ``Gemm`` layers (the classifier; not those in ``skip``) hold
    4-bit weights.

    Each becomes ONNX Runtime's ``MatMulNBits`` (symmetric, one scale per ``CLASSIFIER_BLOCK``
    inputs of each output; the CPU kernels unpack the weights, activations stay float) followed by
    an ``Add`` of the bias that keeps the ``Gemm``'s name and output. With ``means`` (each layer's
    mean input) the bias also absorbs the mean error of the rounding, as for int8 (Nagel et al.,
    2019, §4.2). Weights and bias come from ``float_model``.
    """
    import onnx
    from onnx import helper, numpy_helper
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    values = {i.name: i for i in float_model.graph.initializer}
    float_gemms = {n.name: n for n in float_model.graph.node if n.op_type == "Gemm" and n.input[1] in values}
    matmuls: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}  # MatMul output -> (Add name, B, bias)
    nodes = []
    for node in graph.node:
        source = float_gemms.get(node.name)
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type != "Gemm" or source is None or node.name in skip or attrs.get("transA", 0):
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(values[source.input[1]]).astype(np.float32)
        weight = weight.T if attrs.get("transB", 0) else weight  # (in, out), as MatMul takes it
        weight = weight * attrs.get("alpha", 1.0)
        bias = np.zeros(weight.shape[1], np.float32)
        if len(source.input) > 2 and source.input[2] in values:
            bias = numpy_helper.to_array(values[source.input[2]]).astype(np.float32) * attrs.get("beta", 1.0)
        matmul = f"{node.name}/MatMul"
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), f"{node.name}_weight_kn"))
        graph.initializer.append(numpy_helper.from_array(bias, f"{node.name}_bias"))
        nodes.append(helper.make_node("MatMul", [node.input[0], f"{node.name}_weight_kn"], [matmul], name=matmul))
        nodes.append(helper.make_node("Add", [matmul, f"{node.name}_bias"], list(node.output), name=node.name))
        matmuls[matmul] = (node.name, weight, bias)
    del graph.node[:]
    graph.node.extend(nodes)
    quantizer = MatMulNBitsQuantizer(
        out, bits=4, block_size=CLASSIFIER_BLOCK, is_symmetric=True, nodes_to_include=list(matmuls)
    )
    quantizer.process()
    out = quantizer.model.model
    _drop_unused_initializers(out)
    if means:
        constants = {i.name: i for i in out.graph.initializer}
        for node in out.graph.node:
            if node.op_type == "MatMulNBits" and node.output[0] in matmuls:  # the quantizer renames nodes
                add, weight, bias = matmuls[node.output[0]]
                rounded = _matmul_nbits_weight(node, constants, weight.shape[0])
                corrected = bias - means[add].astype(np.float64) @ (rounded - weight)
                constants[f"{add}_bias"].CopyFrom(numpy_helper.from_array(corrected.astype(np.float32), f"{add}_bias"))
    return out


def _matmul_nbits_weight(node: Any, constants: dict[str, Any], rows: int) -> np.ndarray:
    """The (in, out) weight a ``MatMulNBits`` node computes with, read back through ONNX Runtime
    (an identity matrix times it), so no packing format is re-implemented here."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    inputs = [name for name in node.input if name]
    single = helper.make_node(node.op_type, ["x", *inputs[1:]], ["y"], domain=node.domain)
    single.attribute.extend(node.attribute)
    graph = helper.make_graph(
        [single],
        "weight",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [constants[name] for name in inputs[1:]],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=8)  # what opset 17 needs, any runtime reads
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": np.eye(rows, dtype=np.float32)})[0].astype(np.float64)


def _drop_unused_initializers(model: Any) -> None:
    used = {name for node in model.graph.node for name in node.input}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def _with_float(
    quantized: Any,
    float_model: Any,
    weights: Collection[str],
    unrounded: Callable[[Any], bool],
    outputs: bool = False,
) -> Any:
    """A copy of the QDQ model ``quantized`` that computes partly in float.

    The layers named in ``weights`` take their weight and bias from ``float_model`` (the graph
    before bias correction: nothing of theirs is rounded any more). Every node for which
    ``unrounded(node)`` is true reads its activations without the 8-bit rounding, clipped to the
    range the quantizer calibrated instead (which also keeps a ReLU6 the quantizer merged into
    that rounding); ``outputs`` does the same for the graph's outputs. Rounding nodes left
    without a consumer are removed.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(quantized)
    graph = model.graph
    constants = {i.name: i for i in graph.initializer}
    float_nodes = {n.name: n for n in float_model.graph.node}
    float_values = {i.name: i for i in float_model.graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    added: list[Any] = []
    clips: dict[str, Any] = {}  # unrounded tensor name -> the Clip that makes it

    def rounded_from(tensor: str) -> Any:
        """The QuantizeLinear of an activation that reaches ``tensor`` through a DequantizeLinear."""
        dq = producer.get(tensor)
        if dq is None or dq.op_type != "DequantizeLinear":
            return None
        q = producer.get(dq.input[0])
        return q if q is not None and q.op_type == "QuantizeLinear" else None

    def clip(q: Any, name: str | None = None) -> str:
        name = name or f"{q.input[0]}_unrounded"
        if name not in clips:
            scale = float(numpy_helper.to_array(constants[q.input[1]]))
            zero = numpy_helper.to_array(constants[q.input[2]]) if len(q.input) > 2 else np.uint8(0)
            grid = np.iinfo(zero.dtype)
            low, high = (grid.min - int(zero)) * scale, (grid.max - int(zero)) * scale
            added.extend(
                [
                    numpy_helper.from_array(np.array(low, np.float32), f"{name}_low"),
                    numpy_helper.from_array(np.array(high, np.float32), f"{name}_high"),
                ]
            )
            clips[name] = helper.make_node("Clip", [q.input[0], f"{name}_low", f"{name}_high"], [name], name=name)
        return name

    nodes, placed = [], set()
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            nodes.append(node)
            continue
        for index, tensor in enumerate(node.input):
            q = rounded_from(tensor)
            if q is not None and unrounded(node):
                node.input[index] = clip(q)
                if node.input[index] not in placed:  # just before its first consumer
                    nodes.append(clips[node.input[index]])
                    placed.add(node.input[index])
            elif node.name in weights and index in (1, 2) and _is_dequantized(producer.get(tensor)):
                source = float_nodes[node.name].input[index]
                node.input[index] = f"{source}_float"
                if node.input[index] not in constants:
                    value = numpy_helper.from_array(numpy_helper.to_array(float_values[source]), node.input[index])
                    constants[node.input[index]] = value
                    added.append(value)
        nodes.append(node)
    for out in graph.output if outputs else ():
        q = rounded_from(out.name)
        if q is not None:  # the Clip takes the place of the DequantizeLinear that made the output
            nodes = [clips[clip(q, out.name)] if n is producer[out.name] else n for n in nodes]
    graph.initializer.extend(added)
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_unused_rounding(model)
    return model


def _is_dequantized(node: Any) -> bool:
    return node is not None and node.op_type == "DequantizeLinear"


def _drop_unused_rounding(model: Any) -> None:
    """Remove QuantizeLinear/DequantizeLinear nodes nothing reads any more, then unused initializers."""
    graph = model.graph
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        unused = [
            n
            for n in graph.node
            if n.op_type in ("QuantizeLinear", "DequantizeLinear") and not any(o in used for o in n.output)
        ]
        if not unused:
            break
        for node in unused:
            graph.node.remove(node)
    used = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)


def _run(model: Any, images: np.ndarray) -> np.ndarray:
    """The first output of ``model`` on ``images``, in ONNX Runtime."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = model.graph.input[0].name
    return np.concatenate([session.run(None, {feed: images[i : i + 8]})[0] for i in range(0, len(images), 8)])


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


class QuantizedModel(OnnxModule):
    """A quantized ONNX file run by ONNX Runtime, as the ``quantize`` pass returns it.

    ``model(images)`` gives logits; :meth:`save` writes the file (an ``.onnx`` model with its
    preprocessing, classes and quantization settings), which ``effnet predict``/``eval``/``bench``
    and :class:`~effnet.export.onnx_module.OnnxModule` run.
    """

    def save(self, path: str | Path) -> Path:
        import shutil

        target = Path(path)
        if target.suffix.lower() != ".onnx":
            raise EffnetError(f"{target}: a quantized model is saved as an .onnx file")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.path, target)
        return target

    def compression_stats(self) -> ModelStats:
        """Weights counted from the file's initializers (float, int8 or 4-bit alike); size is the file's."""
        import onnx

        from effnet.export.formats import onnx_weight_count

        params, nonzero = onnx_weight_count(onnx.load(str(self.path)))
        return ModelStats(params=params, nonzero_params=nonzero, size_bytes=self.path.stat().st_size)


@register_pass
class Quantize(Pass):
    """``apply_pass(model, QuantizeConfig(...), PassContext(data=calibration_batches))``.

    ``mode="qat"`` converts as ``static``: the network is expected to have been fine-tuned with
    :class:`~effnet.compress.qat.FakeQuantCallback` already (``effnet quantize --mode qat`` does both).
    """

    name = "quantize"
    config_type = QuantizeConfig
    description = "int8 (or 16-bit) ONNX Runtime model: calibration, bias correction, per-layer error"

    def unsupported(self, model: nn.Module) -> str | None:
        if isinstance(model, OnnxModule):
            return "it is already an ONNX model; quantize the network it was exported from"
        if "preprocessing" not in (getattr(model, "pretrained_meta", None) or {}):
            return "it records no preprocessing, which the quantized file must carry; load it with create_model"
        return None

    def run(self, model: nn.Module, config: PassConfig, context: PassContext) -> tuple[nn.Module, dict[str, Any]]:
        import shutil
        import weakref

        assert isinstance(config, QuantizeConfig)
        folder = tempfile.mkdtemp(prefix="effnet-quantized-")
        try:
            result = quantize_model(model, Path(folder) / "model.onnx", config, context.data, context.img_size)
            quantized = QuantizedModel(result.path)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        weakref.finalize(quantized, shutil.rmtree, folder, True)
        details = {
            "calibration_images": result.calibration_images,
            "bias_corrected": result.bias_corrected,
            "kept_float": result.kept_float,
            "size_bytes": result.path.stat().st_size,
            "layers": result.layers,
            "sensitivity": result.sensitivity,
        }
        return quantized, details
