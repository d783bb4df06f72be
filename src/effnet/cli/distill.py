"""``effnet distill --teacher PATH --student NAME|PATH --data DATA --out DIR``: train a student on a teacher's outputs.

The loss is (1 - alpha) cross-entropy on the labels plus alpha T^2 KL between the teacher's and
the student's outputs softened by the temperature T (Hinton et al., 2015); ``--feature S:T``
also pulls a student stage toward a teacher stage (FitNets). The student trains on the same
engine as ``effnet train`` (AMP, torchrun, EMA, checkpoints, --resume) and its run folder has the
same files. ``--cache-teacher`` computes the teacher's logits once per image and keeps them in
the run folder; the student then trains on each image's evaluation transform (no augmentation).
"""

from __future__ import annotations

import argparse
import json

from effnet.cli.train import add_recipe_flags, recipe_overrides

# The training flags distillation shares with effnet train (same meaning, same defaults).
_RECIPE_FLAGS = {
    "--data",
    "--data-dir",
    "--out",
    "--val-split",
    "--subset",
    "--epochs",
    "--batch-size",
    "--img-size",
    "--crop-pct",
    "--interpolation",
    "--mean",
    "--std",
    "--lr",
    "--optimizer",
    "--weight-decay",
    "--warmup-epochs",
    "--min-lr",
    "--label-smoothing",
    "--augment",
    "--mixup",
    "--cutmix",
    "--ema-decay",
    "--drop-rate",
    "--drop-path",
    "--grad-clip",
    "--accum-steps",
    "--amp",
    "--workers",
    "--seed",
    "--device",
    "--eval-every",
    "--ema",
    "--channels-last",
    "--compile",
    "--freeze-bn",
    "--sync-bn",
    "--strict",
    "--progress",
    "--tensorboard",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "distill", help="train a student on a teacher's outputs (knowledge distillation)", description=__doc__
    )
    p.add_argument("--teacher", help="the trained teacher's checkpoint (any effnet checkpoint; not ONNX)")
    p.add_argument("--student", help="a model name (a new network) or a checkpoint path, e.g. a pruned teacher")
    p.add_argument("--student-weights", help="weights for a student given by name, e.g. imagenet")
    p.add_argument("--temperature", type=float, help="softens both outputs (default 4)")
    p.add_argument("--alpha", type=float, help="weight of the teacher's term in [0, 1] (default 0.5)")
    p.add_argument(
        "--feature",
        action="append",
        metavar="S:T",
        dest="features",
        help="also match student stage S to teacher stage T (e.g. stages.3:stages.3); repeatable",
    )
    p.add_argument("--feature-weight", type=float, help="weight of the feature term (default 1)")
    p.add_argument(
        "--cache-teacher",
        action="store_true",
        default=None,
        help="compute the teacher's logits once per image (trains without augmentation)",
    )
    p.add_argument("--config", help="YAML file of training settings; flags override it")
    p.add_argument("--resume", action="store_true", default=None, help="continue the run in --out")
    p.add_argument("--json", action="store_true", help="print the results as JSON when done")
    add_recipe_flags(p, _RECIPE_FLAGS)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from effnet.training.distill import distill

    result = distill(
        args.teacher,
        args.student,
        recipe=args.config,
        student_weights=args.student_weights,
        temperature=args.temperature,
        alpha=args.alpha,
        features=args.features,
        feature_weight=args.feature_weight,
        cache_teacher=args.cache_teacher,
        **recipe_overrides(args),
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        best = f"{result.best_top1:.2f}% at epoch {result.best_epoch}" if result.best_top1 is not None else "n/a"
        print(f"done: the student's best validation top-1 {best}; weights in {result.best_path}")
    return 0
