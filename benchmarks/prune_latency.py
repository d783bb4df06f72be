"""Structured pruning latency at matched FLOPs: effnet against Torch-Pruning, one interleaved run (not a test).

torchvision's EfficientNet-B0 (random weights: latency does not depend on them) is pruned by
Torch-Pruning's MetaPruner (L2 group magnitude, round_to 8, classifier ignored) at
``--tp-ratio``; effnet's ``prune_channels`` then removes the same share of FLOPs from the same
weights (loaded into effnet's B0), globally and per group. All are exported to ONNX and timed in
ONNX Runtime (and eager PyTorch) at batch 1, interleaved, so the ratios hold on a busy machine.

    pip install torch-pruning==1.6.1   # only for this script
    python benchmarks/prune_latency.py --tp-ratio 0.28 --threads 1 --repeats 100
"""

from __future__ import annotations

import argparse
import copy

import torch
import torchvision

import effnet
from effnet.bench import benchmark
from effnet.compress import PassContext, apply_pass
from effnet.models.summary import count_flops, count_params
from effnet.weights.formats import convert
from effnet.weights.io import Checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tp-ratio", type=float, default=0.28, help="Torch-Pruning's channel pruning ratio")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()
    import torch_pruning as tp

    torch.manual_seed(0)
    size = args.img_size
    reference = torchvision.models.efficientnet_b0().eval()
    pruned_tp = copy.deepcopy(reference)
    tp.pruner.MetaPruner(
        pruned_tp,
        torch.zeros(1, 3, size, size),
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=args.tp_ratio,
        ignored_layers=[pruned_tp.classifier],
        round_to=8,
    ).step()
    pruned_tp.eval()
    flops_kept = count_flops(pruned_tp, size) / count_flops(reference, size)

    ours = effnet.create_model("efficientnet_b0")
    _, converted = convert(Checkpoint(tensors=reference.state_dict(), metadata={}, path="torchvision"), None)
    ours.load_state_dict(converted.state_dict)
    ours.eval()
    candidates = [("torchvision B0", reference), ("Torch-Pruning", pruned_tp), ("effnet B0", ours)]
    for scope in ("global", "local"):
        pruned, _ = apply_pass(
            ours, "prune_channels", PassContext(img_size=size), target=1 - flops_kept, target_kind="flops", scope=scope
        )
        candidates.append((f"effnet {scope}", pruned))
    report = benchmark(
        candidates,
        runtimes=("onnxruntime", "torch"),
        img_size=size,
        threads=args.threads,
        repeats=args.repeats,
        measure_memory=False,
    )
    times = {(r.model, r.runtime): r.latency_ms_median for r in report.results}
    print("| model | FLOPs kept | params kept | ORT ms | ORT ratio | eager ms | eager ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, model in candidates:
        parent = reference if name.startswith(("torchvision", "Torch")) else ours
        ort, eager = times[(name, "onnxruntime")], times[(name, "torch")]
        print(
            f"| {name} | {count_flops(model, size) / count_flops(parent, size):.3f} "
            f"| {count_params(model) / count_params(parent):.3f} | {ort:.2f} "
            f"| {ort / times[(_root(name), 'onnxruntime')]:.3f} | {eager:.2f} "
            f"| {eager / times[(_root(name), 'torch')]:.3f} |"
        )


def _root(name: str) -> str:
    return "torchvision B0" if name.startswith(("torchvision", "Torch")) else "effnet B0"


if __name__ == "__main__":
    main()
