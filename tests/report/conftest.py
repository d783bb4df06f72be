"""The one full report the HTML and browser tests share (drawing plots is the slow part, so it is built once)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.report.factories import (
    NASTY_DIR,
    NASTY_LAYER,
    NASTY_MODEL,
    bench_result,
    compression_doc,
    write_bench,
    write_run,
)

from effnet.report import build_report


@pytest.fixture(scope="session")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every section: a run with compression results, a run still training, a bench file with a failure."""
    root = tmp_path_factory.mktemp("full_report")
    run = write_run(root, name=NASTY_DIR, compression=compression_doc(layer_name=NASTY_LAYER + ".{i}"))
    partial_run = write_run(root, name="run_partial", epochs=3, with_summary=False)
    bench = write_bench(
        root / "bench.json",
        [
            bench_result(NASTY_MODEL, latency_ms_median=5.0, top1=76.0, size_mb=16.0),
            bench_result("efficientnet_b1", latency_ms_median=9.0, top1=79.0, size_mb=31.0),
            bench_result("efficientnet_b2", latency_ms_median=8.0, top1=77.0, size_mb=36.0),
            bench_result("efficientnet_b7", latency_ms_median=None, throughput_ips=None, top1=None, error="OOM"),
        ],
    )
    return build_report([run, partial_run, bench], root / "report.html")
