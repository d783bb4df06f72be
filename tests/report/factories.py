"""Synthetic report inputs written under tmp_path: training run directories, bench JSON, compression JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

# Strings a careless page would turn into markup, attributes or mathtext.
NASTY_MODEL = "b0 <img src=x onerror=alert(1)> & \"q\" 'a' $\\frac$"
NASTY_LAYER = "blocks.0<script>alert(1)</script>"
NASTY_DIR = 'run <&> "b0"'


def epoch_record(epoch: int, **overrides: Any) -> dict[str, Any]:
    record = {
        "epoch": epoch,
        "train_loss": 2.0 * math.exp(-epoch / 4) + 0.2,
        "train_top1": 95 - 40 * math.exp(-epoch / 3),
        "val_loss": 2.2 * math.exp(-epoch / 5) + 0.3,
        "val_top1": 90 - 40 * math.exp(-epoch / 4),
        "val_top5": 99 - 20 * math.exp(-epoch / 3),
        "lr": 0.1 * (1 + math.cos(math.pi * epoch / 10)) / 2,
        "images_per_s": 400.0,
        "epoch_time_s": 12.5,
    }
    record.update(overrides)
    return record


def write_run(
    root: Path,
    name: str = "run_b0",
    epochs: int = 6,
    summary: dict[str, Any] | None = None,
    with_summary: bool = True,
    compression: dict[str, Any] | None = None,
    metrics_text: str | None = None,
) -> Path:
    """A run directory like ``effnet train`` writes; ``metrics_text`` replaces the generated metrics.jsonl."""
    run = root / name
    run.mkdir(parents=True)
    if metrics_text is None:
        metrics_text = "".join(json.dumps(epoch_record(e)) + "\n" for e in range(1, epochs + 1))
    (run / "metrics.jsonl").write_text(metrics_text)
    if with_summary:
        data = {
            "model": "efficientnet_b0",
            "params": 4_020_358,
            "flops": 800_000_000,
            "size_mb": 16.2,
            "best_val_top1": 88.5,
            "best_epoch": epochs,
            "epochs": epochs,
            "classes": ["cat", "dog"],
            "img_size": 224,
            "train_time_s": 75.0,
        }
        data.update(summary or {})
        (run / "summary.json").write_text(json.dumps(data))
    if compression is not None:
        (run / "compression.json").write_text(json.dumps(compression))
    return run


def bench_result(model: str, **overrides: Any) -> dict[str, Any]:
    result = {
        "model": model,
        "runtime": "torch",
        "precision": "fp32",
        "batch_size": 1,
        "img_size": 224,
        "params": 5_288_548,
        "flops": 800_000_000,
        "size_mb": 21.2,
        "latency_ms_median": 10.0,
        "latency_ms_p90": 11.0,
        "throughput_ips": 100.0,
        "peak_memory_mb": 80.0,
        "top1": 77.7,
        "error": None,
    }
    result.update(overrides)
    return result


def write_bench(path: Path, results: list[dict[str, Any]]) -> Path:
    doc = {"device": "cpu", "threads": 2, "torch_version": "2.14.1", "cpu": "test cpu", "results": results}
    path.write_text(json.dumps(doc))
    return path


def compression_doc(layers: int = 6, layer_name: str = "features.{i}.conv") -> dict[str, Any]:
    return {
        "passes": [
            {"name": "baseline", "params": 4_020_358, "flops": 800_000_000, "size_mb": 16.2, "top1": 88.5,
             "latency_ms": 12.0},
            {"name": "int8", "params": 4_020_358, "flops": 800_000_000, "size_mb": 4.3, "top1": 88.1,
             "latency_ms": 6.0},
            {"name": "prune 50%", "params": 2_000_000, "flops": 400_000_000, "size_mb": 8.1, "top1": 85.0,
             "latency_ms": 7.5},
        ],
        "quant_error": [
            {"layer": layer_name.format(i=i), "mse": 10 ** (-4 + i / 2), "sqnr_db": 40 - 3 * i} for i in range(layers)
        ],
        "prune_sensitivity": [
            {"layer": layer_name.format(i=i), "ratios": [0.0, 0.25, 0.5, 0.75],
             "top1": [88.5, 88.0 - i, 86.0 - 2 * i, 80.0 - 5 * i]}
            for i in range(layers)
        ],
    }  # fmt: skip
