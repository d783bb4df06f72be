"""Pruning sensitivity of a trained checkpoint, for docs/pruning.md (not a test).

Evaluates the checkpoint on the validation split of ``--data`` (the official test split for
fashion-mnist and cifar10, the run's ``--subset`` share of it) after pruning each unit alone at
each ratio; prints the table, writes the compression JSON that ``effnet report`` plots, then
prunes every unit at once at the ratios ``suggest_ratios`` picks for ``--max-drop`` and
evaluates that network too (no fine-tuning).

    python benchmarks/train_fashion_mnist.py ...   # or effnet.train(...), see docs/pruning.md
    python benchmarks/prune_sensitivity.py runs/fm-lite0/best.safetensors --data fashion-mnist \\
        --subset 4000 --out runs/fm-lite0/sensitivity.json
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import torch
from torch.utils.data import DataLoader

import effnet
from effnet.compress import PassContext, apply_pass
from effnet.compress.prune import PruneChannelsConfig
from effnet.compress.sensitivity import _FirstBatches, prune_sensitivity, suggest_ratios
from effnet.data.datasets import load_data
from effnet.data.images import eval_transform
from effnet.models.summary import count_flops, count_params
from effnet.training.evaluate import evaluate
from effnet.weights.specs import Preprocessing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", help="a checkpoint written by effnet train (best.safetensors)")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--subset", type=int, default=None, help="as in effnet train: the split's share of it")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    parser.add_argument("--granularity", default="stage", choices=["stage", "group"])
    parser.add_argument("--importance", default="l2", choices=["l1", "l2", "bn_scale"])
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--recalibrate-bn", type=int, default=0, help="batches of training images (0: off)")
    parser.add_argument("--max-batches", type=int, default=None, help="evaluate on the first batches only")
    parser.add_argument("--max-drop", type=float, default=1.0, help="top-1 points per unit for the suggestion")
    parser.add_argument("--no-suggest", action="store_true", help="skip pruning at the suggested ratios")
    parser.add_argument("--out", default=None, help="the compression JSON to write")
    args = parser.parse_args()

    model = effnet.create_model(weights=args.weights).eval()
    meta = model.pretrained_meta
    pre = Preprocessing.from_dict(meta["preprocessing"])
    transform = eval_transform(pre)
    splits = load_data(args.data, subset=args.subset, train_transform=transform, eval_transform=transform)
    val = DataLoader(splits.val, batch_size=args.batch_size)
    shuffled = torch.Generator().manual_seed(0)
    train = DataLoader(splits.train, batch_size=args.batch_size, shuffle=True, generator=shuffled)
    threads = torch.get_num_threads()
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {threads} threads")
    print(f"# {args.weights}: {splits.source}, {len(splits.val)} validation images at {pre.input_size} px")

    started = time.monotonic()
    result = prune_sensitivity(
        model,
        val,
        ratios=args.ratios,
        granularity=args.granularity,
        max_batches=args.max_batches,
        importance=args.importance,
        classes=meta["classes"],
        recalibrate_bn_batches=args.recalibrate_bn,
        bn_loader=train if args.recalibrate_bn else None,
        data=splits.source,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    took = time.monotonic() - started
    print(f"# sensitivity: {len(result.units)} units x {len(result.ratios)} ratios in {took:.0f} s")
    print(result.to_table())
    print("# most sensitive first: " + ", ".join(u.name for u in result.ranked()))
    if args.out:
        print(f"# wrote {result.save(args.out)}")

    if args.no_suggest:
        return
    ratios = suggest_ratios(result, max_drop=args.max_drop)
    print(f"# suggest_ratios(max_drop={args.max_drop:g}): {ratios}")
    pruned, report = apply_pass(model, PruneChannelsConfig(scope="local", ratios=ratios), PassContext())
    top1 = evaluate(pruned, _FirstBatches(val, args.max_batches), list(meta["classes"]), torch.device("cpu")).top1
    size = pre.input_size
    print(
        f"# all suggested ratios at once (no fine-tuning): top-1 {top1:.2f}% (unpruned {result.baseline_top1:.2f}%), "
        f"params {count_params(model) / 1e6:.2f}M -> {count_params(pruned) / 1e6:.2f}M, "
        f"FLOPs at {size} px {count_flops(model, size) / 1e6:.1f}M -> {count_flops(pruned, size) / 1e6:.1f}M"
    )


if __name__ == "__main__":
    main()
