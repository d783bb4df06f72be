"""Pruning benchmark for docs/benchmarks.md (not a test): effnet against Torch-Pruning, same model and budget.

1. Fine-tunes an ImageNet-pretrained EfficientNet-Lite0 on Fashion-MNIST with ``effnet.train``.
2. Structured: ``effnet prune`` to half the FLOPs in ``--steps`` steps with fine-tuning; the same
   model pruned by Torch-Pruning (MetaPruner, L2 group magnitude, round_to 8, classifier
   ignored; pruning ratio searched to the same FLOPs) and fine-tuned for the same epochs
   through ``effnet.fit``.
   The same with ``--sensitivity`` (per-stage ratios chosen from the measured sensitivity), and
   both (local scope, and ``--sensitivity``) in one cut followed by all the fine-tuning epochs,
   the schedule Torch-Pruning gets.
3. Unstructured: ``effnet prune --method unstructured`` at ``--sparsity`` with fine-tuning.
4. Prints one markdown table: test top-1 on the official test split, parameters, FLOPs, size on
   disk, and batch-1 latency in eager PyTorch and ONNX Runtime, all models timed in one
   interleaved run at the training size and again at 224 px.

    pip install torch-pruning==1.6.1   # only for this script
    python benchmarks/prune_fashion_mnist.py --subset 12000 --epochs 2 --finetune-epochs 1 --steps 2 \\
        --img-size 64 --out runs/bench-prune
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import effnet
from effnet.bench import benchmark
from effnet.data.datasets import load_data
from effnet.data.images import eval_transform
from effnet.models.summary import count_flops, count_params
from effnet.training.evaluate import evaluate
from effnet.weights.specs import Preprocessing


def top1(model: torch.nn.Module, data: str, batch_size: int) -> float:
    pre = Preprocessing.from_dict(model.pretrained_meta["preprocessing"])
    splits = load_data(data, eval_transform=eval_transform(pre), train_transform=eval_transform(pre))
    loader = torch.utils.data.DataLoader(splits.val, batch_size=batch_size)
    return evaluate(model, loader, list(splits.classes), torch.device("cpu")).top1


def torch_pruning_copy(model: torch.nn.Module, flops_fraction: float, size: int, round_to: int = 8) -> torch.nn.Module:
    """Torch-Pruning's MetaPruner on a copy, its channel ratio bisected to ``flops_fraction`` of the FLOPs."""
    import torch_pruning as tp

    example = torch.zeros(1, 3, size, size)
    base = count_flops(model, size)
    low, high, best = 0.0, 0.9, None
    for _ in range(12):
        ratio = (low + high) / 2
        candidate = copy.deepcopy(model).eval()
        tp.pruner.MetaPruner(
            candidate,
            example,
            importance=tp.importance.GroupMagnitudeImportance(p=2),
            pruning_ratio=ratio,
            ignored_layers=[candidate.classifier],
            round_to=round_to,
        ).step()
        fraction = count_flops(candidate, size) / base
        if fraction <= flops_fraction:
            best, high = candidate, ratio
        else:
            low = ratio
    assert best is not None
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subset", type=int, default=12000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--finetune-epochs", type=int, default=1, help="per pruning step")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--target", type=float, default=0.5, help="fraction of FLOPs removed")
    parser.add_argument("--sparsity", type=float, default=0.8)
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--out", default="runs/bench-prune")
    args = parser.parse_args()
    out = Path(args.out)
    started = time.monotonic()
    common = {
        "data": "fashion-mnist",
        "subset": args.subset,
        "img_size": args.img_size,
        "workers": 0,
        "progress": False,
        "tensorboard": False,
        "batch_size": args.batch_size,
        "crop_pct": 1.0,
    }

    base_run = out / "lite0"
    if not (base_run / "best.safetensors").exists():
        effnet.train(
            {
                **common,
                "model": "efficientnet_lite0",
                "weights": "imagenet",
                "out": str(base_run),
                "epochs": args.epochs,
                "lr": 1e-3,
                "backbone_lr_scale": 1.0,
                "warmup_epochs": 0.3,
                "augment": "flip",
                "crop_scale": [0.7, 1.0],
            }
        )
    weights = base_run / "best.safetensors"
    parent = effnet.create_model(weights=weights).eval()

    prune_argv = [
        "--weights",
        str(weights),
        "--data",
        "fashion-mnist",
        "--subset",
        str(args.subset),
        "--workers",
        "0",
        "--no-progress",
        "--batch-size",
        str(args.batch_size),
        "--threads",
        str(args.threads),
        "--repeats",
        "20",
    ]
    structured, sparse = out / "effnet-structured", out / "effnet-unstructured"
    guided = out / "effnet-sensitivity"
    structured_flags = [
        "--target",
        str(args.target),
        "--target-kind",
        "flops",
        "--steps",
        str(args.steps),
        "--finetune-epochs",
        str(args.finetune_epochs),
    ]
    # One cut, then all the fine-tuning epochs (Torch-Pruning's schedule below).
    one_cut = ["--target", str(args.target), "--target-kind", "flops", "--steps", "1"]
    one_cut += ["--finetune-epochs", str(args.steps * args.finetune_epochs)]
    local_once, guided_once = out / "effnet-local-1step", out / "effnet-sens-1step"
    for folder, extra in (
        (guided, [*structured_flags, "--sensitivity", "--sensitivity-images", "2000"]),
        (local_once, [*one_cut, "--scope", "local"]),
        (guided_once, [*one_cut, "--sensitivity", "--sensitivity-images", "2000"]),
        (
            structured,
            [
                "--target",
                str(args.target),
                "--target-kind",
                "flops",
                "--steps",
                str(args.steps),
                "--finetune-epochs",
                str(args.finetune_epochs),
            ],
        ),
        (
            sparse,
            [
                "--method",
                "unstructured",
                "--target",
                str(args.sparsity),
                "--steps",
                str(args.steps),
                "--finetune-epochs",
                str(args.finetune_epochs),
            ],
        ),
    ):
        if not (folder / "report.json").exists():
            resume = ["--resume"] if folder.exists() else []
            subprocess.run(
                [sys.executable, "-m", "effnet", "prune", *prune_argv, "--out", str(folder), *extra, *resume],
                check=True,
            )

    tp_run = out / "torch-pruning"
    tp_model = torch_pruning_copy(parent, 1.0 - args.target, args.img_size)
    tp_model.pretrained_meta = parent.pretrained_meta
    if not (tp_run / "summary.json").exists():
        effnet.fit(
            tp_model,
            "fashion-mnist",
            {
                **common,
                "out": str(tp_run),
                "epochs": args.steps * args.finetune_epochs,
                "backbone_lr_scale": 1.0,
                "freeze_bn": False,
                "augment": "flip",
                "warmup_epochs": 0.3,
            },
        )
        save_file({k: v.contiguous() for k, v in tp_model.state_dict().items()}, str(tp_run / "tp_state.safetensors"))
    else:
        tp_model.load_state_dict(load_file(str(tp_run / "tp_state.safetensors")))
    tp_model.eval()

    models = {
        "Lite0 (fine-tuned)": (parent, weights),
        "effnet structured": (
            effnet.create_model(weights=structured / "model.safetensors").eval(),
            structured / "model.safetensors",
        ),
        "effnet structured, --sensitivity": (
            effnet.create_model(weights=guided / "model.safetensors").eval(),
            guided / "model.safetensors",
        ),
        "effnet structured, local, one cut": (
            effnet.create_model(weights=local_once / "model.safetensors").eval(),
            local_once / "model.safetensors",
        ),
        "effnet structured, --sensitivity, one cut": (
            effnet.create_model(weights=guided_once / "model.safetensors").eval(),
            guided_once / "model.safetensors",
        ),
        "Torch-Pruning": (tp_model, None),
        "effnet unstructured": (
            effnet.create_model(weights=sparse / "model.safetensors").eval(),
            sparse / "model.safetensors",
        ),
    }
    accuracy = {name: top1(model, "fashion-mnist", 256) for name, (model, _) in models.items()}
    timings = {}
    for size in (args.img_size, 224):
        report = benchmark(
            [(name, model) for name, (model, _) in models.items()],
            runtimes=("torch", "onnxruntime"),
            img_size=size,
            threads=args.threads,
            repeats=args.repeats,
            measure_memory=False,
        )
        for r in report.results:
            timings[(r.model, r.runtime, size)] = r.latency_ms_median
    size_mb = {name: (path.stat().st_size / 2**20 if path else None) for name, (_, path) in models.items()}
    print(
        f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), "
        f"{time.monotonic() - started:.0f} s in all\n"
    )
    print(
        f"| model | test top-1 | params | MFLOPs @{args.img_size} | MiB | eager ms @{args.img_size} | "
        f"ORT ms @{args.img_size} | ORT ratio @{args.img_size} | ORT ms @224 | ORT ratio @224 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    ref = "Lite0 (fine-tuned)"
    for name, (model, _) in models.items():
        ort_small, ort_224 = timings[(name, "onnxruntime", args.img_size)], timings[(name, "onnxruntime", 224)]
        mib = f"{size_mb[name]:.2f}" if size_mb[name] else "-"
        print(
            f"| {name} | {accuracy[name]:.2f}% | {count_params(model):,} "
            f"| {count_flops(model, args.img_size) / 1e6:.1f} "
            f"| {mib} | {timings[(name, 'torch', args.img_size)]:.2f} | {ort_small:.2f} "
            f"| {ort_small / timings[(ref, 'onnxruntime', args.img_size)]:.3f} | {ort_224:.2f} "
            f"| {ort_224 / timings[(ref, 'onnxruntime', 224)]:.3f} |"
        )
    (out / "results.json").write_text(
        json.dumps({"accuracy": accuracy, "timings": {str(k): v for k, v in timings.items()}}, indent=2)
    )


if __name__ == "__main__":
    main()
