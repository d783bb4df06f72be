"""``effnet compress --recipe recipe.yaml --out DIR``: chain pruning, distillation, fine-tuning and quantization.

The recipe names the checkpoint, its data and the steps (see ``examples/compress-lite0.yaml``);
each step runs on the previous step's model in DIR/steps/<n>-<step>/ and keeps its own report.
DIR/report.json has one row per stage (top-1 as ``effnet eval`` measures it: a built-in dataset's
test split, a folder's val/, or every image of a flat folder; size on disk, parameters, FLOPs,
batch-1 ONNX Runtime latency of every stage timed interleaved) plus the
sensitivity and per-layer quantization error the steps measured; ``effnet report DIR/report.json``
draws it. ``--resume`` continues an interrupted recipe at the step it reached.
"""

from __future__ import annotations

import argparse

from effnet.cli._common import ms, print_json, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compress", help="run a compression recipe (prune, distill, quantize) on one model",
                       description=__doc__)  # fmt: skip
    p.add_argument("--recipe", required=True, help="the recipe YAML: weights, data, steps")
    p.add_argument("--out", required=True, help="output folder: steps/, report.json, bench.json")
    p.add_argument("--resume", action="store_true", help="continue the recipe in --out at the step it reached")
    p.add_argument("--json", action="store_true", help="print report.json when done")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
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
