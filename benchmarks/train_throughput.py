"""Training-step throughput: effnet's model against timm's and torchvision's, in one run (not a test).

Each candidate takes full training steps (forward, loss, backward, optimizer step) on synthetic
images of the given size, with the chosen autocast dtype and memory format. Candidates are timed
round-robin: every round runs ``--steps`` steps of each model in turn, so a change in clock speed
or a busy neighbour hits all of them alike; the reported rate is the median over rounds, and the
ratio is against the first ``--reference`` candidate in the same run.

The issue's H100 measurement (B0 at 224 px, bf16, channels-last, batch 256):

    python benchmarks/train_throughput.py --device cuda --amp bf16 --memory-format channels_last --batch-size 256

Memory formats compared on a CPU (``both`` times every model in NCHW and NHWC, interleaved):

    python benchmarks/train_throughput.py --device cpu --amp off --img-size 64 --batch-size 32 \
        --memory-format both --models effnet:efficientnet_b0 effnet:resnet18
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

import effnet


def build(spec: str, num_classes: int, drop_path: float) -> nn.Module:
    """``library:name`` -> a freshly initialised model (weights do not change the speed).

    Stochastic depth costs time in training, and the libraries' defaults differ (timm 0,
    torchvision and effnet 0.2 for B0), so every model gets the same ``drop_path``.
    """
    library, _, name = spec.partition(":")
    if library == "effnet":
        return effnet.create_model(name, num_classes=num_classes, drop_path_rate=drop_path)
    if library == "timm":
        import timm

        return timm.create_model(name, num_classes=num_classes, drop_path_rate=drop_path)
    if library == "torchvision":
        import torchvision

        extra = {"stochastic_depth_prob": drop_path} if name.startswith("efficientnet") else {}
        return torchvision.models.get_model(name, num_classes=num_classes, **extra)
    raise SystemExit(f"unknown library {library!r} in {spec!r}: use effnet:, timm: or torchvision:")


def make_step(
    model: nn.Module, device: torch.device, amp: torch.dtype | None, channels_last: bool, compile_: bool
) -> Callable[[torch.Tensor, torch.Tensor], None]:
    model.to(device).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-5)
    forward = torch.compile(model) if compile_ else model
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = loss_fn(forward(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models",
        nargs="+",
        default=["effnet:efficientnet_b0", "timm:efficientnet_b0", "torchvision:efficientnet_b0"],
    )
    parser.add_argument("--reference", default="timm:efficientnet_b0", help="the ratio column's denominator")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=256)
    # bf16 or fp32 only: fp16 training needs loss scaling, which this bare step does not do.
    parser.add_argument("--amp", choices=["off", "bf16"], default="bf16")
    parser.add_argument("--memory-format", choices=["contiguous", "channels_last", "both"], default="channels_last")
    parser.add_argument("--drop-path", type=float, default=0.2, help="stochastic depth for every model")
    parser.add_argument("--compile", action="store_true", help="torch.compile every model (Inductor)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps per model before the rounds")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per model per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    amp = {"off": None, "bf16": torch.bfloat16}[args.amp]
    formats = ["contiguous", "channels_last"] if args.memory_format == "both" else [args.memory_format]
    torch.manual_seed(0)
    batch = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=device)
    images = {
        "contiguous": batch,
        "channels_last": batch.contiguous(memory_format=torch.channels_last),
    }
    labels = torch.randint(0, 1000, (args.batch_size,), device=device)

    candidates = [(spec, fmt) for spec in args.models for fmt in formats]
    steps, params, peaks = {}, {}, {}
    for spec, fmt in candidates:
        model = build(spec, 1000, args.drop_path)
        params[spec] = sum(p.numel() for p in model.parameters())
        steps[spec, fmt] = make_step(model, device, amp, fmt == "channels_last", args.compile)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(args.warmup):
            steps[spec, fmt](images[fmt], labels)
        sync(device)
        if device.type == "cuda":
            peaks[spec, fmt] = torch.cuda.max_memory_allocated(device) / 2**20

    rates: dict[tuple[str, str], list[float]] = {c: [] for c in candidates}
    for _ in range(args.rounds):
        for spec, fmt in candidates:
            sync(device)
            start = time.perf_counter()
            for _ in range(args.steps):
                steps[spec, fmt](images[fmt], labels)
            sync(device)
            rates[spec, fmt].append(args.steps * args.batch_size / (time.perf_counter() - start))

    medians = {c: statistics.median(r) for c, r in rates.items()}
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(
        f"# {hardware}; torch {torch.__version__}; {torch.get_num_threads()} CPU threads; batch {args.batch_size}, "
        f"{args.img_size} px, amp {args.amp}, drop-path {args.drop_path}, compile {args.compile}; "
        f"{args.rounds} rounds x {args.steps} steps"
    )
    print("| model | memory format | params | train img/s (median) | min | max | peak MiB | vs reference | vs NCHW |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for spec, fmt in candidates:
        reference = medians.get((args.reference, fmt))
        ratio = f"{medians[spec, fmt] / reference:.3f}" if reference else "n/a"
        plain = medians.get((spec, "contiguous"))
        vs_plain = f"{medians[spec, fmt] / plain:.2f}x" if plain else "n/a"
        peak = f"{peaks[spec, fmt]:.0f}" if (spec, fmt) in peaks else "n/a"
        print(
            f"| {spec} | {fmt} | {params[spec] / 1e6:.2f}M | {medians[spec, fmt]:.1f} | {min(rates[spec, fmt]):.1f} | "
            f"{max(rates[spec, fmt]):.1f} | {peak} | {ratio} | {vs_plain} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "args": vars(args),
                    "hardware": hardware,
                    "torch": torch.__version__,
                    "rates": {f"{s} {f}": r for (s, f), r in rates.items()},
                    "peak_mib": {f"{s} {f}": p for (s, f), p in peaks.items()},
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
