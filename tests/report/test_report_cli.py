"""``effnet report``: a thin layer over effnet.report, with one-line errors and warnings on stderr."""

import json

from tests.report.factories import bench_result, epoch_record, write_bench, write_run

from effnet.cli import main


def test_cli_writes_the_report_and_prints_warnings(tmp_path, capsys):
    run = write_run(tmp_path, metrics_text=json.dumps(epoch_record(1)) + "\n{")
    bench = write_bench(tmp_path / "bench.json", [bench_result("efficientnet_b0", top1=None)])
    out = tmp_path / "report.html"
    assert main(["report", str(run), str(bench), "--out", str(out), "--title", "B0 study"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == f"wrote {out} (2 model rows from 2 inputs)"
    assert captured.err.startswith("effnet: warning: ") and "skipped 1 bad line (2)" in captured.err
    assert "<title>B0 study</title>" in out.read_text()


def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "notes.json").write_text('{"todo": []}')
    out = tmp_path / "report.html"
    assert main(["report", str(tmp_path / "notes.json"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"effnet: error: {tmp_path / 'notes.json'}: ")
    assert not out.exists()


def test_cli_refuses_to_write_over_an_input(tmp_path, capsys):
    bench = write_bench(tmp_path / "bench.json", [bench_result("efficientnet_b0")])
    assert main(["report", str(bench), "--out", str(bench)]) == 1
    assert "must end in .html" in capsys.readouterr().err
    assert json.loads(bench.read_text())["results"][0]["model"] == "efficientnet_b0"
