"""``effnet prune --weights PATH --data DATA --out DIR``: prune, fine-tune and measure against the original.

Structured pruning removes whole channels (a smaller, faster network); unstructured pruning
zeroes single weights (a smaller file, no faster without sparse kernels). The report in
DIR/report.json gives parameters, FLOPs, size on disk, sparsity, top-1 and batch-1 latency in
PyTorch and ONNX Runtime for both models, measured in one interleaved run. With --sensitivity
the accuracy lost by pruning each stage alone is measured first (DIR/sensitivity.json, a table
on the terminal, a plot in ``effnet report``) and decides how much each stage loses.
"""

from __future__ import annotations

import argparse

from effnet.cli._common import image_size, ms, positive_int, print_json, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="prune a trained model and measure it against the original", description=__doc__)
    p.add_argument("--weights", required=True, help="the trained checkpoint to prune (it is not modified)")
    p.add_argument("--data", required=True, help="its data: image folder, CSV, fashion-mnist or cifar10")
    p.add_argument("--out", required=True, help="output folder: model.safetensors, report.json, bench.json, steps/")
    p.add_argument("--method", choices=["structured", "unstructured"], default="structured", help="default structured")
    p.add_argument(
        "--target", type=float, default=0.5, help="fraction to remove, of --target-kind or of the weights (0.5)"
    )
    p.add_argument(
        "--target-kind",
        choices=["channels", "params", "flops", "latency"],
        default="flops",
        help="what --target counts for structured pruning; latency is measured in ONNX Runtime (default flops)",
    )
    p.add_argument(
        "--importance", choices=["l1", "l2", "bn_scale", "taylor"], default="l2", help="channel ranking (l2)"
    )
    p.add_argument("--scope", choices=["global", "local"], default="global", help="one threshold or one ratio")
    p.add_argument(
        "--sensitivity",
        action="store_true",
        help="measure each stage's accuracy loss first and prune most where it costs least (structured)",
    )
    p.add_argument(
        "--sensitivity-images",
        type=positive_int,
        default=1000,
        help="validation images per sensitivity point (default 1000)",
    )
    p.add_argument(
        "--round-to",
        type=_multiple,
        default="auto",
        help="kept widths are multiples of this; auto (default): 16 on AVX-512 CPUs, else 8 (ONNX Runtime's block)",
    )
    p.add_argument("--include-stem", action="store_true", help="structured: narrow the stem's outputs too")
    p.add_argument("--include-head", action="store_true", help="structured: narrow the head (classifier inputs) too")
    p.add_argument(
        "--keep-squeeze",
        action="store_true",
        help="structured: leave squeeze-excitation widths alone and spend the target on convolutions "
        "(their time barely depends on width at batch 1; measurements in docs/pruning.md)",
    )
    p.add_argument(
        "--latency-aware",
        action="store_true",
        help="structured, global: time each stage's FLOPs in ONNX Runtime first (at --bench-size) and prune "
        "most where a FLOP costs most time (docs/pruning.md)",
    )
    p.add_argument(
        "--max-ratio",
        type=float,
        default=None,
        help="structured, global: no group loses more than this fraction of its channels "
        "(default 0.75 with --latency-aware, else no cap)",
    )
    p.add_argument("--steps", type=positive_int, default=1, help="prune/fine-tune rounds toward the target (1)")
    p.add_argument("--finetune-epochs", type=int, default=0, help="fine-tuning epochs per step (default 0)")
    p.add_argument(
        "--sensitivity-file",
        default=None,
        metavar="JSON",
        help="with --sensitivity: reuse the sensitivity.json of an earlier job on the same checkpoint",
    )
    p.add_argument(
        "--distill-alpha",
        type=float,
        default=0.0,
        help="fine-tune with the unpruned model as teacher, this weight on its soft targets (e.g. 0.7; default 0: off)",
    )
    p.add_argument("--temperature", type=float, default=4.0, help="distillation temperature (default 4)")
    p.add_argument(
        "--teacher",
        default=None,
        metavar="PATH",
        help="with --distill-alpha: distil from this checkpoint instead of the unpruned model",
    )
    p.add_argument(
        "--augment",
        choices=["none", "flip", "randaugment", "trivialaugment"],
        default="flip",
        help="fine-tuning augmentation (default flip)",
    )
    p.add_argument("--data-dir", default=None, help="where a built-in dataset's files are")
    p.add_argument("--subset", type=positive_int, default=None, help="fine-tune on at most this many images")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per batch (default 64)")
    p.add_argument("--lr", type=float, default=None, help="fine-tuning learning rate (default per optimizer)")
    p.add_argument("--img-size", type=image_size, default=None, help="input size (default: the checkpoint's)")
    p.add_argument(
        "--bench-size",
        type=image_size,
        default=None,
        help="input size latency is measured at, e.g. the deployment's 224 (default: --img-size)",
    )
    p.add_argument("--threads", type=positive_int, default=None, help="threads for the latency measurement")
    p.add_argument("--repeats", type=positive_int, default=50, help="timed runs per model and runtime (50)")
    p.add_argument("--workers", type=int, default=2, help="data loading processes (default 2)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--resume", action="store_true", help="continue the job in --out at the step it reached")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print report.json when done")
    p.set_defaults(run=run)


def _multiple(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a whole number, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from effnet.compress.runner import PruneJob, run_prune

    job = PruneJob(
        weights=args.weights,
        data=args.data,
        out=args.out,
        method=args.method,
        target=args.target,
        target_kind=args.target_kind,
        importance=args.importance,
        scope=args.scope,
        round_to=args.round_to,
        include_stem=args.include_stem,
        include_head=args.include_head,
        include_squeeze=not args.keep_squeeze,
        latency_aware=args.latency_aware,
        max_ratio=args.max_ratio,
        bench_size=args.bench_size,
        steps=args.steps,
        finetune_epochs=args.finetune_epochs,
        data_dir=args.data_dir,
        subset=args.subset,
        batch_size=args.batch_size,
        lr=args.lr,
        img_size=args.img_size,
        threads=args.threads,
        repeats=args.repeats,
        workers=args.workers,
        device=args.device,
        sensitivity=args.sensitivity,
        sensitivity_images=args.sensitivity_images,
        sensitivity_file=args.sensitivity_file,
        distill_alpha=args.distill_alpha,
        teacher=args.teacher,
        temperature=args.temperature,
        augment=args.augment,
        resume=args.resume,
        progress=not args.no_progress,
    )
    report = run_prune(job)
    if args.json:
        print_json(report.to_dict())
        return 0
    header = ["", "params", "GFLOPs", "MiB", "sparsity", "top-1", "eager ms", "ORT ms"]
    rows = [
        [
            row.name,
            f"{row.params:,}",
            f"{row.flops / 1e9:.3f}",
            f"{row.size_mb:.2f}",
            f"{100 * (row.sparsity or 0):.1f}%",
            f"{row.top1:.2f}%",
            ms(row.latency_ms_eager),
            ms(row.latency_ms_onnxruntime),
        ]
        for row in report.passes
    ]
    print(table(rows, header))
    if report.prune_sensitivity:
        print(f"sensitivity table and plot: {args.out}/sensitivity.json, effnet report {args.out}/report.json")
    print(f"written to {args.out}/model.safetensors and {args.out}/report.json")
    return 0
