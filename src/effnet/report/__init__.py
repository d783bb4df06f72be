"""``effnet report``: one self-contained HTML page comparing trained, benchmarked and compressed models.

The page holds a table of every model and variant, accuracy-vs-latency and accuracy-vs-size plots
with the Pareto frontier marked (the trade-off view of EfficientNet's compound scaling, Tan & Le,
2019, https://arxiv.org/abs/1905.11946, Figs. 1 and 5), training curves, and per-layer
quantization error and pruning sensitivity when the inputs have them.

Example (paths from ``effnet train``, ``effnet bench --json`` and a compression pass)::

    from pathlib import Path
    from effnet.report import build_report

    build_report([Path("runs/b0"), Path("bench.json")], Path("report.html"))
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from effnet.errors import EffnetError
from effnet.report._data import (
    BenchFile,
    CompressionFile,
    ModelRow,
    ParetoView,
    ReportData,
    TrainingRun,
    pareto_frontier,
    pareto_view,
)
from effnet.report._html import render_html
from effnet.report._load import load_inputs
from effnet.schemas import (
    BenchReport,
    BenchResult,
    CompressionPass,
    CompressionReport,
    EpochMetrics,
    PruneSensitivity,
    QuantError,
    RunSummary,
)

__all__ = [
    "BenchFile",
    "BenchReport",
    "BenchResult",
    "CompressionFile",
    "CompressionPass",
    "CompressionReport",
    "EpochMetrics",
    "ModelRow",
    "ParetoView",
    "PruneSensitivity",
    "QuantError",
    "ReportData",
    "ReportWarning",
    "RunSummary",
    "TrainingRun",
    "build_report",
    "check_output",
    "load_inputs",
    "pareto_frontier",
    "pareto_view",
    "render_html",
    "write_report",
]

HTML_SUFFIXES = (".html", ".htm")


class ReportWarning(UserWarning):
    """Something in an input was skipped (e.g. a truncated line of metrics.jsonl); the report was still written."""


def build_report(inputs: list[Path], out: Path, *, title: str | None = None) -> Path:
    """Read ``inputs`` (run directories, bench JSON, compression JSON) and write the HTML report to ``out``.

    Problems that do not stop the report (skipped lines) are issued as ``ReportWarning`` and listed
    in the page; bad inputs raise ``EffnetError``. Returns ``out``.
    """
    inputs = [Path(p) for p in inputs]
    check_output(Path(out), inputs)
    data = load_inputs(inputs)
    for message in data.warnings:
        warnings.warn(message, ReportWarning, stacklevel=2)
    return write_report(data, Path(out), title=title)


def write_report(data: ReportData, out: Path, *, title: str | None = None) -> Path:
    """Render ``data`` and write it to ``out`` atomically (a reader never sees half a page)."""
    out = Path(out)
    check_output(out, [Path(p) for p, _ in data.inputs])
    page = render_html(data, title or "effnet report")
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        partial.write_text(page, encoding="utf-8")
        os.replace(partial, out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise EffnetError(f"--out {out}: cannot write the report ({exc.strerror or exc})") from None
    return out


def check_output(out: Path, inputs: list[Path]) -> None:
    """Refuse an output path that would destroy something: a folder, an input, or an existing non-HTML file."""
    out = Path(out)
    if out.is_dir():
        raise EffnetError(f"--out {out} is a folder; give a file name such as {out / 'report.html'}")
    if out.suffix.lower() not in HTML_SUFFIXES:
        raise EffnetError(f"--out {out}: the report is HTML, so its name must end in .html")
    target = out.resolve()
    for path in inputs:
        if Path(path).resolve() == target:
            raise EffnetError(f"--out {out} is one of the inputs; choose another file name")
    if not out.parent.is_dir():
        raise EffnetError(f"--out {out}: folder {out.parent} does not exist; create it first")
    if out.exists() and not _looks_like_html(out):
        raise EffnetError(f"--out {out} exists and is not an HTML page; refusing to overwrite it, choose another name")


def _looks_like_html(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(512)
    except OSError:
        return False
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return not head or start.startswith((b"<!doctype html", b"<html"))
