"""``effnet quantize``: quantize a trained classifier and measure it against its float export.

The checkpoint is exported to ONNX and quantized (:mod:`effnet.compress.quantize`) with
calibration images drawn from the training split of ``data``; then the float export and the
quantized file are measured in one run: size on disk, top-1 on the validation split, and batch-1
latency in ONNX Runtime, the two timed interleaved. ``OUT/model.onnx`` is the quantized model
(it records its preprocessing, classes and quantization settings, so ``effnet predict``,
``eval`` and ``bench`` run it), ``OUT/report.json`` the numbers and the per-layer error
(schema ``effnet.compression``, which ``effnet report`` draws) and ``OUT/bench.json`` the timing.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from effnet.compress.quantize import QuantizeConfig, quantize_model
from effnet.errors import EffnetError
from effnet.schemas import CompressionPass, CompressionReport, QuantError

__all__ = ["QuantizeJob", "run_quantize"]


@dataclass
class QuantizeJob:
    """Everything that decides a quantization job (the recipe of ``effnet quantize``)."""

    weights: str = ""
    data: str = ""
    out: str = ""
    config: QuantizeConfig = QuantizeConfig()
    runtime: str = "auto"
    data_dir: str | None = None
    val_split: float = 0.1
    subset: int | None = None  # evaluate on at most this share, as effnet train's --subset
    batch_size: int = 64
    img_size: int | None = None
    workers: int = 2
    seed: int = 0
    threads: int | None = None
    repeats: int = 50


def _log(message: str) -> None:
    print(f"effnet: {message}", file=sys.stderr, flush=True)


def run_quantize(job: QuantizeJob) -> CompressionReport:
    """Run a quantization job; returns (and writes) its report. The input checkpoint is never modified."""
    import torch
    from torch.utils.data import DataLoader

    from effnet.factory import load_model
    from effnet.sizes import input_size_problem, resolve_input_size

    problems = job.config.validate()
    if job.runtime not in ("auto", "onnxruntime"):
        problems.append(
            f"runtime {job.runtime!r} is not available: effnet quantizes for ONNX Runtime (PyTorch's int8 path "
            "measured 1.95x slower than float on this kind of CPU, docs/quantization.md); use --runtime onnxruntime"
        )
    if job.img_size is not None and input_size_problem(job.img_size, "img_size"):
        problems.append(str(input_size_problem(job.img_size, "img_size")))
    if problems:
        raise EffnetError("invalid quantization job: " + "; ".join(problems))
    out = Path(job.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EffnetError(f"{out} is not empty; choose another --out (nothing was written)")
    if str(job.weights).lower().endswith(".onnx"):
        raise EffnetError(f"{job.weights} is already an ONNX file; quantize the checkpoint it was exported from")
    model = load_model(None, job.weights).eval()
    if not hasattr(model, "classifier_name"):
        raise EffnetError(f"{job.weights} is not a classifier effnet can quantize")
    size = resolve_input_size(model, job.img_size)
    splits = _data(model, job)
    generator = torch.Generator().manual_seed(job.seed)
    calibration_source = splits.train if splits.train is not None and len(splits.train) else splits.val
    calibration = DataLoader(calibration_source, batch_size=32, shuffle=True, generator=generator, num_workers=0)
    validation = DataLoader(splits.val, batch_size=job.batch_size, num_workers=job.workers)
    if job.config.mode == "static" and job.config.dtype == "int8" and len(calibration_source) < 16:
        raise EffnetError(
            f"{job.data} has {len(calibration_source)} images to calibrate on; static quantization needs at "
            "least 16 (or use --mode dynamic)"
        )

    out.mkdir(parents=True, exist_ok=True)
    try:
        return _run(model, job, size, splits, calibration, validation, out)
    except BaseException:
        if out.exists() and not any(p.name != "_float" for p in out.iterdir()):
            shutil.rmtree(out, ignore_errors=True)  # a failed job leaves no half-written folder
        raise
    finally:
        shutil.rmtree(out / "_float", ignore_errors=True)


def _run(
    model: nn.Module, job: QuantizeJob, size: int, splits: Any, calibration: Any, validation: Any, out: Path
) -> CompressionReport:
    from effnet.bench import benchmark
    from effnet.export import export_model
    from effnet.export.onnx_module import OnnxModule
    from effnet.models.summary import count_flops
    from effnet.training.evaluate import evaluate
    from effnet.training.state import write_json

    float_path = out / "_float" / "float.onnx"
    export_model(model, "onnx", float_path, img_size=size)
    what = f"{job.config.mode} {job.config.dtype}"
    _log(f"quantizing ({what}, {job.config.observer} observer) with up to {job.config.calib_images} images ...")
    result = quantize_model(model, out / "model.onnx", job.config, calibration, size)
    _log(f"measuring top-1 of the float export and the quantized model on {splits.source} ...")
    classes = list(splits.classes)
    top1 = {
        label: float(evaluate(OnnxModule(path, threads=job.threads), validation, classes, _cpu()).top1)
        for label, path in (("float", float_path), ("quantized", result.path))
    }
    _log(f"timing both in ONNX Runtime at {size} px, batch 1, interleaved ...")
    bench = benchmark(
        [str(float_path), str(result.path)],
        runtimes=("onnxruntime",),
        img_size=size,
        threads=job.threads,
        repeats=job.repeats,
        measure_memory=False,
    )
    write_json(out / "bench.json", bench.to_dict())
    latency = {r.model: r.latency_ms_median for r in bench.results}
    flops = count_flops(model, size)
    params = sum(p.numel() for p in model.parameters())
    rows = [
        CompressionPass(
            name=label,
            params=params,
            flops=flops,
            size_mb=path.stat().st_size / 2**20,
            top1=top1[label],
            latency_ms=latency.get(str(path)),
            latency_ms_onnxruntime=latency.get(str(path)),
        )
        for label, path in (("float", float_path), ("quantized", result.path))
    ]
    name = str(getattr(getattr(model, "config", None), "name", None) or type(model).__name__)
    report = CompressionReport(
        model=name,
        passes=rows,
        quant_error=[QuantError(r["layer"], r["mse"], r["sqnr_db"]) for r in result.layers],
        data=splits.source,
    )
    write_json(out / "report.json", report.to_dict())
    return report


def _cpu() -> Any:
    import torch

    return torch.device("cpu")


def _data(model: nn.Module, job: QuantizeJob) -> Any:
    from effnet.data.datasets import load_data
    from effnet.data.images import eval_transform
    from effnet.training.transforms import resized
    from effnet.weights.specs import Preprocessing

    meta = getattr(model, "pretrained_meta", None) or {}
    if "preprocessing" not in meta:
        raise EffnetError(f"{job.weights} records no preprocessing; quantize a checkpoint written by effnet")
    pre = resized(Preprocessing.from_dict(meta["preprocessing"]), job.img_size)
    transform = eval_transform(pre)  # calibration sees images exactly as inference will
    splits = load_data(
        job.data,
        data_dir=job.data_dir,
        val_split=job.val_split,
        seed=job.seed,
        train_transform=transform,
        eval_transform=transform,
        subset=job.subset,
    )
    if splits.val is None or len(splits.val) == 0:
        raise EffnetError(f"{job.data} has no validation images to measure accuracy on")
    classes = list(meta.get("classes") or [])
    if list(splits.classes) != classes:
        raise EffnetError(
            f"the data's classes differ from the checkpoint's ({len(splits.classes)} vs {len(classes)}); "
            "quantize with the data the model was trained on"
        )
    return splits
