"""Measuring models: latency, throughput, memory, size, FLOPs and accuracy, interleaved across models.

>>> from effnet.bench import benchmark
>>> report = benchmark(["efficientnet_lite0"], img_size=64, warmup=1, repeats=3, measure_memory=False)
>>> row = report.to_dict()["results"][0]
>>> row["model"], row["runtime"], row["latency_ms_median"] > 0
('efficientnet_lite0', 'torch', True)
"""

from effnet.bench.accuracy import class_to_output, top1_accuracy
from effnet.bench.core import BenchReport, BenchResult, benchmark
from effnet.bench.measure import TensorMemoryTracker, interleaved_timings, percentile
from effnet.bench.reference import REFERENCES, reference_model
from effnet.bench.runners import PRECISIONS, RUNTIMES, OrtRunner, Runner, TorchRunner

__all__ = [
    "PRECISIONS",
    "REFERENCES",
    "RUNTIMES",
    "BenchReport",
    "BenchResult",
    "OrtRunner",
    "Runner",
    "TensorMemoryTracker",
    "TorchRunner",
    "benchmark",
    "class_to_output",
    "interleaved_timings",
    "percentile",
    "reference_model",
    "top1_accuracy",
]
