"""What a report is made of: plain dataclasses for each kind of input and the rows of the model table.

Nothing here reads files or draws; ``_load`` fills these in and ``_plots``/``_html`` present them.
Accuracies are top-1 in percent (0-100), as ``effnet train`` and ``effnet bench`` write them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class EpochMetrics:
    """One line of a run's ``metrics.jsonl``."""

    epoch: int
    train_loss: float | None = None
    train_top1: float | None = None
    val_loss: float | None = None
    val_top1: float | None = None
    val_top5: float | None = None
    lr: float | None = None
    images_per_s: float | None = None
    epoch_time_s: float | None = None


@dataclass(frozen=True)
class RunSummary:
    """A run's ``summary.json``, written when training ends."""

    model: str
    params: int | None = None
    flops: int | None = None
    size_mb: float | None = None
    best_val_top1: float | None = None
    best_epoch: int | None = None
    epochs: int | None = None
    classes: tuple[str, ...] = ()
    img_size: int | None = None
    train_time_s: float | None = None


@dataclass(frozen=True)
class CompressionPass:
    """The model after one compression pass (or the uncompressed baseline)."""

    name: str
    params: int | None = None
    flops: int | None = None
    size_mb: float | None = None
    top1: float | None = None
    latency_ms: float | None = None


@dataclass(frozen=True)
class QuantError:
    """How far one layer's quantized output is from its float output."""

    layer: str
    mse: float | None = None
    sqnr_db: float | None = None  # signal-to-quantization-noise ratio; higher is better


@dataclass(frozen=True)
class PruneSensitivity:
    """Top-1 after pruning one layer alone at each ratio."""

    layer: str
    ratios: tuple[float, ...]
    top1: tuple[float, ...]

    @property
    def drop(self) -> float:
        """Accuracy lost between the smallest and the largest ratio (the sensitivity the plot ranks by)."""
        if not self.top1:
            return 0.0
        order = sorted(range(len(self.ratios)), key=self.ratios.__getitem__)
        return self.top1[order[0]] - self.top1[order[-1]]


@dataclass(frozen=True)
class CompressionReport:
    """A ``compression.json``: passes, per-layer quantization error, per-layer pruning sensitivity."""

    source: Path
    model: str
    passes: tuple[CompressionPass, ...] = ()
    quant_error: tuple[QuantError, ...] = ()
    prune_sensitivity: tuple[PruneSensitivity, ...] = ()


@dataclass(frozen=True)
class TrainingRun:
    """A directory written by ``effnet train``; either file may be missing while a run is in progress."""

    source: Path
    summary: RunSummary | None
    epochs: tuple[EpochMetrics, ...]
    compression: CompressionReport | None = None

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
class BenchResult:
    """One measured configuration from ``effnet bench --json``."""

    model: str
    runtime: str = ""
    precision: str = ""
    batch_size: int | None = None
    img_size: int | None = None
    params: int | None = None
    flops: int | None = None
    size_mb: float | None = None
    latency_ms_median: float | None = None
    latency_ms_p90: float | None = None
    throughput_ips: float | None = None
    peak_memory_mb: float | None = None
    top1: float | None = None
    error: str | None = None

    @property
    def variant(self) -> str:
        parts = [self.runtime, self.precision]
        if self.batch_size is not None:
            parts.append(f"batch {self.batch_size}")
        if self.img_size is not None:
            parts.append(f"{self.img_size}px")
        return " ".join(p for p in parts if p)


@dataclass(frozen=True)
class BenchReport:
    """A file written by ``effnet bench --json``: the machine it ran on and one result per configuration."""

    source: Path
    device: str = ""
    threads: int | None = None
    torch_version: str = ""
    cpu: str = ""
    results: tuple[BenchResult, ...] = ()


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
    note: str = ""


@dataclass
class ReportData:
    """Everything the inputs held, in the order given, plus the problems found while reading them."""

    runs: list[TrainingRun] = field(default_factory=list)
    benches: list[BenchReport] = field(default_factory=list)
    compressions: list[CompressionReport] = field(default_factory=list)
    inputs: list[tuple[str, str]] = field(default_factory=list)  # (path as given, what it was read as)
    warnings: list[str] = field(default_factory=list)

    def all_compressions(self) -> list[CompressionReport]:
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
            for r in bench.results:
                rows.append(
                    ModelRow(
                        kind="bench",
                        model=r.model,
                        variant=r.variant,
                        source=str(bench.source),
                        params=r.params,
                        flops=r.flops,
                        size_mb=r.size_mb,
                        top1=r.top1,
                        latency_ms=r.latency_ms_median,
                        throughput_ips=r.throughput_ips,
                        note=f"failed: {r.error}" if r.error else "",
                    )
                )
        for report in self.compressions:
            rows.extend(_pass_rows(report))
        return rows


def _run_row(run: TrainingRun) -> ModelRow:
    top1, best_epoch = run.best_top1
    s = run.summary
    epochs_done = s.epochs if s and s.epochs is not None else (run.epochs[-1].epoch if run.epochs else None)
    variant = "trained"
    if epochs_done is not None:
        variant += f", {epochs_done} epochs"
    if best_epoch is not None:
        variant += f" (best: epoch {best_epoch})"
    return ModelRow(
        kind="run",
        model=run.model,
        variant=variant,
        source=str(run.source),
        params=s.params if s else None,
        flops=s.flops if s else None,
        size_mb=s.size_mb if s else None,
        top1=top1,
        note="" if s else "no summary.json (still training?)",
    )


def _pass_rows(report: CompressionReport) -> list[ModelRow]:
    return [
        ModelRow(
            kind="compression",
            model=report.model,
            variant=p.name,
            source=str(report.source),
            params=p.params,
            flops=p.flops,
            size_mb=p.size_mb,
            top1=p.top1,
            latency_ms=p.latency_ms,
        )
        for p in report.passes
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
