"""``effnet quantize --weights PATH --data DATA --out DIR``: int8 (or 16-bit) model for ONNX Runtime, measured.

Static int8 calibrates activation ranges on images of the training split (prepared exactly as
at inference), corrects the bias that rounding the weights adds, and writes DIR/model.onnx
(QDQ: per-channel int8 weights, uint8 activations, which run every convolution in int8 on x86
CPUs but the stem: reading the three-channel image, it runs faster in float and stays so unless
--int8-stem). DIR/report.json gives size, top-1 on the validation split and batch-1 ONNX Runtime
latency of the float export and the quantized model, timed interleaved, and every layer's
quantization error (SQNR); ``effnet report DIR/report.json`` draws it.

--mode qat (quantization-aware training) first fine-tunes a copy of the network for --qat-epochs
on the training split with int8 rounding simulated in every convolution (the stem too with
--int8-stem) and the classifier (batch norms frozen), into DIR/qat/ (continue an interrupted one
with --resume), then converts it as static int8; the report adds the static int8 baseline and
the fine-tuned float network.

--auto-float N (mixed precision) quantizes each convolution and the classifier alone, ranks them
by how far that moves the network's output from float (KL divergence on calibration images), and
keeps the N that move it most in float: their float weights and an unrounded input. Each costs
speed; report.json gives every layer's output_kl and which were kept.

--tune quantizes with each int8 setting the CPU kernels offer (uint8 or int8 activations,
per-channel or per-tensor weight scales, 8- or 7-bit weights), measures every file's top-1 and
latency in each runtime here, and keeps the fastest whose top-1 is within 0.5 points of the most
accurate as DIR/model.onnx; the others stay in DIR/tune/ and report.json has a row for each.
"""

from __future__ import annotations

import argparse

from effnet.cli._common import image_size, ms, positive_int, print_json, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quantize", help="quantize a trained model and measure it against float", description=__doc__)
    p.add_argument("--weights", required=True, help="the trained checkpoint to quantize (it is not modified)")
    p.add_argument("--data", required=True, help="its data: image folder, CSV, fashion-mnist or cifar10")
    p.add_argument("--out", required=True, help="output folder: model.onnx, report.json, bench.json")
    p.add_argument(
        "--mode",
        choices=["static", "dynamic", "qat"],
        default="static",
        help="static: calibrated int8 activations (default); dynamic: only the classifier, no calibration; "
        "qat: fine-tune with int8 rounding simulated, then static",
    )
    p.add_argument("--qat-epochs", type=positive_int, default=1, help="--mode qat: fine-tuning epochs (default 1)")
    p.add_argument("--qat-lr", type=float, default=1e-4, help="--mode qat: learning rate (default 1e-4)")
    p.add_argument("--resume", action="store_true", help="--mode qat: continue the fine-tune in --out/qat")
    p.add_argument("--device", default="auto", help="--mode qat: where to fine-tune: auto, cpu or cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bar while fine-tuning")
    p.add_argument(
        "--dtype",
        choices=["int8", "fp16", "bf16"],
        default="int8",
        help="int8 (default), or fp16/bf16 weight storage (half the file, float speed on CPU)",
    )
    p.add_argument("--calib-images", type=positive_int, default=256, help="calibration images (default 256)")
    p.add_argument(
        "--observer",
        choices=["minmax", "moving_average", "percentile", "entropy", "mse"],
        default="minmax",
        help="activation range: min/max (default), the mean of per-image min/max, a percentile of |x|, entropy "
        "or the least squared error",
    )
    p.add_argument("--percentile", type=float, default=99.999, help="for --observer percentile (99.999)")
    p.add_argument(
        "--classifier-bits",
        type=int,
        choices=[8, 4],
        default=8,
        help="4: the classifier's weights at 4 bits (ONNX Runtime MatMulNBits, float activations; CPUs have no "
        "4-bit convolution kernels); default 8",
    )
    p.add_argument(
        "--activations", choices=["uint8", "int8"], default="uint8", help="activation type (uint8: fast on x86)"
    )
    p.add_argument(
        "--reduce-range",
        action="store_true",
        help="int8 weights in 7 bits: for x86 CPUs without VNNI, whose u8 x s8 kernels can overflow 16-bit sums",
    )
    p.add_argument(
        "--per-tensor",
        action="store_true",
        help="one int8 scale per weight tensor, not per output channel: faster kernels, less accurate "
        "after training (--mode qat trains for it)",
    )
    p.add_argument(
        "--int8-stem",
        action="store_true",
        help="quantize the first convolution too (by default it reads the image in float: faster on CPUs)",
    )
    p.add_argument("--no-bias-correction", action="store_true", help="skip correcting the weights' rounding bias")
    p.add_argument(
        "--rounding",
        choices=["nearest", "adaround"],
        default="nearest",
        help="int8 weight rounding: to nearest, or learned per layer on calibration images (AdaRound)",
    )
    p.add_argument("--adaround-iters", type=positive_int, default=300, help="AdaRound steps per layer (300)")
    p.add_argument(
        "--keep-float",
        action="append",
        default=[],
        metavar="PATTERN",
        help="ONNX node names (wildcards allowed) to leave in float, e.g. '/stages/stages.6/*'; repeatable",
    )
    p.add_argument(
        "--auto-float",
        type=int,
        default=0,
        metavar="N",
        help="also keep in float the N layers whose quantization alone moves the output most "
        "(KL divergence on calibration images; default 0)",
    )
    p.add_argument(
        "--runtime",
        choices=["auto", "onnxruntime", "openvino", "torch"],
        default="auto",
        help="where the model runs; auto times ONNX Runtime and OpenVINO (if installed) here and records the "
        "fastest whose top-1 is within 0.5 points of the best (default auto); torch is refused, with why",
    )
    p.add_argument(
        "--tune",
        action="store_true",
        help="static int8: try u8/s8 activations, per-channel/per-tensor scales and 8/7-bit weights, keep the "
        "fastest file (and runtime) within 0.5 points of the most accurate; the others stay in --out/tune",
    )
    p.add_argument("--data-dir", default=None, help="where a built-in dataset's files are")
    p.add_argument("--subset", type=positive_int, default=None, help="use at most this many images of the data")
    p.add_argument("--batch-size", type=positive_int, default=64, help="evaluation batch size (default 64)")
    p.add_argument("--img-size", type=image_size, default=None, help="input size (default: the checkpoint's)")
    p.add_argument("--threads", type=positive_int, default=None, help="runtime threads for timing")
    p.add_argument("--repeats", type=positive_int, default=50, help="timed runs per model (default 50)")
    p.add_argument("--workers", type=int, default=2, help="data loading processes (default 2)")
    p.add_argument("--json", action="store_true", help="print report.json when done")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from effnet.compress.quantize import QuantizeConfig
    from effnet.compress.quantize_runner import QuantizeJob, run_quantize

    config = QuantizeConfig(
        mode=args.mode,
        dtype=args.dtype,
        observer=args.observer,
        percentile=args.percentile,
        classifier_bits=args.classifier_bits,
        activations=args.activations,
        reduce_range=args.reduce_range,
        per_channel=not args.per_tensor,
        bias_correction=not args.no_bias_correction,
        rounding=args.rounding,
        adaround_iters=args.adaround_iters,
        keep_float=tuple(args.keep_float),
        float_stem=not args.int8_stem,
        auto_float=args.auto_float,
        calib_images=args.calib_images,
        qat_epochs=args.qat_epochs,
        qat_lr=args.qat_lr,
    )
    job = QuantizeJob(
        weights=args.weights,
        data=args.data,
        out=args.out,
        config=config,
        runtime=args.runtime,
        data_dir=args.data_dir,
        subset=args.subset,
        batch_size=args.batch_size,
        img_size=args.img_size,
        workers=args.workers,
        threads=args.threads,
        repeats=args.repeats,
        device=args.device,
        resume=args.resume,
        progress=not args.no_progress,
        tune=args.tune,
    )
    report = run_quantize(job)
    if args.json:
        print_json(report.to_dict())
        return 0
    base = report.passes[0].latency_ms
    rows = [
        [
            row.name,
            row.runtime or "onnxruntime",
            f"{row.size_mb:.2f}",
            f"{row.top1:.2f}%",
            ms(row.latency_ms),
            f"{row.latency_ms / base:.2f}x" if base and row.latency_ms else "-",
        ]
        for row in report.passes
    ]
    print(table(rows, ["", "runtime", "MiB", "top-1", "ms", "vs float"]))
    if report.quant_error:
        worst = report.quant_error[0]
        print(f"worst layer: {worst.layer} (SQNR {worst.sqnr_db:.1f} dB); all layers in report.json")
    kept = [row for row in report.quant_error if row.kept_float]
    if kept:
        print(f"kept in float: {', '.join(row.layer for row in kept)}")
    print(f"written to {args.out}/model.onnx and {args.out}/report.json")
    return 0
