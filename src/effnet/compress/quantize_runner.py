"""``effnet quantize``: quantize a trained classifier and measure it against its float export.

The checkpoint is exported to ONNX and quantized (:mod:`effnet.compress.quantize`) with
calibration images drawn from the training split of ``data``; then the float export and the
quantized file are measured in one run: size on disk, top-1 on the validation split, and batch-1
latency in ONNX Runtime and, with ``runtime="auto"`` where OpenVINO is installed (or
``"openvino"``), in OpenVINO too, all timed interleaved. ``auto`` records the fastest runtime whose
top-1 is within 0.5 points of the best in the file. ``OUT/model.onnx`` is the quantized model
(it records its preprocessing, classes, quantization settings and runtime, so ``effnet predict``,
``eval`` and ``bench`` run it), ``OUT/report.json`` the numbers and the per-layer error
(schema ``effnet.compression``, which ``effnet report`` draws) and ``OUT/bench.json`` the timing.

``mode="qat"`` first fine-tunes a copy of the network on the training split with int8 rounding
simulated (:class:`~effnet.compress.qat.FakeQuantCallback`, batch norms frozen) through the
training engine, into ``OUT/qat/`` (resumable, like ``effnet train``), then converts it as static
int8. The report then has four rows: the float export, static int8 of the same network (the
post-training baseline, from the same calibration images), the fine-tuned float network and the
QAT int8 model.

``tune=True`` (``effnet quantize --tune``) quantizes the network with every int8 setting ONNX
Runtime's QDQ format offers on the CPU: uint8 or int8 activations, per-channel or per-tensor weight
scales, 8- or 7-bit weights (:data:`TUNED_SETTINGS`), measures each file's top-1 and latency in every
runtime, interleaved, and keeps the fastest (file, runtime) whose top-1 is within 0.5 points of the
most accurate, as Intel Neural Compressor's accuracy-driven tuning does for its configurations. The
files it compared stay in ``OUT/tune/``; the report has one row per file and runtime.
"""

from __future__ import annotations

import copy
import shutil
import sys
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from torch import nn

from effnet.compress.quantize import QuantizeConfig, QuantizeResult, _calibration_array, quantize_onnx
from effnet.errors import EffnetError
from effnet.export.ov_runtime import RUNTIMES as ONNX_RUNTIMES
from effnet.export.ov_runtime import openvino_available
from effnet.schemas import CompressionPass, CompressionReport, QuantError

__all__ = [
    "TUNED_SETTINGS",
    "QuantizeJob",
    "choose_file_runtime",
    "fastest_accurate",
    "run_quantize",
    "saturation_hint",
]

# What ``tune`` varies: file name -> (activations, per_channel, reduce_range).
TUNED_SETTINGS: dict[str, tuple[str, bool, bool]] = {
    f"{acts}-{grid}{bits}": (activations, grid == "channel", bits == "-7bit")
    for acts, activations in (("u8", "uint8"), ("s8", "int8"))
    for grid in ("channel", "tensor")
    for bits in ("", "-7bit")
}


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
    device: str = "auto"  # where the QAT fine-tune runs
    resume: bool = False  # continue the QAT fine-tune in OUT/qat/
    progress: bool = True  # the QAT fine-tune's progress bar
    tune: bool = False  # try every setting of TUNED_SETTINGS, keep the fastest accurate file

    def validate(self) -> None:
        """Raise one :class:`EffnetError` naming every bad setting."""
        from effnet.sizes import input_size_problem

        problems = self.config.validate()
        if self.runtime not in ("auto", *ONNX_RUNTIMES):
            problems.append(
                f"runtime {self.runtime!r} is not available: effnet quantizes for ONNX Runtime or OpenVINO "
                "(PyTorch's int8 paths measured 2.5-8x slower than ONNX Runtime float here, docs/quantization.md); "
                "use --runtime auto"
            )
        elif self.runtime == "openvino" and not openvino_available():
            problems.append(
                "--runtime openvino needs the openvino package; pip install openvino, or use --runtime auto"
            )
        config = self.config
        if self.tune and (config.mode != "static" or config.dtype != "int8"):
            problems.append(
                f"--tune compares the settings of static int8, not {config.mode} {config.dtype}; "
                "use --mode static --dtype int8 (QAT trains for one setting: choose --per-tensor before training)"
            )
        elif self.tune and (not config.per_channel or config.reduce_range or config.activations != "uint8"):
            problems.append(
                "--tune tries one scale per tensor, 7-bit weights and int8 activations itself; "
                "drop --per-tensor, --reduce-range and --activations"
            )
        if self.img_size is not None and input_size_problem(self.img_size, "img_size"):
            problems.append(str(input_size_problem(self.img_size, "img_size")))
        if problems:
            raise EffnetError("invalid quantization job: " + "; ".join(problems))


def _log(message: str) -> None:
    print(f"effnet: {message}", file=sys.stderr, flush=True)


def run_quantize(job: QuantizeJob) -> CompressionReport:
    """Run a quantization job; returns (and writes) its report. The input checkpoint is never modified."""
    import torch
    from torch.utils.data import DataLoader

    from effnet.factory import load_model
    from effnet.sizes import resolve_input_size

    job.validate()
    out = Path(job.out)
    _check_out(out, job)
    if str(job.weights).lower().endswith(".onnx"):
        raise EffnetError(f"{job.weights} is already an ONNX file; quantize the checkpoint it was exported from")
    model = load_model(None, job.weights).eval()
    if not hasattr(model, "classifier_name"):
        raise EffnetError(f"{job.weights} is not a classifier effnet can quantize")
    size = resolve_input_size(model, job.img_size)
    splits = _data(model, job)
    calibration_source = splits.train if splits.train is not None and len(splits.train) else splits.val
    validation = DataLoader(splits.val, batch_size=job.batch_size, num_workers=job.workers)
    if job.config.calibrated and len(calibration_source) < 16:
        raise EffnetError(
            f"{job.data} has {len(calibration_source)} images to calibrate on; {job.config.mode} quantization "
            "needs at least 16 (or use --mode dynamic)"
        )
    if job.config.mode == "qat" and (splits.train is None or len(splits.train) == 0):
        raise EffnetError(f"{job.data} has no training images to fine-tune on; use --mode static")

    generator = torch.Generator().manual_seed(job.seed)
    calibration = DataLoader(calibration_source, batch_size=32, shuffle=True, generator=generator, num_workers=0)
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _run(model, job, size, splits, calibration, validation, out)
    except BaseException:
        if out.exists() and not any(p.name != "_float" for p in out.iterdir()):
            shutil.rmtree(out, ignore_errors=True)  # a failed job leaves no half-written folder
        raise
    finally:
        shutil.rmtree(out / "_float", ignore_errors=True)


def _check_out(out: Path, job: QuantizeJob) -> None:
    """``out`` must be new or empty, except for the QAT fine-tune ``resume`` continues."""
    if job.resume and job.config.mode != "qat":
        raise EffnetError("--resume continues the fine-tune of --mode qat; other modes are short and start again")
    if job.resume:
        if not (out / "qat").is_dir() or (out / "report.json").exists():
            raise EffnetError(f"nothing to resume in {out} (no unfinished QAT fine-tune); start without --resume")
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EffnetError(f"{out} is not empty; choose another --out (nothing was written)")


def _run(
    model: nn.Module, job: QuantizeJob, size: int, splits: Any, calibration: Any, validation: Any, out: Path
) -> CompressionReport:
    from effnet.bench import benchmark
    from effnet.bench.measure import cpu_flags
    from effnet.export import export_model
    from effnet.export.onnx_module import OnnxModule
    from effnet.models.summary import count_flops
    from effnet.training.evaluate import evaluate
    from effnet.training.state import write_json

    config = job.config
    float_path = out / "_float" / "float.onnx"
    export_model(model, "onnx", float_path, img_size=size)
    images = _calibration_array(calibration, config) if config.dtype == "int8" else None  # one set for every file
    files = {"float": float_path}  # row name -> ONNX file, in report order
    timed = ["float"]
    source = float_path
    if config.mode == "qat":
        _log(f"post-training baseline: static int8 with {len(images)} images ...")
        static = replace(config, mode="static")
        files["static"] = quantize_onnx(float_path, out / "_float" / "static.onnx", static, images).path
        timed.append("static")
        tuned = _fine_tune(model, job, out / "qat", size)
        source = files["qat-float"] = out / "_float" / "qat-float.onnx"
        export_model(tuned, "onnx", source, img_size=size)
    what = f"{config.mode} {config.dtype}"
    if config.auto_float:
        _log(f"ranking layers by output sensitivity to keep {config.auto_float} in float ...")
    settings = _tuned_configs(config) if job.tune else {"quantized": config}
    results = {}  # label -> the quantized file
    for label, setting in settings.items():
        path = out / "tune" / f"{label}.onnx" if job.tune else out / "model.onnx"
        named = f"{label}: " if job.tune else ""
        _log(f"quantizing ({named}{what}, {config.observer} observer) with up to {config.calib_images} images ...")
        results[label] = quantize_onnx(source, path, setting, images)
        files[label] = results[label].path
        timed.append(label)
    runtimes = _runtimes(job)
    _log(f"measuring top-1 of {', '.join(files)} on {splits.source} ...")
    classes = list(splits.classes)

    def accuracy(path: Path, runtime: str) -> float:
        module = OnnxModule(path, threads=job.threads, runtime=runtime)
        return float(evaluate(module, validation, classes, _cpu()).top1)

    top1 = {(label, "onnxruntime"): accuracy(path, "onnxruntime") for label, path in files.items()}
    top1.update({(label, r): accuracy(files[label], r) for label in results for r in runtimes if r != "onnxruntime"})
    if not job.tune:  # --tune tries 7-bit weights itself
        drop = top1[("float", "onnxruntime")] - top1[("quantized", "onnxruntime")]
        hint = saturation_hint(cpu_flags(), drop, config)
        if hint:
            _log(hint)
    _log(f"timing {', '.join(timed)} in {' and '.join(runtimes)} at {size} px, batch 1, interleaved ...")
    bench = benchmark(
        [str(files[label]) for label in timed],
        runtimes=runtimes,
        img_size=size,
        threads=job.threads,
        repeats=job.repeats,
        measure_memory=False,
    )
    write_json(out / "bench.json", bench.to_dict())
    latency = {(r.model, r.runtime): r.latency_ms_median for r in bench.results}
    cpu = {(r.model, r.runtime): r.cpu_ms_median for r in bench.results}
    measured = {
        (label, r): {
            "top1": top1[(label, r)],
            "latency_ms": latency.get((str(files[label]), r)),
            "cpu_ms": cpu.get((str(files[label]), r)),  # one thread: its CPU time, which other jobs do not inflate
        }
        for label in results
        for r in runtimes
    }
    # One rule for the runtime alone and for (file, runtime) pairs; a runtime asked for is the only candidate.
    allowed = {k: m for k, m in measured.items() if job.runtime in ("auto", k[1])}
    fallback = (next(iter(results)), "onnxruntime" if job.runtime == "auto" else job.runtime)
    label, chosen = fastest_accurate(allowed) or fallback
    if job.tune:
        shutil.copyfile(files[label], out / "model.onnx")
        _log(f"tuned: {label} in {chosen}, the fastest within {RUNTIME_TOP1_TOLERANCE} points of the most "
             f"accurate of {len(measured)} (files in {out / 'tune'})")  # fmt: skip
    result = results[label]
    tuned = {"chosen": label, "measured": {f"{k[0]} ({k[1]})": m for k, m in measured.items()}} if job.tune else None
    _record_runtime(out / "model.onnx", chosen, {r: measured[(label, r)] for r in runtimes}, tuned)
    if len(runtimes) > 1 and not job.tune:
        _log(f"runtime: {chosen} (" + ", ".join(f"{r} {_ms(m['latency_ms'])} ms, top-1 {m['top1']:.2f}%"
                                              for (_, r), m in measured.items()) + ")")  # fmt: skip
    flops = count_flops(model, size)
    params = sum(p.numel() for p in model.parameters())

    def row(label: str, runtime: str, name: str) -> CompressionPass:
        path = files[label]
        return CompressionPass(
            name=name,
            params=params,
            flops=flops,
            size_mb=path.stat().st_size / 2**20,
            top1=top1[(label, runtime)],
            latency_ms=latency.get((str(path), runtime)),
            latency_ms_onnxruntime=latency.get((str(path), "onnxruntime")),
            runtime=runtime,
        )

    rows = [row(name, "onnxruntime", name) for name in files if name not in results]
    rows.append(row(label, chosen, "quantized"))
    # The files and runtimes measured and not chosen, so that the report shows what the choice was made from.
    rows += [row(other, r, f"{other} ({r})") for other in results for r in runtimes if (other, r) != (label, chosen)]
    name = str(getattr(getattr(model, "config", None), "name", None) or type(model).__name__)
    report = CompressionReport(
        model=name,
        passes=rows,
        quant_error=_quant_error(result),
        data=splits.source,
    )
    write_json(out / "report.json", report.to_dict())
    return report


# An int8 model this many top-1 points below float on a CPU without VNNI gets saturation_hint's line.
SATURATION_DROP = 0.5


def saturation_hint(flags: set[str], drop: float, config: QuantizeConfig) -> str | None:
    """A line for users whose int8 model lost accuracy on an x86 CPU without VNNI, or None.

    There the u8 x s8 kernels (``vpmaddubsw``) add pairs of products in 16 bits, which can
    saturate; ONNX Runtime and OpenVINO document 7-bit weights (``reduce_range``) as the cure.
    With VNNI (or on other CPUs) products accumulate in 32 bits and 7-bit weights only cost
    accuracy (docs/quantization.md measures both).
    """
    x86 = "sse2" in flags
    vnni = bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    int8 = config.dtype == "int8" and config.activations == "uint8" and not config.reduce_range
    if not (x86 and not vnni and int8 and drop > SATURATION_DROP):
        return None
    return (
        f"int8 top-1 is {drop:.2f} points below float on a CPU without VNNI, whose u8 x s8 kernels can "
        "saturate: compare --reduce-range (7-bit weights)"
    )


# A runtime (or with --tune a file) may be chosen for speed only while its top-1 stays this close to the best.
RUNTIME_TOP1_TOLERANCE = 0.5
# Times this close (a share of the fastest) are a tie: repeated runs here move by 2-5%.
SPEED_TIE = 0.03


def _runtimes(job: QuantizeJob) -> tuple[str, ...]:
    """The runtimes the quantized file is measured on: ONNX Runtime, and OpenVINO where it is asked for or installed."""
    if job.runtime == "onnxruntime" or (job.runtime == "auto" and not openvino_available()):
        return ("onnxruntime",)
    return ("onnxruntime", "openvino")


Key = TypeVar("Key", bound=Hashable)


def fastest_accurate(measured: Mapping[Key, Mapping[str, Any]]) -> Key | None:
    """The fastest of ``measured`` (runtimes, or (file, runtime) pairs) whose top-1 is within
    :data:`RUNTIME_TOP1_TOLERANCE` of the best; None when none was timed.

    Fastest by CPU time where every one has it (timed with one thread), else by wall-clock median;
    times within :data:`SPEED_TIE` of the fastest are a tie, which the higher top-1 wins.
    """
    key = "cpu_ms" if all(m.get("cpu_ms") for m in measured.values()) else "latency_ms"
    best = max(m["top1"] for m in measured.values())
    accurate = [k for k, m in measured.items() if m["top1"] >= best - RUNTIME_TOP1_TOLERANCE and m.get(key)]
    if not accurate:
        return None
    fastest = min(measured[k][key] for k in accurate)
    tied = [k for k in accurate if measured[k][key] <= fastest * (1 + SPEED_TIE)]
    return max(tied, key=lambda k: (measured[k]["top1"], -measured[k][key]))


def _choose_runtime(asked: str, measured: dict[str, dict[str, Any]]) -> str:
    """``asked``, or for ``auto`` the fastest runtime whose top-1 is within the tolerance of the best."""
    if asked != "auto":
        return asked
    return fastest_accurate(measured) or "onnxruntime"


def choose_file_runtime(
    path: str | Path,
    data: str,
    *,
    data_dir: str | None = None,
    img_size: int | None = None,
    threads: int | None = None,
    repeats: int = 50,
) -> tuple[str, dict[str, dict[str, Any]]]:
    """Measure the quantized file ``path`` in ONNX Runtime and OpenVINO (top-1 on ``data`` as
    ``effnet eval`` measures it, batch-1 latency of both timed interleaved), record the fastest
    accurate runtime in its metadata as ``effnet quantize --runtime auto`` does, and return it
    with the measurements. Without OpenVINO installed the file stays on ONNX Runtime, unmeasured."""
    from effnet.bench import benchmark
    from effnet.training.eval_checkpoint import evaluate_checkpoint

    if not openvino_available():
        return "onnxruntime", {}
    runtimes = ("onnxruntime", "openvino")
    top1 = {
        r: float(evaluate_checkpoint(path, data, data_dir=data_dir, workers=0, img_size=img_size, runtime=r).top1)
        for r in runtimes
    }
    bench = benchmark(
        [str(path)], runtimes=runtimes, img_size=img_size, threads=threads, repeats=repeats, measure_memory=False
    )
    timed = {r.runtime: r for r in bench.results}
    measured = {
        r: {"top1": top1[r], "latency_ms": timed[r].latency_ms_median, "cpu_ms": timed[r].cpu_ms_median}
        for r in runtimes
    }
    chosen = _choose_runtime("auto", measured)
    _record_runtime(Path(path), chosen, measured)
    return chosen, measured


def _record_runtime(
    path: Path, chosen: str, measured: dict[str, dict[str, Any]], tuned: dict[str, Any] | None = None
) -> None:
    """Name the chosen runtime in the file's metadata (``predict``, ``eval``, ``bench`` run it there),
    with what it was chosen from (and, after ``tune``, every file the settings were chosen from)."""
    import json

    import onnx

    from effnet.export.formats import METADATA_KEY

    model = onnx.load(str(path))
    entry = next(p for p in model.metadata_props if p.key == METADATA_KEY)
    meta = json.loads(entry.value)
    meta["runtime"] = chosen
    meta["quantization"]["runtimes_measured"] = measured
    if tuned is not None:
        meta["quantization"]["tuned"] = tuned
    entry.value = json.dumps(meta)
    onnx.save(model, str(path))


def _tuned_configs(config: QuantizeConfig) -> dict[str, QuantizeConfig]:
    """``config`` with each setting of :data:`TUNED_SETTINGS` it can be combined with (AdaRound
    rounds 8-bit per-channel weights only)."""
    variants = {}
    for label, (acts, per_channel, reduce) in TUNED_SETTINGS.items():
        try:
            variants[label] = replace(config, activations=acts, per_channel=per_channel, reduce_range=reduce)
        except EffnetError:  # a combination these settings refuse
            continue
    return variants


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _quant_error(result: QuantizeResult) -> list[QuantError]:
    """Every layer's error, with its output sensitivity when ``auto_float`` measured it."""
    kl = {row["layer"]: row["kl"] for row in result.sensitivity}
    kept = set(result.kept_float)
    return [
        QuantError(r["layer"], r["mse"], r["sqnr_db"], output_kl=kl.get(r["layer"]), kept_float=r["layer"] in kept)
        for r in result.layers
    ]


def _fine_tune(model: nn.Module, job: QuantizeJob, run_dir: Path, size: int) -> nn.Module:
    """A copy of ``model`` fine-tuned with fake quantization in ``run_dir``; ``model`` is untouched."""
    from effnet.compress.qat import FakeQuantCallback, input_layers
    from effnet.training.engine import fit
    from effnet.weights.io import read_metadata

    config = job.config
    recorded = read_metadata(job.weights).get("recipe") or {}  # how the checkpoint was trained, if effnet did
    recipe = {
        "data": job.data,
        "data_dir": job.data_dir,
        "val_split": job.val_split,
        "subset": job.subset,
        "seed": job.seed,
        "out": str(run_dir),
        "epochs": config.qat_epochs,
        "lr": config.qat_lr,
        "batch_size": job.batch_size,
        "img_size": job.img_size,
        "augment": "none" if recorded.get("augment") == "none" else "flip",  # light: a short, low-rate run
        "warmup_epochs": 0.0,  # a low rate on a trained network needs no warm-up
        "backbone_lr_scale": 1.0,  # one rate for the whole network
        "freeze_bn": True,  # the callback holds them frozen too; see effnet.compress.qat
        "ema": False,
        "workers": job.workers,
        "device": job.device,
        "progress": job.progress,
        "tensorboard": False,
        "resume": job.resume,
    }
    crop_scale = recorded.get("crop_scale")
    if isinstance(crop_scale, list | tuple) and len(crop_scale) == 2:  # crop as the network was trained
        recipe["crop_scale"] = tuple(crop_scale)
    _log(f"quantization-aware fine-tuning: {config.qat_epochs} epoch(s) at lr {config.qat_lr:g} in {run_dir}")
    # The fine-tune simulates what the file computes: a stem that stays float is not rounded.
    stem = input_layers(model, size) if config.float_stem else []
    result = fit(
        copy.deepcopy(model), job.data, recipe, callbacks=[FakeQuantCallback(skip=stem, per_channel=config.per_channel)]
    )
    assert result.model is not None
    return result.model.eval()


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
