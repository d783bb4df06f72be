"""``effnet train``: fine-tune or train a classifier on your images (also under ``torchrun``)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Collection
from typing import Any

from effnet.cli._common import image_size, positive_int

# Flags that map one-to-one onto TrainConfig fields. Defaults are None so a YAML file's values
# survive unless a flag is given.
_FLAGS: list[tuple[str, dict]] = [
    ("--model", {"help": "model name, e.g. efficientnet_b0 or resnet18 (default: efficientnet_lite0)"}),
    ("--weights", {"help": "imagenet, a weight tag or a checkpoint path to fine-tune (default: from scratch)"}),
    ("--data", {"help": "image folder, CSV of path,label, fashion-mnist or cifar10"}),
    ("--data-dir", {"help": "where a built-in dataset's files are"}),
    ("--out", {"help": "run directory for checkpoints and logs"}),
    ("--val-split", {"type": float, "help": "fraction held out from a flat folder or CSV (default 0.1)"}),
    ("--subset", {"type": positive_int, "help": "use at most this many training images"}),
    ("--epochs", {"type": positive_int, "help": "passes over the training images (default 10)"}),
    ("--batch-size", {"type": positive_int, "help": "per process (default 64)"}),
    ("--img-size", {"type": image_size, "help": "input size (default: the weights' or the model's)"}),
    ("--crop-pct", {"type": float, "help": "eval centre crop, fraction of the resized side (default: the weights')"}),
    ("--interpolation", {"choices": ["bilinear", "bicubic", "nearest"], "help": "resize filter (default: weights')"}),
    ("--mean", {"type": float, "nargs": 3, "help": "normalisation mean, 3 numbers (default: the weights')"}),
    ("--std", {"type": float, "nargs": 3, "help": "normalisation std, 3 numbers (default: the weights')"}),
    ("--crop-scale", {"type": float, "nargs": 2, "help": "RandomResizedCrop area range (default 0.25 1)"}),
    ("--lr", {"type": float, "help": "peak learning rate (default per optimizer)"}),
    ("--optimizer", {"choices": ["sgd", "adamw", "rmsprop"], "help": "default: adamw"}),
    ("--weight-decay", {"type": float, "help": "default: adamw 0.05, sgd 1e-4, rmsprop 1e-5 (never on norms, biases)"}),
    ("--momentum", {"type": float, "help": "sgd (Nesterov) and rmsprop momentum (default 0.9)"}),
    ("--warmup-epochs", {"type": float, "help": "linear warm-up before cosine decay (default 1)"}),
    ("--min-lr", {"type": float, "help": "learning rate at the end of the cosine decay (default 0)"}),
    ("--label-smoothing", {"type": float, "help": "cross-entropy label smoothing (default 0.1)"}),
    (
        "--augment",
        {
            "choices": ["none", "flip", "randaugment", "trivialaugment"],
            "help": "training augmentation; none also turns off random crops and flips (default: trivialaugment)",
        },
    ),
    ("--mixup", {"type": float, "help": "mixup alpha (0 = off)"}),
    ("--cutmix", {"type": float, "help": "cutmix alpha (0 = off)"}),
    ("--ema-decay", {"type": float, "help": "decay of the --ema weight average per step (default 0.9998)"}),
    ("--drop-rate", {"type": float, "help": "dropout before the classifier"}),
    ("--drop-path", {"type": float, "help": "stochastic depth rate"}),
    ("--grad-clip", {"type": float, "help": "max gradient norm"}),
    ("--bn-l1", {"type": float, "help": "L1 penalty on batch-norm scales (network slimming), e.g. 1e-4"}),
    ("--accum-steps", {"type": positive_int, "help": "gradient accumulation steps"}),
    ("--amp", {"choices": ["off", "fp16", "bf16"], "help": "mixed precision (default off)"}),
    ("--unfreeze-at", {"type": int, "help": "epoch at which a frozen backbone is unfrozen"}),
    ("--backbone-lr-scale", {"type": float, "help": "backbone lr relative to the head when fine-tuning (0.1)"}),
    ("--workers", {"type": int, "help": "data loading processes (default 2)"}),
    ("--seed", {"type": int, "help": "seed of the initial weights, the split, shuffling and augmentation (default 0)"}),
    ("--device", {"help": "auto, cpu or cuda"}),
    ("--eval-every", {"type": positive_int, "help": "validate every N epochs and after the last (default 1)"}),
]
_SWITCHES = [
    ("--ema", "keep an EMA of the weights"),
    ("--channels-last", "channels-last memory format (default: on for CPU training)"),
    ("--compile", "torch.compile the model"),
    ("--freeze-backbone", "train only the new head (until --unfreeze-at)"),
    ("--freeze-bn", "freeze BatchNorm statistics (default: on when fine-tuning)"),
    ("--sync-bn", "synchronise BatchNorm across processes"),
    ("--strict", "stop at the first unreadable image instead of skipping it"),
    ("--progress", "show a progress bar (default on)"),
    ("--tensorboard", "write TensorBoard event files (default on)"),
]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="fine-tune or train a classifier", description=__doc__)
    p.add_argument("--config", help="YAML file with any of these settings; flags override it")
    p.add_argument("--resume", action="store_true", default=None, help="continue the run in --out")
    p.add_argument("--json", action="store_true", help="print the results as JSON when done")
    add_recipe_flags(p)
    p.set_defaults(run=run)


def add_recipe_flags(p: argparse.ArgumentParser, only: Collection[str] | None = None) -> None:
    """The recipe's flags (all, or those ``only`` names, e.g. ``{"--epochs"}``), each defaulting to None."""
    for flag, kwargs in _FLAGS:
        if only is None or flag in only:
            p.add_argument(flag, default=None, **kwargs)
    for flag, text in _SWITCHES:
        if only is None or flag in only:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)


def recipe_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe fields given on the command line."""
    from effnet.training.config import TrainConfig

    fields = set(TrainConfig.__dataclass_fields__)
    return {k: v for k, v in vars(args).items() if k in fields and v is not None}


def run(args: argparse.Namespace) -> int:
    from effnet.training.engine import train

    overrides = recipe_overrides(args)
    # With --resume, the run directory's config.yaml supplies every setting not given here.
    result = train(args.config or {}, **overrides)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        best = f"{result.best_top1:.2f}% at epoch {result.best_epoch}" if result.best_top1 is not None else "n/a"
        print(f"done: best validation top-1 {best}; weights in {result.best_path}")
    return 0
