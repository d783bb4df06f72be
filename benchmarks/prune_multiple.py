"""Which channel multiple makes a pruned EfficientNet fastest in ONNX Runtime on this CPU (not a test).

The same checkpoint loses half its FLOPs with kept widths rounded to multiples of 8 and of 16,
with one global threshold and with per-group ratios; every file is then run round-robin in one
thread, batch 1, and timed two ways: the calling thread's CPU time per run (ONNX Runtime runs a
one-thread session on the caller, so this ignores time spent waiting for a busy core) and wall
time. The medians and the ratios to the unpruned parent are printed as a markdown table.

    python benchmarks/prune_multiple.py --weights runs/fm-lite0-60k/best.safetensors --img-size 224

``--squeeze both`` adds, for every row, the same target spent with the squeeze-excitation widths
left alone (``effnet prune --keep-squeeze``):

    python benchmarks/prune_multiple.py --weights runs/fm-b0-60k/best.safetensors --multiples 16 --squeeze both

Without ``--weights`` a randomly initialised ``--model`` is pruned (its magnitudes are not a trained
network's, so the widths chosen differ from a real run).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

import effnet
from effnet.compress import PassContext, apply_pass
from effnet.compress.prune import PruneChannelsConfig, channel_multiple
from effnet.export import export_model
from effnet.models.summary import count_flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--target", type=float, default=0.5, help="fraction of the FLOPs removed")
    parser.add_argument("--multiples", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument(
        "--squeeze",
        choices=["prune", "keep", "both"],
        default="prune",
        help="whether squeeze-excitation widths are narrowed (prune), left alone (keep) or both",
    )
    parser.add_argument(
        "--plan-size",
        type=int,
        default=None,
        help="input size the FLOPs are counted at when planning (default: --img-size)",
    )
    args = parser.parse_args()

    if args.weights:
        parent = effnet.create_model(weights=args.weights).eval()
    else:
        torch.manual_seed(0)
        parent = effnet.create_model(args.model, num_classes=10).eval()
    size = args.img_size
    models = {"parent": parent}
    squeeze = {"prune": [True], "keep": [False], "both": [True, False]}[args.squeeze]
    plan = PassContext(img_size=args.plan_size or size)
    for scope in ("global", "local"):
        for multiple in args.multiples:
            for include in squeeze:
                config = PruneChannelsConfig(
                    target=args.target, target_kind="flops", scope=scope, round_to=multiple, include_squeeze=include
                )
                label = f"{scope}, multiples of {multiple}" + ("" if include else ", SE widths kept")
                models[label] = apply_pass(parent, config, plan)[0]

    with tempfile.TemporaryDirectory(prefix="effnet-multiple-") as work:
        sessions = {}
        for i, (label, model) in enumerate(models.items()):
            path = Path(work) / f"{i}.onnx"
            export_model(model, "onnx", path, img_size=size)
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            sessions[label] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        image = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)
        cpu: dict[str, list[float]] = {label: [] for label in sessions}
        wall: dict[str, list[float]] = {label: [] for label in sessions}
        for round_ in range(args.repeats + 5):
            for label, session in sessions.items():
                feed = {session.get_inputs()[0].name: image}
                c0, w0 = time.thread_time(), time.perf_counter()
                session.run(None, feed)
                if round_ >= 5:  # warm-up rounds are not counted
                    cpu[label].append(time.thread_time() - c0)
                    wall[label].append(time.perf_counter() - w0)

    base_flops = count_flops(parent, size)
    base_cpu, base_wall = np.median(cpu["parent"]), np.median(wall["parent"])
    print(
        f"\n{_cpu_name()}, {os.cpu_count()} CPUs, torch CPU capability {torch.backends.cpu.get_cpu_capability()} "
        f"(channel_multiple: {channel_multiple('cpu')}), onnxruntime {ort.__version__}, {size} px, batch 1, "
        f"1 thread, median of {args.repeats} round-robin runs\n"
    )
    print("| model | FLOPs kept | CPU ms | CPU ratio | wall ms | wall ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, model in models.items():
        c, w = np.median(cpu[label]), np.median(wall[label])
        flops = count_flops(model, size) / base_flops
        print(f"| {label} | {flops:.1%} | {1000 * c:.2f} | {c / base_cpu:.3f} | {1000 * w:.2f} | {w / base_wall:.3f} |")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
