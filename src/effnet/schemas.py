"""The JSON files effnet writes, one schema each, shared by the code that writes them and the code that reads them.

=========================  ==========================  ===========================================
file                       schema                      written by
=========================  ==========================  ===========================================
``effnet bench --json``    :class:`BenchReport`        :func:`effnet.bench.benchmark`
``RUN/summary.json``       :class:`RunSummary`         ``effnet train``, when the run ends
``RUN/metrics.jsonl``      :class:`EpochMetrics`       ``effnet train``, one line per epoch
``RUN/eval_last.json``     :class:`EvalResult`         ``effnet train``; also ``effnet eval --json``
``compression.json``       :class:`CompressionReport`  compression commands (``effnet prune``)
a pass report              :class:`PassReport`         :func:`effnet.compress.apply_pass`
=========================  ==========================  ===========================================

Each is a dataclass whose fields are the file's keys. ``to_dict`` adds ``"schema"`` (the file's
kind, e.g. ``"effnet.bench"``) and ``"schema_version"``; ``from_dict`` reads a file that may come
from anywhere: every known key is checked against its field's type, and a wrong one is a one-line
:class:`SchemaError` naming the key (``results[0].latency_ms_median must be a number or null, got
the string 'fast'``). Unknown keys are ignored, so files from a newer effnet with extra keys stay
readable; files written before schemas existed (no ``"schema"`` key) read like version 1.

>>> row = EpochMetrics(epoch=1, train_loss=1.5)
>>> EpochMetrics.from_dict(row.to_dict()) == row
True
>>> row.to_dict()["schema"]
'effnet.metrics'
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from effnet.errors import EffnetError

R = TypeVar("R", bound="Record")


class SchemaError(EffnetError):
    """A JSON document does not fit its schema; the message names the key and what it should hold."""


class Record:
    """Base of every schema: a dataclass whose typed fields are the JSON keys.

    Field types are limited to what JSON holds: ``str``, ``int``, ``float``, ``bool``, ``Any``,
    another ``Record``, ``list[...]`` of those, and ``X | None``. A field without a default is
    required unless it may be null; a key that is missing or null takes the field's default.
    ``metadata={"key": ...}`` names a key that is not a valid Python identifier (``"class"``).
    """

    SCHEMA: ClassVar[str | None] = None  # a file's kind; None for records nested inside a file
    VERSION: ClassVar[int] = 1

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, ``schema`` and ``schema_version`` first for a file's top-level record."""
        out: dict[str, Any] = {}
        if self.SCHEMA:
            out["schema"], out["schema_version"] = self.SCHEMA, self.VERSION
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            out[_key(f)] = _dump(getattr(self, f.name))
        return out

    @classmethod
    def from_dict(cls: type[R], data: Any, where: str = "") -> R:
        """Read and check an untrusted JSON object; ``where`` prefixes key names in errors (``results[0]``)."""
        if not isinstance(data, dict):
            raise SchemaError(f"{where or 'the document'} must be a JSON object, got {describe(data)}")
        if cls.SCHEMA:
            _check_kind(cls, data, where)
        hints = _hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            key = _key(f)
            name = f"{where}.{key}" if where else key
            value = data.get(key)
            if value is None:
                if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                    continue  # the field's default
                if not _optional(hints[f.name])[1]:
                    raise SchemaError(f"{name} is missing")
            values[f.name] = _parse(hints[f.name], value, name)
        record = cls(**values)
        record.check(where)
        return record

    def check(self, where: str) -> None:
        """Constraints between fields, after each field's type is checked; raises :class:`SchemaError`."""


def describe(value: Any) -> str:
    """A short, safe description of a JSON value for an error message."""
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


def _check_kind(cls: type[Record], data: dict, where: str) -> None:
    kind, version = data.get("schema"), data.get("schema_version")
    if kind is None:
        return  # written before effnet recorded schemas: read as version 1
    prefix = f"{where}: " if where else ""
    if kind != cls.SCHEMA:
        raise SchemaError(f"{prefix}schema is {describe(kind)}, expected {cls.SCHEMA!r}")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        raise SchemaError(f"{prefix}schema_version must be a whole number, got {describe(version)}")
    if version is not None and version > cls.VERSION:
        raise SchemaError(
            f"{prefix}{kind} version {version} was written by a newer effnet (this one reads up to "
            f"version {cls.VERSION}); upgrade effnet"
        )


def _key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def _dump(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_dump(v) for v in value]
    return value


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _optional(hint: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (hint, False)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0], True
    return hint, False


def _expected(hint: Any) -> str:
    inner, optional = _optional(hint)
    text = _EXPECTED.get(inner)
    if text is None and typing.get_origin(inner) is list:
        (item,) = typing.get_args(inner)
        text = "a list of " + _plural(item)
    if text is None and (_is_record(inner) or typing.get_origin(inner) is dict):
        text = "an object"
    return (text or "a JSON value") + (" or null" if optional else "")


_EXPECTED = {str: "a string", int: "a whole number", float: "a number", bool: "true or false"}


def _plural(hint: Any) -> str:
    if typing.get_origin(hint) is list:
        return "lists of " + _plural(typing.get_args(hint)[0])
    if _is_record(hint):
        return "objects"
    return {str: "strings", int: "whole numbers", float: "numbers", bool: "booleans"}.get(hint, "values")


def _parse(hint: Any, value: Any, name: str) -> Any:
    inner, optional = _optional(hint)
    if value is None:
        if optional:
            return None
        raise SchemaError(f"{name} must be {_expected(hint)}, got null")
    if inner is Any:
        return value
    if inner is str and isinstance(value, str):
        return value
    if inner is bool and isinstance(value, bool):
        return value
    if inner is int and not isinstance(value, bool):
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    if inner is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        # A diverged loss is written as NaN or Infinity; where null is allowed it reads as "no value".
        return None if optional and not math.isfinite(value) else float(value)
    if typing.get_origin(inner) is list and isinstance(value, list):
        (item,) = typing.get_args(inner)
        if _is_record(item):
            return [item.from_dict(v, f"{name}[{i}]") for i, v in enumerate(value)]
        try:
            return [_parse(item, v, f"{name}[{i}]") for i, v in enumerate(value)]
        except SchemaError:
            pass  # a list of plain values that do not fit: one message about the list, below
    if typing.get_origin(inner) is dict and isinstance(value, dict):
        return {str(k): v for k, v in value.items()}  # plain JSON data (pass settings and details)
    if _is_record(inner):
        return inner.from_dict(value, name)
    raise SchemaError(f"{name} must be {_expected(hint)}, got {describe(value)}")


def _is_record(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, Record)


# -- effnet bench --------------------------------------------------------------------------------


@dataclass
class BenchResult(Record):
    """One (model, runtime, batch size) measurement of ``effnet bench``.

    ``flops`` are per image (2 per multiply-add, PyTorch's counter); ``size_mb`` is the weights
    as stored (the ONNX file for ONNX Runtime) and ``peak_memory_mb`` weights plus peak
    activations, both in MiB; ``top1`` is a percentage. Fields a runtime cannot tell are null.
    """

    model: str
    runtime: str = ""  # torch | compile | onnxruntime
    precision: str = ""  # fp32 | fp16 | bf16
    batch_size: int | None = None
    img_size: int = 0  # 0 when a model failed before its input size was known
    params: int | None = None
    flops: int | None = None
    size_mb: float | None = None
    latency_ms_median: float | None = None
    latency_ms_p90: float | None = None
    throughput_ips: float | None = None
    peak_memory_mb: float | None = None
    top1: float | None = None
    error: str | None = None  # one line: why this candidate was not measured
    source: str = "effnet"  # effnet | torchvision | timm | onnx | module
    latency_ms_min: float | None = None
    repeats: int = 0  # timed runs behind the latencies
    top1_images: int | None = None  # readable --data images that top1 is over
    cpu_ms_median: float | None = None  # one CPU thread: the timing thread's CPU time per run (median)


@dataclass
class BenchReport(Record):
    """A file written by ``effnet bench --json``: the machine, the settings and every result."""

    SCHEMA: ClassVar[str] = "effnet.bench"

    device: str = ""
    threads: int | None = None
    torch_version: str = ""
    cpu: str = ""
    results: list[BenchResult] = field(default_factory=list)
    onnxruntime_version: str | None = None
    warmup: int = 0
    repeats: int = 0
    interleaved: bool = True
    consecutive: int = 1  # runs of a candidate back to back in each round of the interleaving
    data: str | None = None  # the --data folder top-1 was measured on
    data_skipped: list[str] = field(default_factory=list)  # unreadable --data images, one line each


# -- effnet train and eval ----------------------------------------------------------------------


@dataclass
class EpochMetrics(Record):
    """One line of a run's ``metrics.jsonl`` (epochs counted from 1; accuracies in percent).

    Keys a training callback adds to the epoch's row (``sparsity``, ``params``, ...) travel in
    ``extra`` and are written beside the standard keys; only numbers, strings, booleans and null.
    """

    SCHEMA: ClassVar[str] = "effnet.metrics"

    epoch: int
    train_loss: float | None = None
    train_top1: float | None = None
    val_loss: float | None = None
    val_top1: float | None = None
    val_top5: float | None = None
    lr: float | None = None
    images_per_s: float | None = None
    epoch_time_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> EpochMetrics:
        """The record of an epoch's row, keys beyond the standard ones going to ``extra``."""
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        extra = {k: v for k, v in row.items() if k not in known}
        bad = [k for k, v in extra.items() if not (v is None or isinstance(v, str | int | float | bool))]
        if bad:
            raise SchemaError(f"metrics key {bad[0]!r} must hold a number, text, true/false or null")
        return cls(**{k: v for k, v in row.items() if k in known}, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        extra = out.pop("extra", {}) or {}
        out.update({k: v for k, v in extra.items() if k not in out})
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "") -> EpochMetrics:
        record = super().from_dict(data, where)
        known = {f.name for f in dataclasses.fields(cls)} | {"schema", "schema_version"}
        record.extra = {
            k: v for k, v in data.items() if k not in known and (v is None or isinstance(v, str | int | float | bool))
        }
        return record


@dataclass
class RunSummary(Record):
    """A run's ``summary.json``, written when training ends."""

    SCHEMA: ClassVar[str] = "effnet.summary"

    model: str
    params: int | None = None
    flops: int | None = None
    size_mb: float | None = None  # best.safetensors in MiB, as effnet bench
    best_val_top1: float | None = None
    best_epoch: int | None = None
    epochs: int | None = None
    classes: list[str] = field(default_factory=list)
    img_size: int | None = None
    train_time_s: float | None = None
    skipped_images: int | None = None
    data: str | None = None  # where the images came from, e.g. "folder:/data/pets (90/10 split, seed 0)"


@dataclass
class ClassAccuracy(Record):
    """Accuracy on the images of one class."""

    name: str = field(metadata={"key": "class"})
    accuracy: float | None  # percent; null when the data has no image of this class
    n: int


@dataclass
class EvalResult(Record):
    """Accuracy of a model on a dataset: ``effnet eval --json`` and a run's ``eval_last.json``."""

    SCHEMA: ClassVar[str] = "effnet.eval"

    top1: float  # percent
    top5: float  # percent (equals top1 ... 100 when there are fewer than 5 classes)
    loss: float
    n: int
    per_class: list[ClassAccuracy]
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    skipped: list[str] = field(default_factory=list)  # one line per unreadable or missing file left out


# -- compression --------------------------------------------------------------------------------


@dataclass
class CompressionPass(Record):
    """The model after one compression pass (or the uncompressed baseline)."""

    name: str
    params: int | None = None
    flops: int | None = None
    size_mb: float | None = None  # the file on disk, MiB
    top1: float | None = None
    latency_ms: float | None = None  # on the deployment runtime (ONNX Runtime when measured there)
    latency_ms_eager: float | None = None  # batch 1, eager PyTorch
    latency_ms_onnxruntime: float | None = None  # batch 1, ONNX Runtime
    sparsity: float | None = None  # share of zeros among the prunable weights
    runtime: str | None = None  # the runtime latency_ms was measured on, where a pass chose one


@dataclass
class QuantError(Record):
    """How far one layer's quantized output is from its float output."""

    layer: str
    mse: float | None = None
    sqnr_db: float | None = None  # signal-to-quantization-noise ratio; higher is better
    output_kl: float | None = None  # the network's output divergence with this layer alone quantized
    kept_float: bool = False  # left in float (--keep-float or --auto-float)


@dataclass
class PruneSensitivity(Record):
    """Top-1 after pruning one layer alone at each ratio."""

    layer: str
    ratios: list[float]
    top1: list[float]

    def check(self, where: str) -> None:
        if len(self.ratios) != len(self.top1):
            name = f"{where}.top1" if where else "top1"
            raise SchemaError(f"{name} must be a list as long as ratios ({len(self.ratios)}), got {len(self.top1)}")

    @property
    def drop(self) -> float:
        """Accuracy lost between the smallest and the largest ratio (the sensitivity the report ranks by)."""
        if not self.top1:
            return 0.0
        order = sorted(range(len(self.ratios)), key=self.ratios.__getitem__)
        return self.top1[order[0]] - self.top1[order[-1]]


@dataclass
class ModelStats(Record):
    """A model's size as a pass report states it."""

    params: int
    nonzero_params: int
    size_bytes: int  # bytes of its state dict's tensors (what a safetensors file holds, less the header)


@dataclass
class PassReport(Record):
    """What one compression pass did: its settings, the model before and after, pass-specific details."""

    SCHEMA: ClassVar[str] = "effnet.pass"

    name: str
    config: dict[str, Any]
    before: ModelStats
    after: ModelStats
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)  # plain data only


@dataclass
class CompressionReport(Record):
    """A ``compression.json``: passes, per-layer quantization error, per-layer pruning sensitivity."""

    SCHEMA: ClassVar[str] = "effnet.compression"

    model: str | None = None  # null: the report names it after the file's folder
    passes: list[CompressionPass] = field(default_factory=list)
    quant_error: list[QuantError] = field(default_factory=list)
    prune_sensitivity: list[PruneSensitivity] = field(default_factory=list)
    data: str | None = None  # the data top-1 was measured on


FILE_SCHEMAS: dict[str, type[Record]] = {
    cls.SCHEMA: cls
    for cls in (BenchReport, EpochMetrics, RunSummary, EvalResult, CompressionReport, PassReport)
    if cls.SCHEMA
}

__all__ = [
    "FILE_SCHEMAS",
    "BenchReport",
    "BenchResult",
    "ClassAccuracy",
    "CompressionPass",
    "CompressionReport",
    "EpochMetrics",
    "EvalResult",
    "ModelStats",
    "PassReport",
    "PruneSensitivity",
    "QuantError",
    "Record",
    "RunSummary",
    "SchemaError",
    "describe",
]
