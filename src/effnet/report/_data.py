"""What a report is made of: plain dataclasses for each kind of input and the rows of the model table.

The files' contents are the schemas of :mod:`effnet.schemas`, the same classes effnet writes them
with; this module adds where each came from and the table built from them. Nothing here reads
files or draws; ``_load`` fills these in and ``_plots``/``_html`` present them.
Accuracies are top-1 in percent (0-100), as ``effnet train`` and ``effnet bench`` write them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from effnet.schemas import BenchReport, BenchResult, CompressionReport, EpochMetrics, RunSummary


@dataclass(frozen=True)
class CompressionFile:
    """A compression JSON and where it was read from; ``report.model`` is always filled in."""

    source: Path
    report: CompressionReport

    @property
    def model(self) -> str:
        return self.report.model or self.source.stem


@dataclass(frozen=True)
class BenchFile:
    """A file written by ``effnet bench --json`` and where it was read from."""

    source: Path
    report: BenchReport


@dataclass(frozen=True)
class TrainingRun:
    """A directory written by ``effnet train``; either file may be missing while a run is in progress."""

    source: Path
    summary: RunSummary | None
    epochs: tuple[EpochMetrics, ...]
    compression: CompressionFile | None = None

    @property
    def model(self) -> str:
        return self.summary.model if self.summary else self.source.name

    @property
    def best_top1(self) -> tuple[float | None, int | None]:
        """(best validation top-1, its epoch): from summary.json, else the best line of metrics.jsonl."""
        if self.summary and self.summary.best_val_top1 is not None:
            return self.summary.best_val_top1, self.summary.best_epoch
        scored = [e for e in self.epochs if e.val_top1 is not None]
        if not scored:
            return None, None
        best = max(scored, key=lambda e: e.val_top1)
        return best.val_top1, best.epoch


@dataclass(frozen=True)
class ModelRow:
    """One line of the model table, and one point in each Pareto plot it has both numbers for."""

    kind: str  # "run", "bench" or "compression": where the numbers came from
    model: str
    variant: str
    source: str
    params: int | None = None
    flops: int | None = None
    size_mb: float | None = None
    top1: float | None = None
    latency_ms: float | None = None
    throughput_ips: float | None = None
    data: str = ""  # what top-1 was measured on
    note: str = ""


@dataclass
class ReportData:
    """Everything the inputs held, in the order given, plus the problems found while reading them."""

    runs: list[TrainingRun] = field(default_factory=list)
    benches: list[BenchFile] = field(default_factory=list)
    compressions: list[CompressionFile] = field(default_factory=list)
    inputs: list[tuple[str, str]] = field(default_factory=list)  # (path as given, what it was read as)
    warnings: list[str] = field(default_factory=list)

    def all_compressions(self) -> list[CompressionFile]:
        """Compression reports given directly and those found inside run directories."""
        return [r.compression for r in self.runs if r.compression] + self.compressions

    def rows(self) -> list[ModelRow]:
        """The model table: each run, its compression passes, each bench result, each standalone pass."""
        rows: list[ModelRow] = []
        for run in self.runs:
            rows.append(_run_row(run))
            if run.compression:
                rows.extend(_pass_rows(run.compression))
        for bench in self.benches:
            rows.extend(_bench_row(bench, r) for r in bench.report.results)
        for report in self.compressions:
            rows.extend(_pass_rows(report))
        return rows


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _run_row(run: TrainingRun) -> ModelRow:
    top1, best_epoch = run.best_top1
    s = run.summary
    epochs_done = s.epochs if s and s.epochs is not None else (len(run.epochs) if run.epochs else None)
    variant = "trained"
    if epochs_done is not None:
        variant += f", {_plural(epochs_done, 'epoch')}"
    if best_epoch is not None:
        variant += f" (best: epoch {best_epoch})"
    data = ""
    if top1 is not None:
        data = f"validation split of {s.data}" if s and s.data else "validation split (data not recorded)"
    return ModelRow(
        kind="run",
        model=run.model,
        variant=variant,
        source=str(run.source),
        params=s.params if s else None,
        flops=s.flops if s else None,
        size_mb=s.size_mb if s else None,
        top1=top1,
        data=data,
        note="" if s else "no summary.json (still training?)",
    )


def bench_variant(r: BenchResult) -> str:
    """How a bench result was measured, e.g. ``onnxruntime fp32 batch 8 224px``."""
    parts = [r.runtime, r.precision]
    if r.batch_size is not None:
        parts.append(f"batch {r.batch_size}")
    if r.img_size:
        parts.append(f"{r.img_size}px")
    return " ".join(p for p in parts if p)


def _bench_row(bench: BenchFile, r: BenchResult) -> ModelRow:
    data = ""
    if r.top1 is not None:
        data = bench.report.data or "not recorded"
        if r.top1_images is not None:
            data += f" ({_plural(r.top1_images, 'image')})"
    return ModelRow(
        kind="bench",
        model=r.model,
        variant=bench_variant(r),
        source=str(bench.source),
        params=r.params,
        flops=r.flops,
        size_mb=r.size_mb,
        top1=r.top1,
        latency_ms=r.latency_ms_median,
        throughput_ips=r.throughput_ips,
        data=data,
        note=f"failed: {r.error}" if r.error else "",
    )


def _pass_rows(compression: CompressionFile) -> list[ModelRow]:
    return [
        ModelRow(
            kind="compression",
            model=compression.model,
            variant=p.name,
            source=str(compression.source),
            params=p.params,
            flops=p.flops,
            size_mb=p.size_mb,
            top1=p.top1,
            latency_ms=p.latency_ms,
            data=(compression.report.data or "not recorded") if p.top1 is not None else "",
        )
        for p in compression.report.passes
    ]


def pareto_frontier(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats, cheapest first: ``(cost, accuracy)``, lower cost is better.

    A point is dominated when another costs no more and is at least as accurate, and is strictly
    better in one of the two; exact duplicates of a frontier point are on the frontier too.

    >>> pareto_frontier([(10.0, 70.0), (5.0, 75.0), (20.0, 80.0), (20.0, 79.0)])
    [1, 2]
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    frontier: list[int] = []
    for i in order:
        if not frontier or points[i][1] > points[frontier[-1]][1] or points[i] == points[frontier[-1]]:
            frontier.append(i)
    return frontier


@dataclass(frozen=True)
class ParetoView:
    """Which table rows one accuracy-vs-cost plot shows, which of them form the frontier, which are left out."""

    cost: str  # the ModelRow field on the x axis: "latency_ms" or "size_mb"
    plotted: list[int]  # indices into the rows
    frontier: list[int]  # indices into the rows, cheapest first
    left_out: list[int]


def pareto_view(rows: Sequence[ModelRow], cost: str) -> ParetoView:
    """Rows with a top-1 and a positive ``cost`` are plotted; the frontier is computed over those."""
    plotted = [i for i, r in enumerate(rows) if r.top1 is not None and (getattr(r, cost) or 0) > 0]
    left_out = [i for i in range(len(rows)) if i not in set(plotted)]
    points = [(getattr(rows[i], cost), rows[i].top1) for i in plotted]
    frontier = [plotted[j] for j in pareto_frontier(points)]
    return ParetoView(cost=cost, plotted=plotted, frontier=frontier, left_out=left_out)
