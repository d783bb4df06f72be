"""One schema per JSON file: round trips, one-line errors for untrusted input, and files from before schemas."""

import json
import math

import pytest

from effnet.schemas import (
    FILE_SCHEMAS,
    BenchReport,
    BenchResult,
    ClassAccuracy,
    CompressionPass,
    CompressionReport,
    EpochMetrics,
    EvalResult,
    ModelStats,
    PassReport,
    PruneSensitivity,
    QuantError,
    RunSummary,
    SchemaError,
)

EXAMPLES = [
    BenchReport(device="cpu", threads=2, results=[BenchResult("b0", "torch", "fp32", 1, 224, latency_ms_median=3.5)]),
    EpochMetrics(epoch=1, train_loss=1.25, val_top1=50.0),
    RunSummary(model="efficientnet_b0", classes=["cat", "dog"], best_val_top1=90.0, data="folder:/x"),
    EvalResult(80.0, 100.0, 0.5, 10, [ClassAccuracy("cat", 80.0, 5), ClassAccuracy("dog", None, 0)], [[4, 1], [0, 0]]),
    CompressionReport(
        model="b0",
        passes=[CompressionPass("int8", size_mb=4.0)],
        quant_error=[QuantError("conv", mse=1e-4)],
        prune_sensitivity=[PruneSensitivity("conv", [0.0, 0.5], [80.0, 70.0])],
    ),
    EpochMetrics(epoch=2, train_loss=1.0, extra={"sparsity": 0.5, "note": "pruned"}),
    PassReport(
        "fold_batchnorm", {"pass": "fold_batchnorm", "version": 1}, ModelStats(10, 9, 40), ModelStats(9, 9, 36), 0.5
    ),
]


@pytest.mark.parametrize("record", EXAMPLES, ids=lambda r: type(r).__name__)
def test_every_file_round_trips_through_json_with_its_schema_first(record):
    document = json.loads(json.dumps(record.to_dict()))
    assert list(document)[:2] == ["schema", "schema_version"]
    assert FILE_SCHEMAS[document["schema"]] is type(record) and document["schema_version"] == 1
    assert type(record).from_dict(document) == record


def test_every_file_kind_has_a_schema():
    assert set(FILE_SCHEMAS) == {
        "effnet.bench",
        "effnet.metrics",
        "effnet.summary",
        "effnet.eval",
        "effnet.compression",
        "effnet.pass",
    }


def test_files_written_before_schemas_still_read():
    old = {"model": "b0", "best_val_top1": 80, "epochs": 3, "classes": ["a"]}  # no "schema" key
    assert RunSummary.from_dict(old) == RunSummary(model="b0", best_val_top1=80.0, epochs=3, classes=["a"])
    assert EvalResult.from_dict(
        {"top1": 1, "top5": 2, "loss": 0.1, "n": 1, "per_class": [{"class": "a", "accuracy": 1, "n": 1}],
         "confusion": [[1]]}
    ).per_class == [ClassAccuracy("a", 1.0, 1)]  # fmt: skip


def test_unknown_keys_are_ignored_and_nan_reads_as_missing_where_null_is_allowed():
    summary = RunSummary.from_dict({"model": "b0", "new_key": {"x": 1}})
    assert summary == RunSummary(model="b0")
    # A metrics line keeps keys a training callback added (numbers, text), beside the standard ones.
    line = EpochMetrics.from_dict({"epoch": 3.0, "train_loss": math.nan, "val_loss": math.inf, "new_metric": 1})
    assert line == EpochMetrics(epoch=3, extra={"new_metric": 1})
    assert line.to_dict()["new_metric"] == 1


@pytest.mark.parametrize(
    ("schema", "document", "message"),
    [
        (BenchReport, [1], "the document must be a JSON object, got a list"),
        (BenchReport, {"results": [{"model": "b0", "top1": "high"}]}, "results[0].top1 must be a number or null, got"),
        (BenchReport, {"results": [{"top1": 1.0}]}, "results[0].model is missing"),
        (BenchReport, {"results": "none"}, "results must be a list of objects, got the string 'none'"),
        (BenchReport, {"threads": True}, "threads must be a whole number or null, got a boolean"),
        (BenchReport, {"data_skipped": [1]}, "data_skipped must be a list of strings, got a list"),
        (EpochMetrics, {"epoch": 1.5}, "epoch must be a whole number, got 1.5"),
        (RunSummary, {"model": "b0", "classes": "cat"}, "classes must be a list of strings"),
        (EvalResult, {**EXAMPLES[3].to_dict(), "confusion": [[1, "x"]]}, "confusion must be a list of lists of whole"),
        (
            EvalResult,
            {**EXAMPLES[3].to_dict(), "per_class": [{"accuracy": 1, "n": 1}]},
            "per_class[0].class is missing",
        ),
        (
            CompressionReport,
            {"prune_sensitivity": [{"layer": "a", "ratios": [0], "top1": []}]},
            "as long as ratios (1)",
        ),
        (BenchReport, {"schema": "effnet.summary"}, "schema is the string 'effnet.summary', expected 'effnet.bench'"),
        (BenchReport, {"schema": "effnet.bench", "schema_version": 2}, "written by a newer effnet"),
    ],
)
def test_untrusted_input_fails_in_one_line_naming_the_key(schema, document, message):
    with pytest.raises(SchemaError) as info:
        schema.from_dict(document)
    assert message in str(info.value) and "\n" not in str(info.value)
