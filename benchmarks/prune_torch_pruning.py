"""Torch-Pruning against ``effnet prune`` at the same budget and with the same teacher (not a test).

The parent checkpoint is pruned by Torch-Pruning 1.6 (MetaPruner, L2 group magnitude, classifier
ignored, its ratio bisected to the same share of the FLOPs, widths rounded to ``--round-to`` like
effnet's), then recovers exactly as ``effnet prune --finetune-epochs E --distill-alpha A`` recovers
a pruned model: ``effnet.fit`` with the parent's crops and label smoothing, batch norms updating
at momentum 0.1, and the unpruned parent as teacher. It is evaluated on the test split, and timed
against the parent and the given effnet-pruned checkpoints in one interleaved ONNX Runtime run,
batch 1, one thread (median CPU time of the timing thread, and the wall-clock median).

    pip install torch-pruning   # only for this script
    python benchmarks/prune_torch_pruning.py --weights runs/fm-lite0-60k/best.safetensors \\
        --compare runs/prune-lite0-local-kd/model.safetensors --out runs/tp-lite0-kd
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import effnet
from effnet.bench import benchmark
from effnet.compress.runner import _parent_training, _quicken_batchnorm
from effnet.models.summary import count_flops
from effnet.training.distill import DistillationTask


def _sibling(name: str):  # noqa: ANN202 - the other benchmark script, for its Torch-Pruning helper
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--compare", nargs="*", default=[], help="effnet-pruned checkpoints to time alongside")
    parser.add_argument("--target", type=float, default=0.5, help="fraction of the FLOPs removed")
    parser.add_argument("--round-to", type=int, default=16)
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--alpha", type=float, default=0.7)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224], help="timing input sizes")
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--out", default="runs/tp-kd")
    args = parser.parse_args()

    helpers = _sibling("prune_fashion_mnist")
    parent = effnet.create_model(weights=args.weights).eval()
    size = parent.pretrained_meta["preprocessing"]["input_size"]
    pruned = helpers.torch_pruning_copy(parent, 1.0 - args.target, size, round_to=args.round_to)
    pruned.pretrained_meta = parent.pretrained_meta
    out = Path(args.out)
    state = out / "tp_state.safetensors"
    if state.exists():
        pruned.load_state_dict(load_file(str(state)))
    else:
        recipe = {
            **_parent_training(args.weights),
            "out": str(out / "train"),
            "epochs": args.finetune_epochs,
            "workers": 0,
            "tensorboard": False,
            "backbone_lr_scale": 1.0,
            "freeze_bn": False,
            "augment": "flip",
            "warmup_epochs": min(0.3, args.finetune_epochs),
        }
        task = DistillationTask(
            copy.deepcopy(parent), args.temperature, args.alpha, label_smoothing=recipe.get("label_smoothing", 0.1)
        )
        _quicken_batchnorm(pruned)
        result = effnet.fit(pruned, args.data, recipe, task=task)
        pruned = result.model if result.model is not None else pruned
        save_file({k: v.contiguous() for k, v in pruned.state_dict().items()}, str(state))
    pruned.eval()

    top1 = helpers.top1(pruned, args.data, 64)
    flops = count_flops(pruned, size) / count_flops(parent, size)
    print(f"\nTorch-Pruning + teacher: test top-1 {top1:.2f}%, FLOPs kept {flops:.1%}, "
          f"params {sum(p.numel() for p in pruned.parameters()):,}\n")  # fmt: skip
    models = [("parent", parent), ("Torch-Pruning", pruned)]
    models += [(path, effnet.create_model(weights=path).eval()) for path in args.compare]
    print("| model | input | CPU ms | CPU ratio | wall ms | wall ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for px in args.sizes:
        report = benchmark(
            models, runtimes=("onnxruntime",), img_size=px, threads=1, repeats=args.repeats, measure_memory=False
        )
        rows = {r.model: r for r in report.results}
        base = rows["parent"]
        for name, _ in models:
            r = rows[name]
            print(
                f"| {name} | {px} | {r.cpu_ms_median:.2f} | {r.cpu_ms_median / base.cpu_ms_median:.3f} | "
                f"{r.latency_ms_median:.2f} | {r.latency_ms_median / base.latency_ms_median:.3f} |"
            )


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
