"""``benchmark``: measure several models on several runtimes, interleaved, into plain data.

For each batch size every (model, runtime) candidate is prepared, its peak memory measured,
then all candidates are warmed up and timed round-robin (see :mod:`effnet.bench.measure`).
A candidate that fails (a model that cannot be loaded, an ONNX file that is not a model, a
runtime that is not installed, a batch that does not fit in memory) gets a one-line ``error``
in its result and the rest are still measured.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effnet.bench.accuracy import open_image_folder, scaled_preprocessing, top1_accuracy
from effnet.bench.measure import cpu_name, device_name, interleaved_timings, percentile
from effnet.bench.reference import REFERENCES, reference_model
from effnet.bench.runners import PRECISIONS, RUNTIMES, OpenVinoRunner, OrtRunner, Runner, TorchRunner
from effnet.devices import resolve_device
from effnet.errors import EffnetError
from effnet.export import ov_runtime
from effnet.export.formats import onnx_metadata, short_message
from effnet.export.fuse import fuse_for_inference
from effnet.export.onnx_module import recorded_runtime
from effnet.export.ov_runtime import RUNTIMES as ONNX_RUNTIMES
from effnet.export.pipeline import default_input_size, export_model, input_channels
from effnet.export.source import load_model
from effnet.models.summary import count_flops
from effnet.schemas import BenchReport, BenchResult
from effnet.sizes import check_input_size
from effnet.weights.specs import Preprocessing

ModelArg = str | os.PathLike[str] | nn.Module | tuple[str, nn.Module]


@dataclass
class _Target:
    """A model to measure: a PyTorch module or an ONNX file, or the reason it could not be loaded."""

    label: str
    source: str
    module: nn.Module | None = None
    onnx_path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    fuse_for_export: bool = True  # references are exported as their library's users would, unfused
    flops: int | None = None
    img_size: int | None = None  # the input side, where the module cannot tell (a reference library's model)


@dataclass
class _Candidate:
    target: _Target
    runtime: str
    precision: str
    img_size: int = 0
    runner: Runner | None = None
    flops: int | None = None
    error: str | None = None
    rows: list[BenchResult] = field(default_factory=list)


def benchmark(
    models: Sequence[ModelArg],
    *,
    device: str = "cpu",
    threads: int | None = None,
    batch_sizes: Sequence[int] = (1,),
    img_size: int | None = None,
    precision: str = "fp32",
    runtimes: Sequence[str] = ("torch",),
    reference: str | None = None,
    data: str | os.PathLike[str] | None = None,
    warmup: int = 10,
    repeats: int = 50,
    consecutive: int = 1,
    fuse: bool = False,
    channels_last: bool = False,
    measure_memory: bool = True,
    compile_backend: str = "inductor",
    log: Callable[[str], None] | None = None,
) -> BenchReport:
    """Measure ``models`` on ``runtimes`` for each batch size, interleaved; return a :class:`BenchReport`.

    Args:
        models: names (``efficientnet_b0``, random weights), ``NAME:WEIGHTS``
            (``efficientnet_lite0:imagenet``), checkpoint paths, ``.onnx`` files, modules, or
            ``(label, module)`` pairs.
        runtimes: any of ``torch``, ``compile``, ``onnxruntime``, ``openvino``; each PyTorch model
            is measured on each. For ``onnxruntime`` and ``openvino`` a PyTorch model is first
            exported with :func:`effnet.export.export_model` (fused, checked, dynamic batch). An
            ``.onnx`` file runs on the ONNX runtimes among ``runtimes``, else on the runtime it
            records (``effnet quantize`` records the one it measured fastest) or ONNX Runtime.
        reference: ``torchvision`` or ``timm``: also measure that library's implementation of
            each effnet model, holding the same weights.
        data: an ImageFolder-style directory; adds top-1 accuracy.
        consecutive: runs of each candidate back to back in each round (all timed); 1 alternates
            every run, 3 or more times each model with its own weights warm in the caches.
        fuse: measure PyTorch runtimes on :func:`effnet.export.fuse_for_inference` copies.
        channels_last: run PyTorch runtimes in NHWC memory format (often faster on CPU).
        threads: intra-op threads for PyTorch, ONNX Runtime and OpenVINO (default: PyTorch's current).

    >>> report = benchmark(["efficientnet_lite0"], img_size=64, warmup=1, repeats=3, measure_memory=False)
    >>> report.results[0].latency_ms_median > 0
    True
    """
    _validate(runtimes, precision, batch_sizes, warmup, repeats, threads, reference, img_size)
    if consecutive < 1:
        raise EffnetError(f"consecutive runs must be at least 1, got {consecutive}")
    if not models:
        raise EffnetError("nothing to measure: give at least one model")
    dev = resolve_device(device)
    say = log or (lambda message: None)
    if data is not None:
        open_image_folder(data)  # a wrong --data is one error up front, not one per model
    saved_threads = torch.get_num_threads()
    threads = threads or saved_threads  # ONNX Runtime gets the same count as PyTorch, for a fair race
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory(prefix="effnet-bench-") as workdir:
            targets = _resolve_targets(models, reference, say)
            settings = _Settings(dev, threads, precision, img_size, fuse, channels_last, compile_backend, Path(workdir))
            candidates = _make_candidates(targets, runtimes, settings, say)
            for batch_size in batch_sizes:
                _measure_batch(candidates, batch_size, dev, warmup, repeats, measure_memory, say, threads, consecutive)
            skipped = _measure_accuracy(candidates, data, say) if data is not None else []
            results = [row for b in batch_sizes for c in candidates for row in c.rows if row.batch_size == b]
    finally:
        torch.set_num_threads(saved_threads)
    return BenchReport(
        device=device_name(dev),
        threads=threads,
        torch_version=torch.__version__,
        cpu=cpu_name(),
        results=results,
        onnxruntime_version=_onnxruntime_version(),
        warmup=warmup,
        repeats=repeats,
        consecutive=consecutive,
        data=os.path.abspath(data) if data is not None else None,
        data_skipped=skipped,
    )


def _validate(
    runtimes: Sequence[str],
    precision: str,
    batch_sizes: Sequence[int],
    warmup: int,
    repeats: int,
    threads: int | None,
    reference: str | None,
    img_size: int | None,
) -> None:
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown or not runtimes:
        raise EffnetError(f"unknown runtime {', '.join(unknown) or '(none)'}; choose from {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise EffnetError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if not batch_sizes or any(b < 1 for b in batch_sizes):
        raise EffnetError(f"batch sizes must be at least 1, got {list(batch_sizes)}")
    if repeats < 1 or warmup < 0:
        raise EffnetError(f"need at least 1 timed repetition and no negative warm-up (got {repeats}, {warmup})")
    if threads is not None and threads < 1:
        raise EffnetError(f"threads must be at least 1, got {threads}")
    if reference is not None and reference not in REFERENCES:
        raise EffnetError(f"unknown reference {reference!r}; choose {' or '.join(REFERENCES)}")
    if img_size is not None:
        check_input_size(img_size)


def _resolve_targets(models: Iterable[ModelArg], reference: str | None, say: Callable[[str], None]) -> list[_Target]:
    targets = []
    for arg in models:
        target = _load_target(arg)
        targets.append(target)
        if reference and target.module is not None:
            label = f"{reference}:{getattr(getattr(target.module, 'config', None), 'name', target.label)}"
            ref = _Target(label=label, source=reference, meta=target.meta, fuse_for_export=False)
            try:
                say(f"building {reference}'s {label.split(':', 1)[1]} with the same weights")
                ref.module = reference_model(reference, target.module)
                # torchvision's and timm's modules do not record their resolution; effnet's twin does.
                ref.img_size = default_input_size(target.module)
            except EffnetError as exc:
                ref.error = str(exc)
            targets.append(ref)
    return targets


def _load_target(arg: ModelArg) -> _Target:
    if isinstance(arg, tuple):
        label, module = arg
        return _Target(label=label, source="module", module=module, meta=_meta(module))
    if isinstance(arg, nn.Module):
        return _Target(label=type(arg).__name__, source="module", module=arg, meta=_meta(arg))
    text = os.fspath(arg)
    if text.lower().endswith(".onnx"):
        return _Target(label=text, source="onnx", onnx_path=Path(text))
    try:
        module = load_model(text)
    except EffnetError as exc:
        return _Target(label=text, source="effnet", error=str(exc))
    except Exception as exc:  # a file the loaders choke on must not stop the other models
        return _Target(label=text, source="effnet", error=f"{text}: cannot load ({short_message(exc)})")
    return _Target(label=text, source="effnet", module=module, meta=_meta(module))


def _meta(module: nn.Module) -> dict[str, Any]:
    return dict(getattr(module, "pretrained_meta", None) or {})


@dataclass(frozen=True)
class _Settings:
    """How every candidate of one ``benchmark`` call is prepared."""

    device: torch.device
    threads: int | None
    precision: str
    img_size: int | None
    fuse: bool
    channels_last: bool
    compile_backend: str
    workdir: Path  # where ONNX exports for ONNX Runtime live during the call


RECORDED = "recorded"  # an ONNX file's candidate before its metadata names the runtime


def _make_candidates(
    targets: list[_Target], runtimes: Sequence[str], settings: _Settings, say: Callable[[str], None]
) -> list[_Candidate]:
    candidates = []
    for number, target in enumerate(targets):
        kinds = list(dict.fromkeys(runtimes))
        if target.onnx_path is not None:  # ONNX files run on the ONNX runtimes asked for, else their own
            kinds = [r for r in kinds if r in ONNX_RUNTIMES] or [RECORDED]
        for runtime in kinds:
            candidate = _Candidate(target, runtime, settings.precision)
            candidate.img_size = settings.img_size or 0
            candidates.append(candidate)
            if target.error:
                candidate.error = target.error
                continue
            try:
                _prepare_candidate(candidate, number, settings, say)
            except EffnetError as exc:
                candidate.error = str(exc)
            except Exception as exc:  # a broken model must not stop the others
                candidate.error = f"{type(exc).__name__}: {short_message(exc)}"
    return candidates


def _prepare_candidate(c: _Candidate, number: int, settings: _Settings, say: Callable[[str], None]) -> None:
    target = c.target
    if target.onnx_path is not None:
        args = (target.onnx_path, settings.threads, settings.device, c.img_size or None)
        if c.runtime == RECORDED:  # the file's own runtime, read from the metadata ONNX Runtime loads
            c.runner = OrtRunner(*args)
            c.runtime = recorded_runtime(onnx_metadata(c.runner.session))
            if c.runtime == "openvino" and not ov_runtime.openvino_available():
                say(f"{target.label} records OpenVINO, which is not installed here: timing it in ONNX Runtime")
                c.runtime = "onnxruntime"
        if c.runtime == "openvino":
            say(f"loading {target.label} into OpenVINO")
            c.runner = OpenVinoRunner(*args)
        elif c.runner is None:
            say(f"loading {target.label} into ONNX Runtime")
            c.runner = OrtRunner(*args)
        c.precision, c.img_size = c.runner.precision, c.runner.img_size
        target.meta = target.meta or onnx_metadata(c.runner.session)
        return
    module = target.module
    c.img_size = c.img_size or target.img_size or default_input_size(module)
    if target.flops is None:
        was_training = module.training
        try:
            target.flops = count_flops(module, c.img_size, input_channels(module))
        finally:
            module.train(was_training)
    c.flops = target.flops
    if c.runtime in ONNX_RUNTIMES:
        if c.precision != "fp32":
            raise EffnetError(f"{c.runtime} runs the fp32 export; use --precision fp32 with --runtime {c.runtime}")
        path = settings.workdir / f"{number}-{Path(target.label).name.replace(':', '_')}.onnx"
        if not path.exists():  # one export serves both ONNX runtimes
            say(f"exporting {target.label} to ONNX")
            export_model(module, "onnx", path, img_size=c.img_size, dynamic_batch=True, fuse=target.fuse_for_export)
        runner_class = OpenVinoRunner if c.runtime == "openvino" else OrtRunner
        c.runner = runner_class(path, settings.threads, settings.device, c.img_size)
        return
    measured = fuse_for_inference(module) if settings.fuse else _copy_for_runtime(module)
    c.runner = TorchRunner(
        measured,
        c.img_size,
        input_channels(module),
        settings.device,
        c.precision,
        compile_backend=settings.compile_backend if c.runtime == "compile" else None,
        channels_last=settings.channels_last,
    )


def _copy_for_runtime(module: nn.Module) -> nn.Module:
    """Runners move modules between devices and dtypes; they get a copy so the caller's model stays put."""
    return copy.deepcopy(module)


def _measure_batch(
    candidates: list[_Candidate],
    batch_size: int,
    dev: torch.device,
    warmup: int,
    repeats: int,
    measure_memory: bool,
    say: Callable[[str], None],
    threads: int | None = None,
    consecutive: int = 1,
) -> None:
    runs: dict[int, Callable[[], None]] = {}
    rows: dict[int, BenchResult] = {}
    for index, c in enumerate(candidates):
        runner = c.runner
        row = BenchResult(
            model=c.target.label,
            runtime=c.runtime,
            precision=c.precision,
            batch_size=batch_size,
            img_size=c.img_size,
            params=runner.params if runner else None,
            flops=c.flops,
            size_mb=_round(runner.size_mb, 3) if runner else None,
            source=c.target.source,
            error=c.error,
        )
        c.rows.append(row)
        rows[index] = row
        if runner is None:
            continue
        try:
            runs[index] = runner.prepare(batch_size)
            if measure_memory:
                row.peak_memory_mb = _round(runner.peak_memory_mb(batch_size), 3)
        except Exception as exc:
            runs.pop(index, None)
            row.error = _describe(exc, batch_size, dev)

    def failed(index: int, exc: BaseException) -> None:
        rows[index].error = _describe(exc, batch_size, dev)

    say(f"batch size {batch_size}: {len(runs)} candidates, {warmup} warm-up and {repeats} timed runs each, interleaved")
    # One CPU thread runs each model on the timing thread, so its CPU time is a latency that other
    # jobs on the cores do not inflate; with more threads (or a GPU) it would not be.
    cpu: dict[int, list[float]] | None = {} if threads == 1 and dev.type == "cpu" else None
    timings = interleaved_timings(runs, repeats, warmup, failed, cpu_samples=cpu, consecutive=consecutive)
    for index, samples in timings.items():
        row = rows[index]
        if row.error or not samples:
            continue
        median = percentile(samples, 50)
        row.latency_ms_median = _round(median, 3)
        row.latency_ms_p90 = _round(percentile(samples, 90), 3)
        row.latency_ms_min = _round(min(samples), 3)
        if cpu and cpu.get(index):
            row.cpu_ms_median = _round(percentile(cpu[index], 50), 3)
        row.throughput_ips = _round(batch_size * 1000.0 / median, 2)
        row.repeats = len(samples)


def _measure_accuracy(
    candidates: list[_Candidate], data: str | os.PathLike[str], say: Callable[[str], None]
) -> list[str]:
    """Fill ``top1`` for every measured row; returns the unreadable images (skipped, not fatal)."""
    skipped: dict[str, None] = {}
    for c in candidates:
        measured = [row for row in c.rows if row.error is None]
        if c.runner is None or not measured:
            continue
        batch = max(row.batch_size for row in measured)
        meta = c.target.meta
        pre = Preprocessing.from_dict(meta["preprocessing"]) if meta.get("preprocessing") else None
        pre = scaled_preprocessing(pre or Preprocessing.default_for(c.img_size), c.img_size)
        say(f"top-1 accuracy of {c.target.label} on {c.runtime}")
        try:
            accuracy = top1_accuracy(c.runner.predict, data, pre, meta.get("classes"), batch)
        except EffnetError as exc:
            for row in measured:
                row.error = str(exc)
            continue
        skipped.update(dict.fromkeys(accuracy.skipped))
        for row in measured:
            row.top1 = _round(accuracy.top1, 3)
            row.top1_images = accuracy.images
    return list(skipped)


def _describe(exc: BaseException, batch_size: int, dev: torch.device) -> str:
    """A one-line reason; running out of memory names the batch size and a smaller one to try."""
    if isinstance(exc, EffnetError):
        return str(exc)
    if _is_out_of_memory(exc):
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        if batch_size == 1:
            return f"the model does not fit in memory on {dev} even at batch size 1"
        return (
            f"batch size {batch_size} does not fit in memory on {dev}; try a smaller one, "
            f"e.g. --batch-sizes {max(1, batch_size // 2)}"
        )
    return f"{type(exc).__name__}: {short_message(exc)}"


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):  # torch.OutOfMemoryError since 2.5
        return True
    text = str(exc).lower()
    return any(s in text for s in ("out of memory", "can't allocate memory", "failed to allocate memory", "bad_alloc"))


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(float(value), digits)


def _onnxruntime_version() -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__
