"""What each part of the EfficientNet-Lite swap costs before any training (not a test).

The checkpoint is swapped by the ``lite_swap`` pass in every combination of its changes (ReLU6 for
SiLU, squeeze-excitation removed) and repairs (average gates folded into the next convolution,
batch-norm statistics re-estimated), calibrated on shuffled training images, and every variant's
top-1 is measured on the same test images. Prints a markdown table.

    python benchmarks/lite_swap.py --weights runs/fm-b0-60k/best.safetensors --data fashion-mnist --img-size 64
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader, Subset

import effnet
from effnet.compress import PassContext, apply_pass
from effnet.compress.lite import LiteSwapConfig, _training_images
from effnet.data.datasets import load_data

VARIANTS: list[tuple[str, dict[str, bool] | None, bool]] = [
    ("parent", None, False),
    ("squeeze-excitation removed", {"relu6": False}, False),
    ("squeeze-excitation removed, gates folded", {"relu6": False, "reestimate_batchnorm": False}, True),
    ("squeeze-excitation removed, gates folded, batch norm re-estimated", {"relu6": False}, True),
    ("ReLU6 for SiLU", {"remove_se": False}, False),
    ("ReLU6 for SiLU, batch norm re-estimated", {"remove_se": False}, True),
    ("both (the plain swap)", {}, False),
    ("both, gates folded", {"reestimate_batchnorm": False}, True),
    ("both, gates folded, batch norm re-estimated (the pass with data)", {}, True),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--img-size", type=int, default=None)
    parser.add_argument("--images", type=int, default=2000, help="test images (evenly spaced) to measure on")
    parser.add_argument("--calibration-batches", type=int, default=16, help="batches of 64 training images")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    parent = effnet.create_model(weights=args.weights).eval()
    settings = {"img_size": args.img_size, "batch_size": 64}
    calibration = _training_images(parent, args.data, args.calibration_batches, settings)
    splits = load_data(args.data, eval_transform=calibration.dataset.transform)
    step = max(1, len(splits.val) // args.images)
    test = DataLoader(Subset(splits.val, range(0, len(splits.val), step)), batch_size=100)

    print(f"\n{args.weights}, {len(test.dataset)} test images, calibration {args.calibration_batches} x 64 images\n")
    print("| network | top-1 (no training) | seconds to swap |")
    print("|---|---:|---:|")
    for label, changes, with_data in VARIANTS:
        started = time.perf_counter()
        if changes is None:
            model = parent
        else:
            config = LiteSwapConfig(calibration_batches=args.calibration_batches, **changes)
            model = apply_pass(parent, config, PassContext(data=calibration if with_data else None))[0]
        seconds = time.perf_counter() - started
        print(f"| {label} | {_top1(model.eval(), test):.1f}% | {seconds:.1f} |")


@torch.no_grad()
def _top1(model: torch.nn.Module, loader: DataLoader) -> float:
    correct = total = 0
    for images, labels in loader:
        correct += int((model(images).argmax(1) == labels).sum())
        total += len(labels)
    return 100.0 * correct / total


if __name__ == "__main__":
    main()
