"""Fashion-MNIST training benchmarks for docs/benchmarks.md (not a test).

Trains each model through ``effnet.train`` with the same budget (images, epochs, input size,
recipe) and prints one markdown row per model: test top-1 on the official 10k test split (or
the subset's share of it), parameters, FLOPs at the training size, and training images/s.

    python benchmarks/train_fashion_mnist.py --models efficientnet_b0 resnet18 resnet50 \\
        --subset 20000 --epochs 2 --img-size 64 --out runs/bench-scratch
    python benchmarks/train_fashion_mnist.py --models efficientnet_lite0 --weights imagenet \\
        --subset 4000 --epochs 2 --img-size 64 --out runs/bench-finetune
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import effnet
from effnet.models.summary import count_flops, count_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["efficientnet_b0", "resnet18", "resnet50"])
    parser.add_argument("--weights", default=None, help="imagenet to fine-tune; default from scratch")
    parser.add_argument("--subset", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--crop-pct", type=float, default=1.0, help="eval crop; 1 keeps the garments' edges")
    parser.add_argument("--crop-scale", type=float, nargs=2, default=[0.6, 1.0], help="training crops' area range")
    parser.add_argument("--amp", default="off")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--out", default="runs/bench-fashion-mnist")
    args = parser.parse_args()

    rows = []
    for name in args.models:
        out = Path(args.out) / name
        started = time.monotonic()
        result = effnet.train(
            {
                "model": name,
                "weights": args.weights,
                "data": "fashion-mnist",
                "subset": args.subset,
                "epochs": args.epochs,
                "img_size": args.img_size,
                "batch_size": args.batch_size,
                "lr": args.lr,
                "amp": args.amp,
                "augment": "flip",
                "crop_scale": tuple(args.crop_scale),
                "crop_pct": args.crop_pct,
                "warmup_epochs": 0.2,
                "workers": args.workers,
                "device": args.device,
                "out": str(out),
                "progress": False,
            }
        )
        wall = time.monotonic() - started
        model = effnet.create_model(weights=out / "best.safetensors")
        last = result.history[-1]
        rows.append(
            {
                "model": name,
                "test_top1": last["val_top1"],
                "params": count_params(model),
                "flops": count_flops(model, args.img_size),
                "train_images_per_s": sum(h["images_per_s"] for h in result.history) / len(result.history),
                "wall_s": wall,
            }
        )
    info = {
        "command": "python benchmarks/train_fashion_mnist.py "
        + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items()
            if v is not None
        ),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "rows": rows,
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps(info, indent=2))
    print(info["command"])
    print("| model | test top-1 | params | GFLOPs @ input | train img/s | wall |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['test_top1']:.2f}% | {r['params'] / 1e6:.2f}M | {r['flops'] / 1e9:.3f} "
            f"| {r['train_images_per_s']:.0f} | {r['wall_s'] / 60:.1f} min |"
        )


if __name__ == "__main__":
    main()
