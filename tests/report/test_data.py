"""The Pareto frontier and the model table, on plain data (no files, no plots)."""

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from effnet.report import (
    BenchFile,
    BenchReport,
    BenchResult,
    CompressionFile,
    CompressionPass,
    CompressionReport,
    EpochMetrics,
    ModelRow,
    ReportData,
    RunSummary,
    TrainingRun,
    pareto_frontier,
    pareto_view,
)


def dominated(p: tuple[float, float], q: tuple[float, float]) -> bool:
    """q beats p: it costs no more, is no less accurate, and differs."""
    return q[0] <= p[0] and q[1] >= p[1] and q != p


def test_frontier_of_a_small_set():
    points = [(10.0, 70.0), (5.0, 75.0), (20.0, 80.0), (20.0, 79.0), (30.0, 80.0), (4.0, 60.0)]
    assert pareto_frontier(points) == [5, 1, 2]


def test_frontier_edge_cases():
    assert pareto_frontier([]) == []
    assert pareto_frontier([(1.0, 50.0)]) == [0]
    assert pareto_frontier([(1.0, 50.0), (1.0, 50.0)]) == [0, 1]  # identical points are both optimal
    assert pareto_frontier([(1.0, 50.0), (1.0, 60.0)]) == [1]  # same cost: only the more accurate
    assert pareto_frontier([(1.0, 60.0), (2.0, 60.0)]) == [0]  # same accuracy: only the cheaper


@given(st.lists(st.tuples(st.integers(1, 8).map(float), st.integers(0, 8).map(float)), max_size=30))
def test_frontier_is_exactly_the_undominated_points(points):
    frontier = pareto_frontier(points)
    expected = {i for i, p in enumerate(points) if not any(dominated(p, q) for q in points)}
    assert set(frontier) == expected
    assert [points[i][0] for i in frontier] == sorted(points[i][0] for i in frontier)


def row(top1, latency, size=None, kind="bench"):
    return ModelRow(kind=kind, model="m", variant="", source="x", top1=top1, latency_ms=latency, size_mb=size)


def test_pareto_view_leaves_out_rows_without_both_numbers():
    rows = [row(80.0, 10.0), row(None, 5.0), row(85.0, None), row(70.0, 0.0), row(82.0, 12.0), row(60.0, 20.0)]
    view = pareto_view(rows, "latency_ms")
    assert view.plotted == [0, 4, 5]
    assert view.left_out == [1, 2, 3]  # no top-1, no latency, a latency of zero
    assert view.frontier == [0, 4]


def test_rows_cover_runs_passes_bench_results_and_standalone_passes():
    run = TrainingRun(
        source=Path("runs/b0"),
        summary=RunSummary(model="efficientnet_b0", size_mb=16.0, best_val_top1=91.0, best_epoch=7, epochs=8),
        epochs=(EpochMetrics(epoch=1, val_top1=50.0),),
        compression=CompressionFile(
            Path("runs/b0/compression.json"), CompressionReport("efficientnet_b0", [CompressionPass("int8")])
        ),
    )
    bench = BenchFile(
        Path("bench.json"),
        BenchReport(
            results=[
                BenchResult("efficientnet_b1", "onnxruntime", "int8", 8, 240, latency_ms_median=3.0),
                BenchResult("efficientnet_b7", error="out of memory"),
            ],
        ),
    )
    alone = CompressionFile(
        Path("lite0.json"), CompressionReport("lite0", [CompressionPass("prune", top1=70.0, latency_ms=2.0)])
    )
    rows = ReportData(runs=[run], benches=[bench], compressions=[alone]).rows()
    assert [(r.kind, r.model, r.variant) for r in rows] == [
        ("run", "efficientnet_b0", "trained, 8 epochs (best: epoch 7)"),
        ("compression", "efficientnet_b0", "int8"),
        ("bench", "efficientnet_b1", "onnxruntime int8 batch 8 240px"),
        ("bench", "efficientnet_b7", ""),
        ("compression", "lite0", "prune"),
    ]
    assert rows[0].top1 == 91.0 and rows[0].size_mb == 16.0
    assert rows[2].latency_ms == 3.0
    assert rows[3].note == "failed: out of memory"


def test_a_run_without_summary_takes_its_name_and_best_accuracy_from_metrics():
    epochs = tuple(EpochMetrics(epoch=e, val_top1=v) for e, v in [(1, 40.0), (2, 65.0), (3, 60.0)])
    run = TrainingRun(source=Path("runs/still_going"), summary=None, epochs=epochs)
    assert run.model == "still_going"
    assert run.best_top1 == (65.0, 2)
    (only,) = ReportData(runs=[run]).rows()
    assert only.top1 == 65.0 and "no summary.json" in only.note and only.variant == "trained, 3 epochs (best: epoch 2)"
