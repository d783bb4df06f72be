"""``effnet predict IMAGE_OR_DIR...``: top-k ImageNet (or fine-tuned) classes for images."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from effnet.cli._common import positive_int, print_json, warn

if TYPE_CHECKING:
    from effnet.predict import ImageResult


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify images", description=__doc__)
    p.add_argument(
        "inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files and/or folders (searched recursively)"
    )
    p.add_argument("--model", default=None, help="model name (default: read from the weights, else efficientnet_lite0)")
    p.add_argument(
        "--weights",
        default="imagenet",
        help="imagenet, a weight tag, a checkpoint path, or an .onnx file from effnet export (default: imagenet)",
    )
    p.add_argument("--topk", type=positive_int, default=5, help="how many classes to show per image (default: 5)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="images per forward pass (default: 16)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from effnet.predict import classify, load_classifier

    name = args.model
    if name is None and args.weights in ("imagenet", "default", "pretrained"):
        name = "efficientnet_lite0"
    if name is not None and Path(args.weights).suffix.lower() == ".onnx":
        warn(f"--model {name} is ignored: the ONNX file {args.weights} holds its own network")
    model = load_classifier(name, args.weights, args.device)
    results = classify(model, args.inputs, topk=args.topk, batch_size=args.batch_size, device=args.device)
    for r in results:
        if r.error:
            warn(r.error)
    if args.json:
        print_json([r.to_dict() for r in results])
    else:
        print(format_results(results))
    return 1 if any(r.error for r in results) else 0


def format_results(results: list[ImageResult]) -> str:
    lines = []
    for r in results:
        if r.error:
            continue
        lines.append(r.image)
        width = max(len(p.label) for p in r.predictions)
        for rank, p in enumerate(r.predictions, 1):
            lines.append(f"  {rank}. {p.label.ljust(width)}  {100 * p.prob:6.2f}%  (class {p.index})")
    ok = sum(1 for r in results if not r.error)
    lines.append(f"{ok} of {len(results)} inputs classified")
    return "\n".join(lines)
