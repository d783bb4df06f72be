"""``effnet scale-search --data DATA --out DIR``: find compound-scaling coefficients for your data and hardware.

The grid search of Tan & Le (2019), section 3.3: at phi = 1, candidates (alpha, beta, gamma) with
alpha * beta^2 * gamma^2 about 2 are each trained from scratch for a short budget and compared by
validation top-1, parameters, FLOPs and batch-1 latency (all candidates timed interleaved).
Results go to DIR/scale_search.json, each training run to DIR/runs/<k>/.
"""

from __future__ import annotations

import argparse
import json

from effnet.cli._common import positive_int, table, warn


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "scale-search",
        help="search compound-scaling coefficients (alpha, beta, gamma) on your data",
        description=__doc__,
        epilog="Scale the winner with --model <base>_phi<phi>_a<alpha>_b<beta>_g<gamma> in any command.",
    )
    p.add_argument("--data", required=True, help="image folder, CSV of path,label, fashion-mnist or cifar10")
    p.add_argument("--out", required=True, help="an empty (or new) directory for the results and runs")
    p.add_argument("--base", default="efficientnet_b0", help="the phi = 0 network (default: efficientnet_b0)")
    p.add_argument("--grid-step", type=_positive_float, default=0.05, help="grid spacing of alpha, beta, gamma (0.05)")
    p.add_argument("--grid-max", type=_positive_float, default=1.4, help="largest beta and gamma (default 1.4)")
    p.add_argument("--tolerance", type=float, default=0.1, help="keep |alpha*beta^2*gamma^2 - 2| <= this (default 0.1)")
    p.add_argument("--max-candidates", type=positive_int, default=6, help="candidates to train (default 6)")
    p.add_argument("--epochs", type=positive_int, default=1, help="training epochs per candidate (default 1)")
    p.add_argument("--subset", type=positive_int, help="use at most this many training images")
    p.add_argument(
        "--img-scale",
        type=_positive_float,
        help="train each candidate at its resolution times this (default: the base at 64 px, 64/224 for B0)",
    )
    p.add_argument("--batch-size", type=positive_int, default=64, help="training batch size (default 64)")
    p.add_argument("--lr", type=_positive_float, help="peak learning rate (default: the optimizer's)")
    p.add_argument(
        "--augment",
        choices=["none", "flip", "randaugment", "trivialaugment"],
        default="flip",
        help="training augmentation (default: flip)",
    )
    p.add_argument("--data-dir", help="where a built-in dataset's files are")
    p.add_argument("--val-split", type=float, default=0.1, help="fraction held out from a flat folder or CSV (0.1)")
    p.add_argument("--workers", type=int, default=2, help="data loading processes (default 2)")
    p.add_argument("--device", default="auto", help="training device: auto, cpu or cuda (default: auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights, split and shuffling (default 0)")
    p.add_argument(
        "--runtime",
        choices=["onnxruntime", "torch"],
        default="onnxruntime",
        help="latency runtime (default: onnxruntime)",
    )
    p.add_argument("--latency-device", default="cpu", help="where latency is timed (default: cpu)")
    p.add_argument("--threads", type=positive_int, help="intra-op threads for the latency run")
    p.add_argument("--repeats", type=positive_int, default=50, help="timed runs per candidate (default 50)")
    p.add_argument("--resume", action="store_true", help="continue the search in --out, skipping finished runs")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=False, help="progress bars")
    p.add_argument("--json", action="store_true", help="print scale_search.json's content instead of the table")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from effnet.training.scale_search import scale_search

    result = scale_search(
        args.data,
        args.out,
        base=args.base,
        grid_step=args.grid_step,
        grid_max=args.grid_max,
        tolerance=args.tolerance,
        max_candidates=args.max_candidates,
        epochs=args.epochs,
        subset=args.subset,
        img_scale=args.img_scale,
        batch_size=args.batch_size,
        lr=args.lr,
        augment=args.augment,
        data_dir=args.data_dir,
        val_split=args.val_split,
        workers=args.workers,
        device=args.device,
        seed=args.seed,
        runtime=args.runtime,
        latency_device=args.latency_device,
        threads=args.threads,
        repeats=args.repeats,
        resume=args.resume,
        progress=args.progress,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    rows = []
    for c in result.ranked():
        rows.append(
            [
                "*" if c.index == result.best else "",
                str(c.index),
                f"{c.alpha:g}",
                f"{c.beta:g}",
                f"{c.gamma:g}",
                f"{c.product:.3f}",
                str(c.resolution),
                str(c.train_img_size),
                f"{c.params:,}" if c.params is not None else "-",
                f"{c.flops / 1e9:.3f}" if c.flops is not None else "-",
                f"{c.latency_ms:.2f}" if c.latency_ms is not None else "-",
                f"{c.top1:.2f}" if c.top1 is not None else "-",
            ]
        )
    header = ["best", "k", "alpha", "beta", "gamma", "a*b^2*g^2", "px", "train px", "params", "GFLOPs", "ms", "top-1"]
    print(table(rows, header))
    for c in result.candidates:
        if c.latency_error:
            warn(f"candidate {c.index}: latency not measured: {c.latency_error}")
    latency = result.latency
    threads = latency.get("threads")
    print(
        f"latency: batch 1 on {latency.get('runtime')}, {latency.get('device')}, {threads} "
        f"thread{'' if threads == 1 else 's'}, median of {latency.get('repeats')} interleaved runs; "
        "FLOPs and latency at each candidate's own resolution"
    )
    if result.best is not None:
        best = result.candidates[result.best]
        tied = sum(1 for c in result.candidates if c.top1 == best.top1)
        if tied > 1:
            warn(f"{tied} candidates share the best top-1 ({best.top1:.2f}%); fewer FLOPs broke the tie")
        family = f"{result.settings['base']}_phi<phi>_a{best.alpha:g}_b{best.beta:g}_g{best.gamma:g}"
        print(f"best: alpha {best.alpha:g}, beta {best.beta:g}, gamma {best.gamma:g}; its family: --model {family}")
    print(f"results in {result.out}/scale_search.json")
    return 0
