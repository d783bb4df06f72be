"""``effnet eval --weights PATH --data DATA``: accuracy, loss, per-class accuracy, confusion matrix."""

from __future__ import annotations

import argparse

from effnet.cli._common import image_size, positive_int, print_json, table, warn


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint on a dataset", description=__doc__)
    p.add_argument("--weights", required=True, help="a checkpoint (e.g. RUN_DIR/best.safetensors)")
    p.add_argument("--data", required=True, help="image folder, CSV, fashion-mnist or cifar10")
    p.add_argument("--model", default=None, help="model name, if the checkpoint does not record it")
    p.add_argument("--data-dir", default=None, help="where a built-in dataset's files are")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per forward pass (default 64)")
    p.add_argument("--workers", type=int, default=2, help="data loading processes (default 2)")
    p.add_argument(
        "--img-size", type=image_size, default=None, help="input size (default: the checkpoint's preprocessing)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument(
        "--json", action="store_true", help="print JSON (top1, top5, loss, n, per_class, confusion, skipped)"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from effnet.training.eval_checkpoint import evaluate_checkpoint

    result = evaluate_checkpoint(
        args.weights,
        args.data,
        model=args.model,
        data_dir=args.data_dir,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        img_size=args.img_size,
    )
    for message in result.skipped[:5]:
        warn(f"skipped {message}")
    if result.skipped:
        warn(f"{len(result.skipped)} unreadable images skipped; the results are over the other {result.n}")
    if args.json:
        print_json(result.to_dict())
        return 0
    print(f"top-1 {result.top1:.2f}%  top-5 {result.top5:.2f}%  loss {result.loss:.4f}  ({result.n} images)")
    rows = [[c.name, "-" if c.accuracy is None else f"{c.accuracy:.2f}", str(c.n)] for c in result.per_class]
    print(table(rows, ["class", "accuracy %", "images"]))
    return 0
