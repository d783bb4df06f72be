"""Reading inputs: auto-detection, schemas, lenient metrics.jsonl, and one-line errors for everything else."""

import json

import pytest
from tests.report.factories import bench_result, compression_doc, epoch_record, write_bench, write_run

from effnet.errors import EffnetError
from effnet.report import load_inputs


def load_error(paths) -> str:
    with pytest.raises(EffnetError) as info:
        load_inputs(paths)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_each_kind_is_detected(tmp_path):
    run = write_run(tmp_path, compression=compression_doc())
    bench = write_bench(tmp_path / "bench.json", [bench_result("efficientnet_b0")])
    (tmp_path / "lite0_passes.json").write_text(json.dumps(compression_doc()))
    data = load_inputs([run, bench, tmp_path / "lite0_passes.json"])
    assert [kind for _, kind in data.inputs] == ["training run", "bench", "compression"]
    assert data.warnings == []
    (loaded,) = data.runs
    assert loaded.summary.model == "efficientnet_b0" and [e.epoch for e in loaded.epochs] == list(range(1, 7))
    assert loaded.compression.model == "efficientnet_b0" and len(loaded.compression.report.quant_error) == 6
    bench_report = data.benches[0].report
    assert bench_report.results[0].latency_ms_median == 10.0 and bench_report.cpu == "test cpu"
    assert data.compressions[0].model == "lite0_passes"  # a standalone file is named after itself
    assert data.compressions[0].report.prune_sensitivity[1].drop == pytest.approx(88.5 - 75.0)


def test_a_truncated_last_line_is_skipped_with_a_warning(tmp_path):
    lines = [json.dumps(epoch_record(e)) for e in (1, 2, 3)]
    run = write_run(tmp_path, metrics_text="\n".join(lines) + '\n{"epoch": 4, "train_lo')
    data = load_inputs([run])
    assert [e.epoch for e in data.runs[0].epochs] == [1, 2, 3]
    (warning,) = data.warnings
    assert "metrics.jsonl" in warning and "skipped 1 bad line (4)" in warning and "cut short" in warning


def test_bad_lines_in_the_middle_are_counted_and_named(tmp_path):
    text = "\n".join(
        [json.dumps(epoch_record(1)), "not json", "[1, 2]", json.dumps({"lr": 0.1}), "", json.dumps(epoch_record(2))]
    )
    data = load_inputs([write_run(tmp_path, metrics_text=text)])
    assert [e.epoch for e in data.runs[0].epochs] == [1, 2]
    (warning,) = data.warnings
    assert "skipped 3 bad lines (2, 3, 4)" in warning and "line 2: not valid JSON" in warning


def test_a_resumed_run_keeps_the_later_record_of_a_repeated_epoch(tmp_path):
    records = [epoch_record(1), epoch_record(2, val_top1=10.0), epoch_record(2, val_top1=70.0), epoch_record(3)]
    run = write_run(tmp_path, metrics_text="".join(json.dumps(r) + "\n" for r in records))
    epochs = load_inputs([run]).runs[0].epochs
    assert [e.epoch for e in epochs] == [1, 2, 3] and epochs[1].val_top1 == 70.0


def test_a_diverged_loss_reads_as_missing(tmp_path):
    text = '{"epoch": 1, "train_loss": NaN, "val_loss": Infinity, "val_top1": null}\n'
    (epoch,) = load_inputs([write_run(tmp_path, metrics_text=text)]).runs[0].epochs
    assert epoch.train_loss is None and epoch.val_loss is None and epoch.val_top1 is None


def test_a_run_in_progress_without_summary_is_read(tmp_path):
    run = write_run(tmp_path, name="b3_running", with_summary=False)
    (loaded,) = load_inputs([run]).runs
    assert loaded.summary is None and loaded.model == "b3_running"


def test_a_run_without_metrics_warns_that_it_has_no_curves(tmp_path):
    run = write_run(tmp_path)
    (run / "metrics.jsonl").unlink()
    data = load_inputs([run])
    assert data.runs[0].epochs == () and "no metrics.jsonl" in data.warnings[0]


def test_missing_path(tmp_path):
    message = load_error([tmp_path / "nope"])
    assert str(tmp_path / "nope") in message and "no such file" in message and "training run directory" in message


def test_empty_metrics_is_an_error(tmp_path):
    message = load_error([write_run(tmp_path, metrics_text="")])
    assert "metrics.jsonl is empty" in message and "one JSON object per epoch" in message


def test_metrics_without_a_single_good_line_is_an_error(tmp_path):
    message = load_error([write_run(tmp_path, metrics_text="oops\n{}\n")])
    assert "none of its lines is an epoch record" in message and "line 1" in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"hello": "world"}', "not an effnet report"),
        ("[1, 2, 3]", "not an effnet report"),
        (
            '{"results": [{"model": "b0", "latency_ms_median": "fast"}]}',
            "results[0].latency_ms_median must be a number",
        ),
        ('{"results": [{"latency_ms_median": 3}]}', "results[0].model is missing"),
        ('{"results": {"model": "b0"}}', "results must be a list of objects"),
        ('{"passes": [{"name": "int8", "params": 1.5}]}', "passes[0].params must be a whole number"),
        ('{"prune_sensitivity": [{"layer": "a", "ratios": [0, 0.5], "top1": [1]}]}', "as long as ratios"),
        ('{"quant_error": [{"layer": 3, "mse": 0.1, "sqnr_db": 20}]}', "quant_error[0].layer must be a string"),
        ('{"model": "b0", "best_val_top1": 80, "epochs": 3}', "pass the run directory"),
        ('{"device": "cpu", "results": [', "column 31: Expecting value; the file looks truncated"),
        ("", "is empty"),
    ],
)
def test_json_that_is_not_a_report(tmp_path, content, expected):
    path = tmp_path / "input.json"
    path.write_text(content)
    message = load_error([path])
    assert message.startswith(str(path)) and expected in message


def test_truncated_json_file_says_so(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"device": "cpu", "results": [bench_result("b0")]})[:-20])
    assert "looks truncated" in load_error([path])


def test_binary_file(tmp_path):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(b"\x00\xff\xfe" * 100)
    assert "not UTF-8 text" in load_error([path])


def test_a_file_of_a_run_points_to_its_directory(tmp_path):
    run = write_run(tmp_path)
    message = load_error([run / "metrics.jsonl"])
    assert "part of a training run" in message and str(run) in message


def test_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "empty").mkdir()
    assert "not a training run directory" in load_error([tmp_path / "empty"])
    write_run(tmp_path / "runs", name="a")
    write_run(tmp_path / "runs", name="b")
    assert "it holds 2 run directories" in load_error([tmp_path / "runs"])


def test_a_broken_summary_is_an_error_not_a_guess(tmp_path):
    run = write_run(tmp_path)
    (run / "summary.json").write_text('{"model": 5}')
    message = load_error([run])
    assert "summary.json" in message and "model must be a string" in message


def test_an_input_given_twice_or_inside_a_given_run_is_read_once(tmp_path):
    run = write_run(tmp_path, compression=compression_doc())
    data = load_inputs([run, run / "compression.json", run])
    assert len(data.runs) == 1 and data.compressions == []
    assert len(data.warnings) == 2 and "given more than once" in data.warnings[0]
    assert "already read with run" in data.warnings[1]


def test_no_inputs():
    assert "no inputs" in load_error([])
