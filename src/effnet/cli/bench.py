"""``effnet bench MODEL...``: latency, throughput, memory, size, FLOPs and accuracy, models interleaved."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from effnet.cli._common import image_size, positive_int, print_json, table, warn

if TYPE_CHECKING:
    from effnet.bench import BenchReport

# effnet.bench's names, spelt out so that `effnet bench --help` needs no PyTorch import
# (tests/bench/test_bench_cli.py checks that they match).
RUNTIMES = ("torch", "compile", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "fp16", "bf16")
REFERENCES = ("torchvision", "timm")


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, e.g. 1,8,64; got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected numbers of at least 1, got {text!r}")
    return values


def _runtime_list(text: str) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [v for v in values if v not in RUNTIMES]
    if not values or unknown:
        raise argparse.ArgumentTypeError(f"expected some of {', '.join(RUNTIMES)} (comma-separated), got {text!r}")
    return values


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure latency, throughput, memory, size and accuracy",
        description=__doc__,
        epilog="MODEL is a name (random weights), NAME:WEIGHTS (e.g. efficientnet_lite0:imagenet), a checkpoint "
        "path, or an .onnx file (run on the ONNX runtimes asked for, else on the one it records). All "
        "candidates are timed round-robin, so their ratios "
        "hold on a busy machine.",
    )
    p.add_argument("models", nargs="+", metavar="MODEL", help="models to measure (see below)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--threads", type=positive_int, help="intra-op threads for PyTorch, ONNX Runtime and OpenVINO")
    p.add_argument("--batch-sizes", type=_int_list, default=[1], help="comma-separated, e.g. 1,8,64 (default: 1)")
    p.add_argument("--img-size", type=image_size, help="square input side (default: each model's own)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="PyTorch runtimes only (default: fp32)")
    p.add_argument(
        "--runtime",
        type=_runtime_list,
        default=["torch"],
        help="one or more (comma-separated) of torch, compile, onnxruntime, openvino (default: torch)",
    )
    p.add_argument("--reference", choices=REFERENCES, help="also measure that library's model, same weights")
    p.add_argument("--data", metavar="DIR", help="ImageFolder-style DIR/<class>/*.jpg: add top-1 accuracy")
    p.add_argument("--fuse", action="store_true", help="fold batch norms first for torch/compile (effnet.export)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format for torch/compile")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs per candidate first (default: 10)")
    p.add_argument("--repeats", type=positive_int, default=50, help="timed runs per candidate (default: 50)")
    p.add_argument(
        "--consecutive",
        type=positive_int,
        default=1,
        metavar="K",
        help="runs of each candidate back to back per round, all timed (default 1: alternate every run); "
        "3 or more time each model with its weights warm in the caches, as when it serves requests alone",
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from effnet.bench import benchmark

    def progress(message: str) -> None:
        if sys.stderr.isatty():
            print(f"effnet: {message}", file=sys.stderr)

    report = benchmark(
        args.models,
        device=args.device,
        threads=args.threads,
        batch_sizes=args.batch_sizes,
        img_size=args.img_size,
        precision=args.precision,
        runtimes=args.runtime,
        reference=args.reference,
        data=args.data,
        warmup=args.warmup,
        repeats=args.repeats,
        consecutive=args.consecutive,
        fuse=args.fuse,
        channels_last=args.channels_last,
        measure_memory=not args.no_memory,
        log=progress,
    )
    if args.json:
        print_json(report.to_dict())
    else:
        print(format_report(report))
    if report.data_skipped:
        measured = next((r.top1_images for r in report.results if r.top1_images), 0)
        warn(f"{len(report.data_skipped)} unreadable images skipped; top-1 is over the other {measured}")
        for line in report.data_skipped:
            warn(line)
    failed = [r for r in report.results if r.error]
    for r in failed:
        warn(f"{r.model} ({r.runtime}, batch {r.batch_size}): {r.error}")
    return 1 if failed else 0


def format_report(report: BenchReport) -> str:
    """The text table: one row per result; ``speed`` is relative to the first result of the same batch size."""
    header = f"{report.device} ({report.cpu}), {report.threads} threads, torch {report.torch_version}"
    if report.onnxruntime_version:
        header += f", onnxruntime {report.onnxruntime_version}"
    runs = f"{report.repeats} interleaved runs"
    if report.consecutive > 1:
        runs += f" ({report.consecutive} back to back per round)"
    header += f"; {runs} after {report.warmup} warm-up, median and p90 latency"
    first: dict[int, float] = {}
    rows = []
    with_cpu = any(r.cpu_ms_median for r in report.results)
    for r in report.results:
        if r.latency_ms_median and r.batch_size not in first:
            first[r.batch_size] = r.latency_ms_median
        base = first.get(r.batch_size)
        rows.append(
            [
                r.model,
                r.runtime,
                r.precision,
                str(r.batch_size),
                str(r.img_size) if r.img_size else "-",  # 0: never determined (the model failed to load)
                _fmt(r.params, lambda v: f"{v / 1e6:.2f}M"),
                _fmt(r.flops, lambda v: f"{v / 1e9:.3f}"),
                _fmt(r.size_mb, lambda v: f"{v:.1f}"),
                _fmt(r.latency_ms_median, lambda v: f"{v:.2f}"),
                _fmt(r.latency_ms_p90, lambda v: f"{v:.2f}"),
                _fmt(r.throughput_ips, lambda v: f"{v:.1f}"),
                _fmt(r.peak_memory_mb, lambda v: f"{v:.0f}"),
                _fmt(r.top1, lambda v: f"{v:.2f}"),
                f"{base / r.latency_ms_median:.2f}x" if base and r.latency_ms_median else "error" if r.error else "-",
            ]
        )
        if with_cpu:
            rows[-1].insert(10, _fmt(r.cpu_ms_median, lambda v: f"{v:.2f}"))
    columns = ["model", "runtime", "precision", "batch", "img", "params", "GFLOPs", "size MB"]
    columns += ["median ms", "p90 ms", "img/s", "peak MB", "top1 %", "speed"]
    if with_cpu:  # one thread: the CPU time per run, which other jobs on the cores do not inflate
        columns.insert(10, "CPU ms")
    return header + "\n\n" + table(rows, columns)


def _fmt(value: float | int | None, render) -> str:  # noqa: ANN001 - a one-line formatter
    return "-" if value is None else render(value)
