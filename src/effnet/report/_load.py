"""Reading the report's inputs: which kind each path is, and checking every field against its schema.

A path is a training run directory (``metrics.jsonl`` and/or ``summary.json``, optional
``compression.json``), a bench JSON (an object with ``"results"``) or a compression JSON (an
object with ``"passes"``, ``"quant_error"`` or ``"prune_sensitivity"``). Anything else is an
``EffnetError`` naming the file and what was expected. A file's ``"schema"`` key names its kind
when present (files from before effnet recorded it are recognised by their keys). Every file is
checked against its schema in :mod:`effnet.schemas`, the same classes effnet writes it with:
unknown keys are ignored, so newer writers stay readable; a known key with a value of the wrong
type is an error.

``metrics.jsonl`` is the one file read leniently: it is appended to while training runs, so a
line cut short by an interrupted run is skipped with a warning rather than failing the report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from effnet.errors import EffnetError
from effnet.report._data import BenchFile, CompressionFile, ReportData, TrainingRun
from effnet.schemas import (
    BenchReport,
    CompressionReport,
    EpochMetrics,
    EvalResult,
    Record,
    RunSummary,
    SchemaError,
    describe,
)

EXPECTED = "a training run directory (effnet train), a bench JSON (effnet bench --json) or a compression JSON"
COMPRESSION_KEYS = ("passes", "quant_error", "prune_sensitivity")
RUN_FILES = ("metrics.jsonl", "summary.json")
MAX_INPUT_BYTES = 256 * 2**20  # reports are kilobytes; this only stops a mistaken checkpoint or dataset path


def load_inputs(paths: list[Path]) -> ReportData:
    """Read every input (auto-detecting its kind) into one ``ReportData``; warnings are collected, not raised."""
    if not paths:
        raise EffnetError(f"no inputs given; expected {EXPECTED}")
    data = ReportData()
    seen: set[Path] = set()
    for path in paths:
        path = Path(path)
        if path.resolve() in seen:
            data.warnings.append(f"{path}: given more than once; read once")
            continue
        seen.add(path.resolve())
        if not path.exists():
            raise EffnetError(f"{path}: no such file or directory; expected {EXPECTED}")
        if path.is_dir():
            data.runs.append(_load_run(path, data.warnings))
            data.inputs.append((str(path), "training run"))
            continue
        if path.name in RUN_FILES:
            raise EffnetError(f"{path} is part of a training run; pass its directory {path.parent} instead")
        document = _read_json(path)
        kind = _kind(document, path)
        if kind is BenchReport:
            data.benches.append(BenchFile(path, _parse(BenchReport, document, path)))
            data.inputs.append((str(path), "bench"))
        elif kind is CompressionReport:
            data.compressions.append(_compression(document, path, default_model=_compression_name(path)))
            data.inputs.append((str(path), "compression"))
        elif kind in (RunSummary, EpochMetrics):
            raise EffnetError(f"{path} looks like a run's {_RUN_FILE[kind]}; pass the run directory instead")
        elif kind is EvalResult:
            raise EffnetError(
                f"{path} is an evaluation result (effnet eval --json); the report reads {EXPECTED}, "
                "and a run directory's evaluation comes with its summary.json"
            )
        else:
            raise EffnetError(
                f"{path}: this JSON is not an effnet report; expected a bench JSON (an object with "
                f'"results") or a compression JSON (an object with "passes", "quant_error" or "prune_sensitivity")'
            )
    _drop_compressions_read_with_runs(data)
    return data


_RUN_FILE = {RunSummary: "summary.json", EpochMetrics: "metrics.jsonl"}
_KINDS: dict[str, type[Record]] = {
    cls.SCHEMA: cls for cls in (BenchReport, CompressionReport, RunSummary, EpochMetrics, EvalResult) if cls.SCHEMA
}


def _kind(document: Any, path: Path) -> type[Record] | None:
    """The schema a document declares, else the one its keys suggest (files from before schemas were recorded)."""
    if not isinstance(document, dict):
        return None
    declared = document.get("schema")
    if declared is not None:
        if declared in _KINDS:
            return _KINDS[declared]
        if isinstance(declared, str) and declared.startswith("effnet."):
            raise EffnetError(f"{path}: a {declared} file, which this effnet does not know; upgrade effnet")
        return None
    if "results" in document:
        return BenchReport
    if any(k in document for k in COMPRESSION_KEYS):
        return CompressionReport
    if "model" in document and "best_val_top1" in document:
        return RunSummary
    if "per_class" in document and "confusion" in document:
        return EvalResult
    return None


def _parse(schema: type[Record], document: Any, path: Path, where: str = "") -> Any:
    """``schema.from_dict(document)``, with the file named in the error."""
    try:
        return schema.from_dict(document, where)
    except SchemaError as exc:
        raise EffnetError(f"{path}: {exc}") from None


def _drop_compressions_read_with_runs(data: ReportData) -> None:
    in_runs = {r.compression.source.resolve(): r.source for r in data.runs if r.compression}
    for report in list(data.compressions):
        if report.source.resolve() in in_runs:
            data.compressions.remove(report)
            data.warnings.append(f"{report.source}: already read with run {in_runs[report.source.resolve()]}")


# -- files ------------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    try:
        if not path.is_file():  # a FIFO or device would block or never end
            raise EffnetError(f"{path}: not a regular file; expected {EXPECTED}")
        if path.stat().st_size > MAX_INPUT_BYTES:
            raise EffnetError(f"{path}: {path.stat().st_size / 2**20:.0f} MiB is too large to be a report input")
        raw = path.read_bytes()
    except OSError as exc:
        raise EffnetError(f"{path}: cannot be read ({exc.strerror or exc}); expected {EXPECTED}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise EffnetError(f"{path}: not UTF-8 text (a binary file?); expected {EXPECTED}") from None


def _read_json(path: Path) -> Any:
    text = _read_text(path)
    if not text.strip():
        raise EffnetError(f"{path} is empty; expected {EXPECTED}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise EffnetError(f"{path}: not valid JSON ({_json_problem(exc, text)}); expected {EXPECTED}") from None
    except RecursionError:
        raise EffnetError(f"{path}: JSON nested too deeply; expected {EXPECTED}") from None


def _json_problem(exc: json.JSONDecodeError, text: str) -> str:
    where = f"line {exc.lineno} column {exc.colno}: {exc.msg}"
    return where + "; the file looks truncated" if _cut_short(exc, text) else where


def _cut_short(exc: json.JSONDecodeError, text: str) -> bool:
    """The parser ran off the end: the writer was stopped mid-write, not a typo in the middle."""
    return exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string")


def _compression_name(path: Path) -> str:
    """A standalone compression.json is named after its folder (runs/b0/compression.json -> b0)."""
    return path.parent.name if path.name == "compression.json" and path.parent.name else path.stem


# -- training runs ----------------------------------------------------------------------------


def _load_run(path: Path, warnings: list[str]) -> TrainingRun:
    metrics, summary, compression = (path / n for n in ("metrics.jsonl", "summary.json", "compression.json"))
    if not metrics.is_file() and not summary.is_file():
        try:
            runs_inside = [p for p in path.iterdir() if p.is_dir() and any((p / n).is_file() for n in RUN_FILES)]
        except OSError:
            runs_inside = []
        n = len(runs_inside)
        hint = f"; it holds {n} run director{'ies' if n > 1 else 'y'}, pass those (e.g. {path}/*)" if n else ""
        raise EffnetError(f"{path}: not a training run directory (no metrics.jsonl or summary.json){hint}")
    run_summary = _parse(RunSummary, _read_json(summary), summary) if summary.is_file() else None
    if metrics.is_file():
        epochs = _read_metrics(metrics, warnings)
    else:
        epochs = ()
        warnings.append(f"{path}: no metrics.jsonl, so no training curves for this run")
    model = run_summary.model if run_summary else path.name
    report = _compression(_read_json(compression), compression, model) if compression.is_file() else None
    return TrainingRun(source=path, summary=run_summary, epochs=epochs, compression=report)


def _read_metrics(path: Path, warnings: list[str]) -> tuple[EpochMetrics, ...]:
    text = _read_text(path)
    if not text.strip():
        raise EffnetError(
            f"{path} is empty; expected one JSON object per epoch (did the run stop before its first epoch ended?)"
        )
    by_epoch: dict[int, EpochMetrics] = {}
    skipped: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            cut = ", cut short: was the run stopped mid-write?" if _cut_short(exc, line) else ""
            skipped.append((number, f"not valid JSON (column {exc.colno}: {exc.msg}{cut})"))
            continue
        if not isinstance(record, dict):
            skipped.append((number, f"expected a JSON object, got {describe(record)}"))
            continue
        try:
            epoch = EpochMetrics.from_dict(record)
        except SchemaError as exc:
            skipped.append((number, str(exc)))
            continue
        by_epoch[epoch.epoch] = epoch  # a resumed run repeats epochs: the later line is the one that counts
    if not by_epoch:
        line, why = skipped[0]
        raise EffnetError(
            f"{path}: none of its lines is an epoch record (line {line}: {why}); "
            'expected one JSON object per line like {"epoch": 1, "train_loss": 2.3, ...}'
        )
    if skipped:
        lines = ", ".join(str(n) for n, _ in skipped[:10]) + (", ..." if len(skipped) > 10 else "")
        first_line, first_why = skipped[0]
        warnings.append(
            f"{path}: skipped {len(skipped)} bad line{'s' if len(skipped) > 1 else ''} ({lines}); "
            f"line {first_line}: {first_why}"
        )
    return tuple(by_epoch[e] for e in sorted(by_epoch))


# -- compression ----------------------------------------------------------------------------------


def _compression(document: Any, path: Path, default_model: str) -> CompressionFile:
    if not isinstance(document, dict) or _kind(document, path) is not CompressionReport:
        raise EffnetError(
            f"{path}: not a compression JSON; expected an object with {', '.join(map(repr, COMPRESSION_KEYS))}"
        )
    report = _parse(CompressionReport, document, path)
    report.model = report.model or default_model
    return CompressionFile(path, report)
