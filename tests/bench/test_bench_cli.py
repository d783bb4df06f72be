import json

import pytest
from tests.export.tiny import IMG, tiny_effnet

from effnet.cli import main
from effnet.schemas import BenchReport
from effnet.weights.io import write_checkpoint

REQUIRED = {
    "model": str,
    "runtime": str,
    "precision": str,
    "batch_size": int,
    "img_size": int,
    "params": (int, type(None)),
    "flops": (int, type(None)),
    "size_mb": (float, type(None)),
    "latency_ms_median": (float, type(None)),
    "latency_ms_p90": (float, type(None)),
    "throughput_ips": (float, type(None)),
    "peak_memory_mb": (float, type(None)),
    "top1": (float, type(None)),
    "error": (str, type(None)),
}


def _checkpoint(tmp_path):
    model = tiny_effnet()
    return str(write_checkpoint(tmp_path / "tiny.safetensors", model.state_dict(), {"arch": model.config.to_dict()}))


def test_bench_json_follows_the_schema_the_report_reads(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path)
    args = ["bench", ckpt, "efficientnet_b99", "--batch-sizes", "1,2", "--repeats", "3", "--warmup", "1"]
    assert main([*args, "--threads", "1", "--runtime", "torch,onnxruntime", "--json"]) == 1  # one model is unknown
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert (report["schema"], report["schema_version"]) == ("effnet.bench", 1)
    assert BenchReport.from_dict(report).to_dict() == report  # the schema effnet report reads it with
    assert {"device": str, "threads": int, "torch_version": str, "cpu": str}.items() <= {
        k: type(v) for k, v in report.items()
    }.items()
    assert report["device"] == "cpu" and report["threads"] == 1
    assert len(report["results"]) == 2 * 2 * 2  # models x runtimes x batch sizes
    for row in report["results"]:
        for key, kind in REQUIRED.items():
            assert isinstance(row[key], kind), (key, row[key])
        assert row["runtime"] in ("torch", "onnxruntime")
    good = [r for r in report["results"] if r["model"] == ckpt]
    assert all(r["error"] is None and r["latency_ms_median"] > 0 and r["img_size"] == IMG for r in good)
    bad = [r for r in report["results"] if r["model"] == "efficientnet_b99"]
    assert all("unknown model" in r["error"] and r["latency_ms_median"] is None for r in bad)
    assert "effnet: warning: efficientnet_b99 (torch, batch 1): unknown model" in captured.err


def test_bench_table_compares_against_the_first_row(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path)
    options = ["--repeats", "2", "--warmup", "0", "--no-memory", "--fuse", "--channels-last"]
    assert main(["bench", ckpt, ckpt, *options]) == 0
    out = capsys.readouterr().out
    assert "2 interleaved runs after 0 warm-up" in out
    lines = [line for line in out.splitlines() if line.startswith(ckpt)]
    assert len(lines) == 2 and lines[0].endswith("1.00x") and lines[1].endswith("x")
    assert main(["bench", ckpt, ckpt, *options, "--repeats", "4", "--consecutive", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["consecutive"] == 3 and [r["repeats"] for r in report["results"]] == [4, 4]
    assert main(["bench", ckpt, *options, "--consecutive", "3"]) == 0
    assert "2 interleaved runs (3 back to back per round) after 0 warm-up" in capsys.readouterr().out


def test_bench_cli_rejects_bad_options(capsys):
    for args, message in [
        (["--batch-sizes", "1,x"], "expected comma-separated whole numbers"),
        (["--runtime", "tensorrt"], "expected some of torch, compile, onnxruntime"),
        (["--consecutive", "0"], "--consecutive"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["bench", "efficientnet_b0", *args])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert main(["bench", "efficientnet_b0", "--data", "/nonexistent/dir"]) == 1
    assert capsys.readouterr().err.startswith("effnet: error: --data /nonexistent/dir: expected a directory")


def test_the_cli_offers_exactly_the_library_s_runtimes_precisions_and_references():
    """effnet.cli.bench spells these out so that its --help needs no PyTorch; they must not drift."""
    import effnet.bench
    import effnet.cli.bench

    assert effnet.cli.bench.RUNTIMES == tuple(effnet.bench.RUNTIMES)
    assert effnet.cli.bench.PRECISIONS == tuple(effnet.bench.PRECISIONS)
    assert effnet.cli.bench.REFERENCES == tuple(effnet.bench.REFERENCES)
