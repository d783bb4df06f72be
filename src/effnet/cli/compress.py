"""``effnet compress``: chain pruning, distillation, fine-tuning and quantization, by recipe or by search.

``--recipe recipe.yaml --out DIR`` runs the steps a recipe lists (see
``examples/compress-lite0.yaml``); each step runs on the previous step's model in
DIR/steps/<n>-<step>/ and keeps its own report.

``--auto --weights PATH --data DATA --max-accuracy-drop 1.0 --objective latency --out DIR``
searches instead: int8 of the original, then structured pruning to rising FLOPs targets
(sensitivity-guided, fine-tuned, each also quantized) until the drop is exceeded; the fastest
(or smallest) candidate within the drop is copied to DIR/model.*, every candidate is in
DIR/report.json and DIR/auto.json.

DIR/report.json has one row per stage or candidate (top-1 as ``effnet eval`` measures it: a
built-in dataset's test split, a folder's val/, or every image of a flat folder; size on disk,
parameters, FLOPs, batch-1 latency of every row timed interleaved in ONNX Runtime) plus the
sensitivity and per-layer quantization error measured on the way; ``effnet report DIR/report.json``
draws it, with the accuracy/latency Pareto front. ``--resume`` continues an interrupted run.
"""

from __future__ import annotations

import argparse

from effnet.cli._common import image_size, ms, positive_int, print_json, table
from effnet.errors import EffnetError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compress", help="compress a model by recipe or by accuracy-aware search",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--recipe", help="the recipe YAML: weights, data, steps")
    how.add_argument("--auto", action="store_true", help="search for the best model within --max-accuracy-drop")
    p.add_argument("--out", required=True, help="output folder: report.json, bench.json and the steps or candidates")
    p.add_argument("--resume", action="store_true", help="continue the recipe or search in --out where it stopped")
    p.add_argument("--json", action="store_true", help="print report.json (--auto: auto.json) when done")
    auto = p.add_argument_group("--auto")
    auto.add_argument("--weights", help="the trained checkpoint to compress (it is not modified)")
    auto.add_argument("--data", help="its data: image folder, CSV, fashion-mnist or cifar10")
    auto.add_argument("--max-accuracy-drop", type=float, default=1.0, help="top-1 points allowed (default 1.0)")
    auto.add_argument("--objective", choices=["latency", "size"], default="latency", help="what to minimise")
    auto.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the model will run (cpu)")
    auto.add_argument(
        "--targets",
        type=float,
        nargs="+",
        default=[0.3, 0.5, 0.7],
        help="fractions of FLOPs to prune, mildest first (default 0.3 0.5 0.7)",
    )
    auto.add_argument("--finetune-epochs", type=int, default=1, help="fine-tuning epochs after pruning (1)")
    auto.add_argument(
        "--distill-alpha",
        type=float,
        default=0.0,
        help="fine-tune pruned candidates with the original as teacher, this weight on it (default 0: off)",
    )
    auto.add_argument("--no-sensitivity", action="store_true", help="prune by global L2 ranking only")
    auto.add_argument("--no-quantize", action="store_true", help="no int8 candidates")
    auto.add_argument(
        "--no-per-tensor", action="store_true", help="int8 candidates with per-channel weight scales only"
    )
    auto.add_argument(
        "--family",
        nargs="+",
        default=[],
        metavar="NAME[:WEIGHTS]",
        help="smaller models to train on the same data instead, e.g. efficientnet_lite0:imagenet",
    )
    auto.add_argument("--family-epochs", type=positive_int, default=2, help="their training epochs (default 2)")
    auto.add_argument(
        "--lite-epochs",
        type=int,
        default=0,
        help="also try EfficientNet-Lite's swap (ReLU6, no squeeze-excitation) fine-tuned this many epochs with "
        "the original as teacher; pruning then starts from it if it is within the drop (default 0: off)",
    )
    auto.add_argument("--data-dir", default=None, help="where a built-in dataset's files are")
    auto.add_argument("--subset", type=positive_int, default=None, help="fine-tune on at most this many images")
    auto.add_argument("--batch-size", type=positive_int, default=64, help="images per batch (default 64)")
    auto.add_argument("--img-size", type=image_size, default=None, help="input size (default: the checkpoint's)")
    auto.add_argument("--threads", type=positive_int, default=None, help="threads for the latency measurement")
    auto.add_argument("--repeats", type=positive_int, default=50, help="timed runs per candidate (50)")
    auto.add_argument(
        "--runtime",
        choices=["onnxruntime", "auto"],
        default="onnxruntime",
        help="where a chosen int8 file runs: ONNX Runtime, which every candidate is compared in (default), or "
        "auto: measure it in ONNX Runtime and OpenVINO here and record the faster accurate one",
    )
    auto.add_argument("--workers", type=int, default=2, help="data loading processes (default 2)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.auto:
        return _run_auto(args)
    if args.weights or args.data:
        raise EffnetError("--weights and --data go with --auto; a recipe names its own weights and data")
    from effnet.compress.recipe import load_recipe, run_recipe

    report = run_recipe(load_recipe(args.recipe), args.out, resume=args.resume)
    if args.json:
        print_json(report.to_dict())
        return 0
    base = report.passes[0].latency_ms_onnxruntime
    rows = [
        [
            row.name,
            f"{row.params:,}" if row.params else "-",
            f"{row.size_mb:.2f}",
            f"{row.top1:.2f}%" if row.top1 is not None else "-",
            ms(row.latency_ms_onnxruntime),
            f"{row.latency_ms_onnxruntime / base:.2f}x" if base and row.latency_ms_onnxruntime else "-",
        ]
        for row in report.passes
    ]
    print(table(rows, ["stage", "params", "MiB", "top-1", "ORT ms", "vs original"]))
    print(f"written to {args.out}/report.json (effnet report {args.out}/report.json draws it)")
    return 0


def _run_auto(args: argparse.Namespace) -> int:
    from effnet.compress.auto import AutoJob, run_auto

    for name in ("weights", "data"):
        if not getattr(args, name):
            raise EffnetError(f"--auto needs --{name}")
    job = AutoJob(
        weights=args.weights,
        data=args.data,
        out=args.out,
        max_accuracy_drop=args.max_accuracy_drop,
        objective=args.objective,
        device=args.device,
        targets=tuple(args.targets),
        finetune_epochs=args.finetune_epochs,
        distill_alpha=args.distill_alpha,
        sensitivity=not args.no_sensitivity,
        quantize=not args.no_quantize,
        per_tensor=not args.no_per_tensor,
        family=tuple(args.family),
        family_epochs=args.family_epochs,
        lite_epochs=args.lite_epochs,
        data_dir=args.data_dir,
        subset=args.subset,
        batch_size=args.batch_size,
        img_size=args.img_size,
        workers=args.workers,
        threads=args.threads,
        repeats=args.repeats,
        runtime=args.runtime,
        resume=args.resume,
    )
    result = run_auto(job)
    if args.json:
        print_json(result.to_dict())
        return 0
    base = next(c for c in result.candidates if c.name == "original")
    rows = [
        [
            c.name + (" *" if c.name == result.chosen else ""),
            f"{c.top1:.2f}%" if c.top1 is not None else "-",
            f"{0.0 - c.drop:+.2f}" if c.drop is not None else "-",
            f"{c.size_mb:.2f}" if c.size_mb is not None else "-",
            ms(c.latency_ms),
            f"{c.latency_ms / base.latency_ms:.2f}x" if c.latency_ms and base.latency_ms else "-",
            "yes" if c.feasible else "no",
        ]
        for c in result.candidates
    ]
    runtime = "ORT ms" if result.device == "cpu" else "cuda ms"
    print(table(rows, ["candidate", "top-1", "points", "MiB", runtime, "vs original", "within"]))
    print(result.summary())
    print(f"written to {args.out}/model.* and {args.out}/auto.json (effnet report {args.out}/report.json draws it)")
    return 0
