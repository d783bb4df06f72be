"""Reading the report's inputs: which kind each path is, and checking every field against its schema.

A path is a training run directory (``metrics.jsonl`` and/or ``summary.json``, optional
``compression.json``), a bench JSON (an object with ``"results"``) or a compression JSON (an
object with ``"passes"``, ``"quant_error"`` or ``"prune_sensitivity"``). Anything else is an
``EffnetError`` naming the file and what was expected. Unknown keys are ignored, so newer
writers stay readable; a known key with a value of the wrong type is an error.

``metrics.jsonl`` is the one file read leniently: it is appended to while training runs, so a
line cut short by an interrupted run is skipped with a warning rather than failing the report.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from effnet.errors import EffnetError
from effnet.report._data import (
    BenchReport,
    BenchResult,
    CompressionPass,
    CompressionReport,
    EpochMetrics,
    PruneSensitivity,
    QuantError,
    ReportData,
    RunSummary,
    TrainingRun,
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
        if isinstance(document, dict) and "results" in document:
            data.benches.append(_bench(document, path))
            data.inputs.append((str(path), "bench"))
        elif isinstance(document, dict) and any(k in document for k in COMPRESSION_KEYS):
            data.compressions.append(_compression(document, path, default_model=_compression_name(path)))
            data.inputs.append((str(path), "compression"))
        elif isinstance(document, dict) and "model" in document and "best_val_top1" in document:
            raise EffnetError(f"{path} looks like a run's summary.json; pass the run directory instead")
        else:
            raise EffnetError(
                f"{path}: this JSON is not an effnet report; expected a bench JSON (an object with "
                f'"results") or a compression JSON (an object with "passes", "quant_error" or "prune_sensitivity")'
            )
    _drop_compressions_read_with_runs(data)
    return data


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
    run_summary = _summary(_read_json(summary), summary) if summary.is_file() else None
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
        try:
            epoch = _epoch(_Fields(record, "the line"))
        except EffnetError as exc:
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


def _epoch(f: _Fields) -> EpochMetrics:
    return EpochMetrics(
        epoch=f.integer("epoch", required=True),
        train_loss=f.number("train_loss"),
        train_top1=f.number("train_top1"),
        val_loss=f.number("val_loss"),
        val_top1=f.number("val_top1"),
        val_top5=f.number("val_top5"),
        lr=f.number("lr"),
        images_per_s=f.number("images_per_s"),
        epoch_time_s=f.number("epoch_time_s"),
    )


def _summary(document: Any, path: Path) -> RunSummary:
    f = _Fields(document, "the file", path)
    classes = f.get("classes")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        f.fail("classes", "a list of strings", classes)
    return RunSummary(
        model=f.text("model", required=True),
        params=f.integer("params"),
        flops=f.integer("flops"),
        size_mb=f.number("size_mb"),
        best_val_top1=f.number("best_val_top1"),
        best_epoch=f.integer("best_epoch"),
        epochs=f.integer("epochs"),
        classes=tuple(classes or ()),
        img_size=f.integer("img_size"),
        train_time_s=f.number("train_time_s"),
    )


# -- bench and compression --------------------------------------------------------------------


def _bench(document: dict, path: Path) -> BenchReport:
    f = _Fields(document, "the file", path)
    results = []
    for r in f.objects("results"):
        results.append(
            BenchResult(
                model=r.text("model", required=True),
                runtime=r.text("runtime") or "",
                precision=r.text("precision") or "",
                batch_size=r.integer("batch_size"),
                img_size=r.integer("img_size"),
                params=r.integer("params"),
                flops=r.integer("flops"),
                size_mb=r.number("size_mb"),
                latency_ms_median=r.number("latency_ms_median"),
                latency_ms_p90=r.number("latency_ms_p90"),
                throughput_ips=r.number("throughput_ips"),
                peak_memory_mb=r.number("peak_memory_mb"),
                top1=r.number("top1"),
                error=r.text("error"),
            )
        )
    return BenchReport(
        source=path,
        device=f.text("device") or "",
        threads=f.integer("threads"),
        torch_version=f.text("torch_version") or "",
        cpu=f.text("cpu") or "",
        results=tuple(results),
    )


def _compression(document: Any, path: Path, default_model: str) -> CompressionReport:
    if not isinstance(document, dict) or not any(k in document for k in COMPRESSION_KEYS):
        raise EffnetError(
            f"{path}: not a compression JSON; expected an object with {', '.join(map(repr, COMPRESSION_KEYS))}"
        )
    f = _Fields(document, "the file", path)
    passes = tuple(
        CompressionPass(
            name=p.text("name", required=True),
            params=p.integer("params"),
            flops=p.integer("flops"),
            size_mb=p.number("size_mb"),
            top1=p.number("top1"),
            latency_ms=p.number("latency_ms"),
        )
        for p in f.objects("passes")
    )
    quant = tuple(
        QuantError(layer=q.text("layer", required=True), mse=q.number("mse"), sqnr_db=q.number("sqnr_db"))
        for q in f.objects("quant_error")
    )
    prune = []
    for s in f.objects("prune_sensitivity"):
        ratios, top1 = s.numbers("ratios"), s.numbers("top1")
        if len(ratios) != len(top1):
            s.fail("top1", f"a list as long as ratios ({len(ratios)})", top1)
        prune.append(PruneSensitivity(layer=s.text("layer", required=True), ratios=ratios, top1=top1))
    return CompressionReport(
        source=path,
        model=f.text("model") or default_model,
        passes=passes,
        quant_error=quant,
        prune_sensitivity=tuple(prune),
    )


# -- field checking ---------------------------------------------------------------------------


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        shown = value if len(value) <= 20 else value[:20] + "..."
        return f"the string {shown!r}"
    if isinstance(value, (int, float)):
        return repr(value)
    return "a list" if isinstance(value, list) else "an object"


class _Fields:
    """Typed access to one JSON object; a wrong type fails with the file, the field's path and what was expected."""

    def __init__(self, obj: Any, where: str, path: Path | None = None) -> None:
        self.where, self.path = where, path
        if not isinstance(obj, dict):
            raise EffnetError(f"{self._prefix()}{where} must be a JSON object, got {_describe(obj)}")
        self.obj = obj

    def _prefix(self) -> str:
        return f"{self.path}: " if self.path else ""

    def _name(self, key: str) -> str:
        return key if self.where in ("the file", "the line") else f"{self.where}.{key}"

    def fail(self, key: str, expected: str, got: Any) -> None:
        raise EffnetError(f"{self._prefix()}{self._name(key)} must be {expected}, got {_describe(got)}")

    def get(self, key: str, required: bool = False) -> Any:
        value = self.obj.get(key)
        if value is None and required:
            raise EffnetError(f"{self._prefix()}{self._name(key)} is missing")
        return value

    def text(self, key: str, required: bool = False) -> str | None:
        value = self.get(key, required)
        if value is not None and not isinstance(value, str):
            self.fail(key, "a string", value)
        return value

    def number(self, key: str) -> float | None:
        """A float; NaN and infinity (a diverged loss) read as null, which plots as a gap."""
        value = self.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(key, "a number or null", value)
        return float(value) if math.isfinite(value) else None

    def integer(self, key: str, required: bool = False) -> int | None:
        value = self.get(key, required)
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, "a whole number or null", value)
        return value

    def numbers(self, key: str) -> tuple[float, ...]:
        value = self.get(key, required=True)
        ok = isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        if not ok:
            self.fail(key, "a list of numbers", value)
        return tuple(float(v) for v in value)

    def objects(self, key: str) -> list[_Fields]:
        value = self.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(key, "a list of objects", value)
        return [_Fields(item, f"{self._name(key)}[{i}]", self.path) for i, item in enumerate(value)]
