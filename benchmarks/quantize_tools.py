"""Every int8 tool on one Fashion-MNIST checkpoint, in one run: top-1, agreement, size, latency (not a test).

Issue #11's comparison, measured in a single process so the numbers share one machine state.
From the float ONNX export of ``--weights`` it builds:

- float32 in ONNX Runtime (the reference every ratio divides by);
- ONNX Runtime's ``quantize_static`` (QDQ, per-channel int8 weights, min/max calibration) with its
  default signed int8 activations and with uint8 activations, called as a user would on the float
  export after ``quant_pre_process`` (as ``benchmarks/quantize_photos.py`` does);
- effnet's static int8 (``quantize_onnx`` with ``QuantizeConfig()``'s defaults), in ONNX Runtime
  and read by OpenVINO (``effnet quantize --runtime auto`` chooses between the two), and in ONNX
  Runtime with the stem quantized too (``--int8-stem``), with 7-bit weights (``--reduce-range``)
  and with one scale per weight tensor;
- OpenVINO fp32 (the float ONNX read by OpenVINO) and NNCF post-training quantization of that
  OpenVINO model (``nncf.quantize``, default preset) into OpenVINO int8, both on OpenVINO's CPU
  plugin with ``INFERENCE_NUM_THREADS`` = ``--threads``, one stream, f32 inference precision;
- PyTorch's own int8: FX graph mode (``quantize_fx``, the ``x86`` qconfig mapping) and the PT2E
  flow with ``X86InductorQuantizer`` compiled by ``torch.compile`` (PT2E lives in torchao now:
  ``pip install --no-deps torchao`` keeps the installed torch); a flow that is missing or fails is
  a row that says why. Eager and compiled PyTorch fp32 are timed too, for scale.

Every tool calibrates on the same ``--calib-images`` training images (seeded draw) and is evaluated
on the first ``--eval-images`` test images, preprocessed as ``effnet eval`` does. Batch-1 latency is
timed interleaved (round-robin over all variants, ``--repeats`` rounds after warm-up) on one test
image (a calibration image with ``--latency-only``), so machine load hits every variant alike; the
table gives the median (and 90th percentile) and the median's ratio to ONNX Runtime fp32.
``--consecutive K`` runs each variant K times back to back per round (``effnet bench
--consecutive``): each then runs with its own weights warm in the caches, as a model deployed
alone does, where one run per round (the default) starts each after another model.
``--latency-only`` skips the test set (for timing at 224 px, the size of the issue's table).

    OMP_NUM_THREADS=1 python benchmarks/quantize_tools.py --weights runs/fm-lite0-60k/best.safetensors \\
        --data fashion-mnist --calib-images 256 --threads 1 --repeats 100
    OMP_NUM_THREADS=1 python benchmarks/quantize_tools.py --weights runs/fm-lite0-60k/best.safetensors \\
        --data fashion-mnist --img-size 224 --latency-only --calib-images 256 --threads 1 --repeats 100

``--lite WEIGHTS`` adds the checkpoint's EfficientNet-Lite swap (ReLU6, no squeeze-excitation,
fine-tuned: ``effnet compress --auto --lite-epochs`` writes it to ``candidates/lite/best.safetensors``)
as float and as effnet's static int8, in the same run, so its ratio is to the unswapped float:

    OMP_NUM_THREADS=1 python benchmarks/quantize_tools.py --weights runs/fm-b0-60k/best.safetensors \
        --lite runs/auto-b0-lite/candidates/lite/best.safetensors --data fashion-mnist --threads 1 --repeats 100

OpenVINO and NNCF are not effnet dependencies: ``pip install openvino nncf`` (keeping the installed
torch) for their rows; without them those rows say so.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

import effnet
from effnet.bench.measure import cpu_flags, cpu_name, interleaved_timings, percentile
from effnet.compress.quantize import QuantizeConfig, _Reader, quantize_onnx
from effnet.data.datasets import load_data
from effnet.data.images import eval_transform
from effnet.export import export_model
from effnet.export.formats import onnxruntime_session, short_message
from effnet.export.padding import PaddedConv2d
from effnet.export.pipeline import prepare_for_export
from effnet.training.transforms import resized
from effnet.weights.specs import Preprocessing

REFERENCE = "float32, ONNX Runtime (reference)"
ORT_S8 = "ONNX Runtime QDQ, s8 activations (default), min/max"
ORT_U8 = "ONNX Runtime QDQ, u8 activations, min/max"
EVAL_BATCH = 100
TORCH_COMPILED = "PyTorch fp32, torch.compile"
PT2E = "PyTorch PT2E int8, X86InductorQuantizer, torch.compile"


@dataclass
class Variant:
    """One row: how to run a batch (logits out), one batch-1 inference to time, its size on disk."""

    label: str
    predict: Callable[[np.ndarray], np.ndarray] | None = None
    once: Callable[[], None] | None = None
    size: int | None = None  # bytes of the file(s) a user would ship
    build_s: float = 0.0  # seconds to quantize / convert
    problem: str = ""  # why the variant could not be built or run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="an effnet checkpoint (.safetensors)")
    parser.add_argument("--data", default="fashion-mnist", help="what effnet eval takes: fashion-mnist, a folder...")
    parser.add_argument("--data-dir", default=None, help="where a built-in data set's files are")
    parser.add_argument("--img-size", type=int, default=None, help="input side (default: the checkpoint's)")
    parser.add_argument("--calib-images", type=int, default=256, help="training images every tool calibrates on")
    parser.add_argument("--eval-images", type=int, default=None, help="first N test images (default: all)")
    parser.add_argument("--latency-only", action="store_true", help="skip top-1 and agreement (no test set)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--consecutive", type=int, default=1, help="runs of a variant back to back per round")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lite", default=None, help="the Lite-swapped checkpoint of --weights: float and int8 rows")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model = effnet.create_model(weights=args.weights).eval()
    pre = resized(Preprocessing.from_dict(model.pretrained_meta["preprocessing"]), args.img_size)
    transform = eval_transform(pre)
    splits = load_data(args.data, data_dir=args.data_dir, train_transform=transform, eval_transform=transform)
    generator = torch.Generator().manual_seed(args.seed)
    picks = torch.randperm(len(splits.train), generator=generator)[: args.calib_images].tolist()
    calibration = torch.stack([splits.train[i][0] for i in picks]).numpy()
    if args.latency_only:
        images, labels = calibration[:1], None
    else:
        count = len(splits.val) if args.eval_images is None else min(args.eval_images, len(splits.val))
        items = [splits.val[i] for i in range(count)]
        images = torch.stack([image for image, _ in items]).numpy()
        labels = np.array([label for _, label in items])
    sample = np.ascontiguousarray(images[:1])
    tested = 0 if labels is None else len(labels)
    say(f"{len(calibration)} calibration images, {tested} test images at {pre.input_size} px")

    with tempfile.TemporaryDirectory(prefix="effnet-qtools-") as work:
        variants = build(model, pre.input_size, calibration, sample, Path(work), args)
        predictions = {} if labels is None else evaluate(variants, images)
        latency = time_all(variants, args)
        report(variants, predictions, labels, latency, pre.input_size, len(calibration), args)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build(model: nn.Module, size: int, calibration: np.ndarray, sample: np.ndarray, work: Path, args) -> list[Variant]:  # noqa: ANN001
    """Export, quantize with every tool and load each result; a tool that fails becomes a row saying why."""
    float_path = work / "float.onnx"
    export_model(model, "onnx", float_path, img_size=size)
    variants = [ort_variant(REFERENCE, float_path, sample, args.threads)]
    steps: list[tuple[str, Callable[[], Variant]]] = [
        (ORT_S8, lambda: ort_static(ORT_S8, float_path, calibration, sample, True, work, args)),
        (ORT_U8, lambda: ort_static(ORT_U8, float_path, calibration, sample, False, work, args)),
        ("effnet int8 (defaults)", lambda: effnet_static(float_path, calibration, sample, work, args)),
        (
            EFFNET_I8_STEM,
            lambda: effnet_static(float_path, calibration, sample, work, args, EFFNET_I8_STEM, float_stem=False),
        ),  # fmt: skip
        (EFFNET_R7, lambda: effnet_static(float_path, calibration, sample, work, args, EFFNET_R7, reduce_range=True)),
        (EFFNET_PT, lambda: effnet_static(float_path, calibration, sample, work, args, EFFNET_PT, per_channel=False)),
        ("effnet int8 on OpenVINO", lambda: effnet_on_openvino(work, sample, args)),
        ("OpenVINO fp32", lambda: openvino_float(float_path, sample, work, args)),
        ("NNCF -> OpenVINO int8", lambda: nncf_int8(float_path, calibration, sample, work, args)),
        ("PyTorch fp32 (eager)", lambda: torch_variant("PyTorch fp32 (eager)", model, sample, work)),
        ("PyTorch FX int8, x86 qconfig", lambda: torch_fx(model, calibration, sample, work)),
        (TORCH_COMPILED, lambda: torch_compiled(model, sample, work)),
        (PT2E, lambda: torch_pt2e(model, calibration, sample, work)),
    ]
    if args.lite:
        steps += [
            (LITE_FLOAT, lambda: lite_float(args.lite, size, sample, work, args)),
            (LITE_INT8, lambda: lite_int8(calibration, sample, work, args)),
        ]
    for label, step in steps:
        say(f"building {label} ...")
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                variant = step()
        except Exception as exc:  # every tool fails in its own way; the row says how
            variant = Variant(label, problem=f"{type(exc).__name__}: {short_message(exc)}")
            say(f"  failed: {variant.problem}")
        variant.build_s = time.perf_counter() - start
        variants.append(variant)
    return variants


def ort_variant(label: str, path: Path, sample: np.ndarray, threads: int) -> Variant:
    session = onnxruntime_session(path, threads)
    name = session.get_inputs()[0].name
    feed = {name: sample}
    return Variant(
        label,
        predict=lambda x: session.run(None, {name: x})[0],
        once=lambda: session.run(None, feed),
        size=path.stat().st_size,
    )


def ort_static(
    label: str, float_path: Path, calibration: np.ndarray, sample: np.ndarray, signed: bool, work, args
) -> Variant:  # noqa: ANN001
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static

    prepared = work / "ort-pre.onnx"
    if not prepared.exists():
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
    graph = onnx.load(str(prepared))  # for the calibration reader: its input name

    path = work / f"ort-{'s8' if signed else 'u8'}.onnx"
    with contextlib.redirect_stdout(sys.stderr):  # ORT's calibrator prints progress
        quantize_static(
            str(prepared), str(path), _Reader(graph, calibration), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QInt8 if signed else QuantType.QUInt8, weight_type=QuantType.QInt8,
        )  # fmt: skip
    return ort_variant(label, path, sample, args.threads)


EFFNET_I8_STEM = "effnet int8, stem in int8 too (--int8-stem)"
EFFNET_R7 = "effnet int8, 7-bit weights (--reduce-range)"
EFFNET_PT = "effnet int8, per-tensor weights"


def effnet_static(
    float_path: Path, calibration: np.ndarray, sample: np.ndarray, work: Path, args,  # noqa: ANN001
    label: str = "effnet int8 (defaults)", **settings: bool,
) -> Variant:  # fmt: skip
    """effnet's static int8 with its defaults, or with ``settings`` changed (float_stem, reduce_range, ...)."""
    path = work / ("-".join(["effnet-int8", *settings]).replace("_", "-") + ".onnx")
    quantize_onnx(float_path, path, QuantizeConfig(calib_images=len(calibration), **settings), calibration)
    return ort_variant(label, path, sample, args.threads)


LITE_FLOAT = "effnet lite swap, fp32 (ONNX Runtime)"
LITE_INT8 = "effnet lite swap + int8 (defaults)"


def lite_float(weights: str, size: int, sample: np.ndarray, work: Path, args) -> Variant:  # noqa: ANN001
    """The Lite-swapped checkpoint exported as the reference was (same preprocessing and size)."""
    path = work / "lite-float.onnx"
    export_model(effnet.create_model(weights=weights).eval(), "onnx", path, img_size=size)
    return ort_variant(LITE_FLOAT, path, sample, args.threads)


def lite_int8(calibration: np.ndarray, sample: np.ndarray, work: Path, args) -> Variant:  # noqa: ANN001
    path = work / "lite-int8.onnx"
    quantize_onnx(work / "lite-float.onnx", path, QuantizeConfig(calib_images=len(calibration)), calibration)
    return ort_variant(LITE_INT8, path, sample, args.threads)


def effnet_on_openvino(work: Path, sample: np.ndarray, args) -> Variant:  # noqa: ANN001
    """effnet's QDQ file (the row above) read by OpenVINO, as ``effnet quantize --runtime openvino`` runs it."""
    import openvino as ov

    model = ov.Core().read_model(str(work / "effnet-int8.onnx"))
    return openvino_variant("effnet int8 on OpenVINO", model, sample, work / "effnet-int8-ov.xml", args.threads)


def openvino_config(threads: int) -> dict[str, str]:
    """The CPU plugin at batch 1 on ``threads`` threads: one stream, latency hint, f32 (no bf16 on AMX CPUs)."""
    return {
        "INFERENCE_NUM_THREADS": str(threads),
        "NUM_STREAMS": "1",
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
    }


def openvino_variant(label: str, ov_model, sample: np.ndarray, xml: Path, threads: int) -> Variant:  # noqa: ANN001
    """``ov_model`` saved to ``xml`` (+ .bin) and compiled twice on the CPU plugin: dynamic batch
    for the test set, static batch 1 for timing."""
    import openvino as ov

    core = ov.Core()
    ov.save_model(ov_model, str(xml), compress_to_fp16=False)
    size = xml.stat().st_size + xml.with_suffix(".bin").stat().st_size
    batched = core.compile_model(ov_model, "CPU", openvino_config(threads))
    single_model = ov_model.clone()
    single_model.reshape([1, *sample.shape[1:]])
    single = core.compile_model(single_model, "CPU", openvino_config(threads))
    actual = single.get_property("INFERENCE_NUM_THREADS")
    if int(actual) != threads:
        raise RuntimeError(f"OpenVINO runs {actual} inference threads, not {threads}")
    request = single.create_infer_request()
    request.set_input_tensor(ov.Tensor(sample))
    batch_request = batched.create_infer_request()

    def predict(x: np.ndarray) -> np.ndarray:
        return batch_request.infer({0: x})[0].copy()

    return Variant(label, predict=predict, once=request.infer, size=size)


def openvino_float(float_path: Path, sample: np.ndarray, work: Path, args) -> Variant:  # noqa: ANN001
    import openvino as ov

    model = ov.Core().read_model(str(float_path))
    return openvino_variant("OpenVINO fp32", model, sample, work / "openvino-fp32.xml", args.threads)


def nncf_int8(float_path: Path, calibration: np.ndarray, sample: np.ndarray, work: Path, args) -> Variant:  # noqa: ANN001
    import nncf
    import openvino as ov

    nncf.set_log_level(logging.ERROR)
    ov_model = ov.Core().read_model(str(float_path))
    dataset = nncf.Dataset(list(calibration), lambda image: image[None])
    with contextlib.redirect_stdout(sys.stderr):  # progress bars
        quantized = nncf.quantize(ov_model, dataset, subset_size=len(calibration))
    return openvino_variant("NNCF -> OpenVINO int8", quantized, sample, work / "nncf-int8.xml", args.threads)


def torch_variant(
    label: str, module: nn.Module, sample: np.ndarray, work: Path, saved: nn.Module | None = None
) -> Variant:
    """A module run in inference mode; its size is its saved state dict, or ``saved`` (the module a
    compiled one wraps) as a ``torch.export`` program."""
    buffer = io.BytesIO()
    if saved is None:
        torch.save(module.state_dict(), buffer)
    else:
        torch.export.save(torch.export.export(saved, (torch.from_numpy(sample),)), buffer)
    x = torch.from_numpy(sample)

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(batch)).float().numpy()

    def once() -> None:
        with torch.inference_mode():
            module(x)

    return Variant(label, predict=predict, once=once, size=len(buffer.getvalue()))


def traceable(model: nn.Module, sample: np.ndarray) -> nn.Module:
    """An eval copy with TensorFlow "same" padding frozen (effnet's export step) and each padded
    convolution split into ``ZeroPad2d`` + ``Conv2d``, since the shape check in
    :class:`PaddedConv2d` cannot be traced symbolically. Batch norms stay for the tool to fold."""
    prepared = prepare_for_export(model, torch.from_numpy(sample), fuse=False)
    for parent in list(prepared.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, PaddedConv2d):
                conv = nn.Conv2d(
                    child.in_channels, child.out_channels, child.kernel_size, child.stride, 0,
                    child.dilation, child.groups, child.bias is not None,
                )  # fmt: skip
                conv.load_state_dict(child.state_dict())
                setattr(parent, name, nn.Sequential(nn.ZeroPad2d(child.static_pad), conv))
    return prepared.eval()


def calibrate(module: nn.Module, calibration: np.ndarray) -> None:
    with torch.inference_mode():
        for start in range(0, len(calibration), 32):
            module(torch.from_numpy(calibration[start : start + 32]))


def torch_fx(model: nn.Module, calibration: np.ndarray, sample: np.ndarray, work: Path) -> Variant:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    example = (torch.from_numpy(sample),)
    prepared = prepare_fx(traceable(model, sample), get_default_qconfig_mapping("x86"), example)
    calibrate(prepared, calibration)
    return torch_variant("PyTorch FX int8, x86 qconfig", convert_fx(prepared), sample, work)


def torch_pt2e(model: nn.Module, calibration: np.ndarray, sample: np.ndarray, work: Path) -> Variant:
    """PT2E: export, ``X86InductorQuantizer`` (int8 activations and per-channel weights), then
    ``torch.compile``, which lowers the quantize/dequantize pattern to oneDNN int8 kernels (eager,
    the converted graph only simulates int8 in float). PT2E left ``torch.ao`` for torchao."""
    label = PT2E
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86
    except ImportError:
        try:
            from torch.ao.quantization.quantize_pt2e import convert_pt2e, prepare_pt2e
            from torch.ao.quantization.quantizer import x86_inductor_quantizer as x86
        except ImportError as exc:
            return Variant(label, problem=f"needs torchao (pip install --no-deps torchao): {exc}")
    example = (torch.from_numpy(np.concatenate([sample, sample])),)  # batch 1 would be specialised
    batch = torch.export.Dim("batch", max=1024)
    exported = torch.export.export(traceable(model, sample), example, dynamic_shapes=({0: batch},)).module()
    quantizer = x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported, quantizer)
    calibrate(prepared, calibration)
    converted = convert_pt2e(prepared)
    return torch_variant(label, torch.compile(converted), sample, work, saved=converted)


def torch_compiled(model: nn.Module, sample: np.ndarray, work: Path) -> Variant:
    """The float model through ``torch.compile`` (Inductor), the baseline PT2E int8 compiles against."""
    return torch_variant(TORCH_COMPILED, torch.compile(traceable(model, sample), dynamic=True), sample, work)


def evaluate(variants: list[Variant], images: np.ndarray) -> dict[str, np.ndarray]:
    """Top-1 class of every test image under each variant; one that fails here gets its problem set."""
    predictions = {}
    for variant in variants:
        if variant.predict is None:
            continue
        say(f"evaluating {variant.label} on {len(images)} images ...")
        try:
            chunks = [
                variant.predict(np.ascontiguousarray(images[i : i + EVAL_BATCH]))
                for i in range(0, len(images), EVAL_BATCH)
            ]
            predictions[variant.label] = np.concatenate(chunks).argmax(1)
        except Exception as exc:  # reported in the row
            variant.problem, variant.once = f"inference failed: {type(exc).__name__}: {short_message(exc)}", None
    return predictions


def time_all(variants: list[Variant], args) -> dict[str, tuple[float, float]]:  # noqa: ANN001
    """Median and 90th-percentile batch-1 milliseconds of each variant, all timed in one round-robin loop."""
    runs = {v.label: v.once for v in variants if v.once is not None}
    say(f"timing {len(runs)} variants interleaved: {args.warmup} warm-up + {args.repeats} runs each ...")

    def failed(label: str, exc: BaseException) -> None:
        next(v for v in variants if v.label == label).problem = f"timing failed: {short_message(exc)}"

    samples = interleaved_timings(runs, args.repeats, args.warmup, failed, consecutive=args.consecutive)
    return {label: (statistics.median(ms), percentile(ms, 90)) for label, ms in samples.items() if ms}


def report(variants, predictions, labels, latency, size, calib_count, args) -> None:  # noqa: ANN001
    reference = predictions.get(REFERENCE)
    base_ms = latency[REFERENCE][0] if REFERENCE in latency else None
    base_size = next(v.size for v in variants if v.label == REFERENCE)
    flags = cpu_flags()
    versions = ", ".join(
        f"{name} {package_version(name)}" for name in ("onnxruntime", "openvino", "nncf", "torch", "torchao")
    )
    evaluated = "latency only" if labels is None else f"{len(labels)} test images"
    print(
        f"\n{cpu_name()}, avx512_vnni: {'yes' if 'avx512_vnni' in flags else 'no'}, {os.cpu_count()} CPUs, "
        f"{args.threads} thread(s), batch 1; {versions}\n"
        f"{Path(args.weights).name} at {size} px, {calib_count} calibration images, {evaluated}, "
        f"median of {args.repeats} interleaved runs"
        + (f", {args.consecutive} back to back per round" if args.consecutive > 1 else "")
        + "\n"
    )
    print(
        "| variant | top-1 | agreement with float | MiB (x float) | median ms | p90 ms | ratio to ORT fp32 | build s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for v in variants:
        if v.problem and v.label not in latency:
            print(f"| {v.label} | not run: {v.problem} | | | | | | |")
            continue
        pred = predictions.get(v.label)
        top1 = "-" if pred is None else f"{(pred == labels).mean() * 100:.2f}%"
        agree = "-" if pred is None or reference is None else f"{(pred == reference).mean() * 100:.2f}%"
        mib = "-" if v.size is None else f"{v.size / 2**20:.2f} ({v.size / base_size:.2f}x)"
        ms, p90 = latency.get(v.label, (None, None))
        timing = "- | -" if ms is None else f"{ms:.2f} | {p90:.2f}"
        ratio = "-" if ms is None or base_ms is None else f"{ms / base_ms:.2f}"
        note = f" ({v.problem})" if v.problem else ""
        print(f"| {v.label}{note} | {top1} | {agree} | {mib} | {timing} | {ratio} | {v.build_s:.0f} |")


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name).split("+")[0]
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    main()
