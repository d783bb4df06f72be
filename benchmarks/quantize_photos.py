"""Pretrained EfficientNet-Lite0 quantized: top-1 agreement with float on real photos, size, latency (not a test).

The photos are the ones scikit-image ships (cat, coffee, rocket, astronaut, motorcycle, coins,
moon, retina, textures...; 23 in all), each evaluated whole and as one random crop (46
inputs). Calibration uses six *other* random crops of each (138 images). Every variant is
compared with the float export of the same weights: top-1 agreement, mean |change of the top
probability|, file size, and batch-1 ONNX Runtime latency, all timed interleaved in one run;
then the mean KL divergence of its softmax from float's on the 46 inputs, and top-1 agreement on
230 more held-out crops (ten further random crops of each photo; one answer is 0.43 points there,
2.2 on the 46), which separates settings the 46 cannot.

    python benchmarks/quantize_photos.py --threads 1 --repeats 100

The variants: ONNX Runtime's static QDQ with its default signed int8 activations and with uint8
activations (min/max calibration, per-channel weights; what users get from the tool), and with
uint8 activations but ``Add`` left out of ``op_types_to_quantize``; then effnet's
``quantize_model`` with and without bias correction, each observer, ``auto_float`` (mixed
precision: the N layers whose quantization alone moves the output most kept in float), AdaRound
rounding (``rounding="adaround"``) with and without bias correction, fp16
storage, the classifier's weights at 4 bits (``classifier_bits=4``, with int8 elsewhere or alone),
``keep_float`` of the four layers with the worst SQNR (the ranking ``auto_float``
replaces), and the default file with its residual additions computed in float (an experiment,
not an option).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import skimage.data
import torch
from PIL import Image

import effnet
from effnet.bench import benchmark
from effnet.compress.quantize import QuantizeConfig, _Reader, quantize_onnx
from effnet.data.images import eval_transform
from effnet.export import export_model
from effnet.export.onnx_module import OnnxModule
from effnet.weights.specs import Preprocessing

PHOTOS = (
    "astronaut.png chelsea.png coffee.png rocket.jpg hubble_deep_field.jpg ihc.png retina.jpg motorcycle_left.png "
    "motorcycle_right.png color.png logo.png camera.png coins.png moon.png page.png text.png horse.png brick.png "
    "grass.png gravel.png clock_motion.png cell.png microaneurysms.png"
).split()


def crops(image: Image.Image, count: int, seed: int, transform) -> list[torch.Tensor]:  # noqa: ANN001
    rng = np.random.default_rng(seed)
    width, height = image.size
    out = []
    for _ in range(count):
        scale = rng.uniform(0.5, 1.0)
        w, h = int(width * scale), int(height * scale)
        x, y = rng.integers(0, width - w + 1), rng.integers(0, height - h + 1)
        crop = image.crop((x, y, x + w, y + h))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out.append(transform(crop))
    return out


def photo_sets(pre: Preprocessing) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    """(the 46 inputs, the 138 calibration crops, the 230 held-out crops), prepared as ``pre`` says."""
    transform = eval_transform(pre)
    folder = Path(os.path.dirname(skimage.data.__file__))
    photos = [Image.open(folder / name).convert("RGB") for name in PHOTOS]
    inputs = torch.stack(
        [transform(p) for p in photos] + [c for i, p in enumerate(photos) for c in crops(p, 1, 100 + i, transform)]
    )
    calibration = torch.stack([c for i, p in enumerate(photos) for c in crops(p, 6, i, transform)]).numpy()
    held_out = torch.stack([c for i, p in enumerate(photos) for c in crops(p, 10, 1000 + i, transform)])
    return inputs, calibration, held_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--only", nargs="*", default=None, help="keep the effnet variants whose label has one of these")
    parser.add_argument("--adaround-iters", type=int, default=300)
    args = parser.parse_args()

    model = effnet.create_model(args.model, weights="imagenet").eval()
    pre = Preprocessing.from_dict(model.pretrained_meta["preprocessing"])
    inputs, calibration, held_out = photo_sets(pre)

    with tempfile.TemporaryDirectory(prefix="effnet-qbench-") as work:
        run(model, pre, inputs, calibration, held_out, Path(work), args)


def run(model, pre, inputs, calibration, held_out, work, args) -> None:  # noqa: ANN001
    """Quantize every variant into ``work`` and print the table."""
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    from effnet.compress.quantize import _with_float

    float_path = work / "float.onnx"
    export_model(model, "onnx", float_path, img_size=pre.input_size)
    files = {"float32 (ONNX Runtime)": float_path}

    prepared = work / "pre.onnx"
    quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
    graph = onnx.load(str(prepared))  # for the calibration reader: its input name

    without_add = sorted((set(QDQRegistry) | set(QLinearOpsRegistry)) - {"Add"})
    for label, activations, op_types in (
        ("s8 activations", QuantType.QInt8, None),
        ("u8 activations", QuantType.QUInt8, None),
        ("u8 activations, Add not in op_types_to_quantize", QuantType.QUInt8, without_add),
    ):
        path = work / f"ort-{len(files)}.onnx"
        with contextlib.redirect_stdout(sys.stderr):
            quantize_static(
                str(prepared), str(path), _Reader(graph, calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=activations, weight_type=QuantType.QInt8, op_types_to_quantize=op_types,
            )  # fmt: skip
        files[f"ONNX Runtime QDQ, {label}, min/max"] = path
    variants = {
        "effnet int8, percentile + bias correction": QuantizeConfig(observer="percentile"),
        "effnet int8, min/max + bias correction (default)": QuantizeConfig(),
        "effnet int8, entropy + bias correction": QuantizeConfig(observer="entropy"),
        "effnet int8, moving average + bias correction": QuantizeConfig(observer="moving_average"),
        "effnet int8, least squared error (mse) + bias correction": QuantizeConfig(observer="mse"),
        "effnet int8, mse + auto_float=4": QuantizeConfig(observer="mse", auto_float=4),
        "effnet int8, min/max, no bias correction": QuantizeConfig(bias_correction=False),
        "effnet int8, default + 7-bit weights (reduce_range)": QuantizeConfig(reduce_range=True),
        "effnet int8, default + stem in float": QuantizeConfig(keep_float=("/stem/*",)),
        "effnet int8, mse + stem in float + auto_float=4": QuantizeConfig(
            observer="mse", keep_float=("/stem/*",), auto_float=4
        ),
        **{f"effnet int8, default + auto_float={n}": QuantizeConfig(auto_float=n) for n in (1, 2, 4, 8)},
        "effnet fp16 storage": QuantizeConfig(dtype="fp16"),
        "effnet int8, default + 4-bit classifier": QuantizeConfig(classifier_bits=4),
        "effnet int8, default + auto_float=4 + 4-bit classifier": QuantizeConfig(auto_float=4, classifier_bits=4),
        "effnet 4-bit classifier only (weight-only, float convolutions)": QuantizeConfig(
            mode="dynamic", classifier_bits=4
        ),
        "effnet int8, AdaRound + bias correction": QuantizeConfig(
            rounding="adaround", adaround_iters=args.adaround_iters
        ),
        "effnet int8, AdaRound, no bias correction": QuantizeConfig(
            rounding="adaround", adaround_iters=args.adaround_iters, bias_correction=False
        ),
        "effnet int8, auto_float=4 with AdaRound": QuantizeConfig(
            rounding="adaround", adaround_iters=args.adaround_iters, auto_float=4
        ),
    }
    if args.only is not None:  # the default stays: it is the keep_float control's source
        variants = {k: v for k, v in variants.items() if "(default)" in k or any(o in k for o in args.only)}
    kept = {}
    for i, (label, config) in enumerate(variants.items()):
        path = work / f"effnet-{i}.onnx"
        result = quantize_onnx(float_path, path, config, calibration)
        kept[label], files[label] = result.kept_float, path
        if label.endswith("(default)"):  # the control: the same float layers chosen by their SQNR
            worst = QuantizeConfig(keep_float=tuple(row["layer"] for row in result.layers[:4]))
    label = "effnet int8, default + keep_float = its 4 worst-SQNR layers"
    kept[label] = quantize_onnx(float_path, work / "worst-sqnr.onnx", worst, calibration).kept_float
    files[label] = work / "worst-sqnr.onnx"
    # Residual additions in float: their inputs read unrounded (so the projections before them
    # compute in float too), what ORT's op_types_to_quantize cannot do (the convolutions around an
    # Add round its inputs and output whatever it lists).
    default = onnx.load(str(files["effnet int8, min/max + bias correction (default)"]))
    adds = _with_float(default, onnx.load(str(prepared)), (), lambda node: node.op_type == "Add")
    files["effnet int8, default with residual additions in float"] = work / "float-adds.onnx"
    onnx.save(adds, str(files["effnet int8, default with residual additions in float"]))
    for label, layers in kept.items():
        if layers:
            print(f"{label} kept in float: {', '.join(layers)}", file=sys.stderr)

    outputs = {label: OnnxModule(path)(inputs) for label, path in files.items()}
    reference = outputs["float32 (ONNX Runtime)"]
    held_outputs = {label: OnnxModule(path)(held_out) for label, path in files.items()}
    held_reference = held_outputs["float32 (ONNX Runtime)"]
    report = benchmark(
        [str(p) for p in files.values()],
        runtimes=("onnxruntime",),
        img_size=pre.input_size,
        threads=args.threads,
        repeats=args.repeats,
        measure_memory=False,
    )
    latency = {r.model: r.latency_ms_median for r in report.results}
    base = latency[str(float_path)]
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args.threads} thread(s), "
          f"{len(inputs)} inputs, {len(calibration)} calibration crops, {args.model} ImageNet weights\n")  # fmt: skip
    print(
        "| model | top-1 agreement | mean abs change of top prob | MiB | ratio to float | ORT ms | mean KL "
        f"| agreement, {len(held_out)} held-out crops |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    size = float_path.stat().st_size
    for label, path in files.items():
        out = outputs[label]
        agree = (out.argmax(1) == reference.argmax(1)).float().mean().item() * 100
        change = (out.softmax(1).max(1).values - reference.softmax(1).max(1).values).abs().mean().item()
        log_p, log_q = reference.double().log_softmax(1), out.double().log_softmax(1)
        kl = (log_p.exp() * (log_p - log_q)).sum(1).mean().item()
        held = (held_outputs[label].argmax(1) == held_reference.argmax(1)).float().mean().item() * 100
        ms = latency[str(path)]
        print(
            f"| {label} | {agree:.1f}% | {change:.3f} | {path.stat().st_size / 2**20:.2f} "
            f"({path.stat().st_size / size:.2f}x) | {ms / base:.3f} | {ms:.2f} | {kl:.4f} | {held:.1f}% |"
        )


if __name__ == "__main__":
    main()
