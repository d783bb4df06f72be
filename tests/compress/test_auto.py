"""``effnet compress --auto``: candidates measured in one run, the best within the drop chosen, resume."""

import json
import re
import shutil

import onnx
import pytest

from effnet.cli import main
from effnet.compress.auto import AutoJob, Candidate, choose, pareto_names
from effnet.compress.quantize_runner import choose_file_runtime
from effnet.errors import EffnetError
from effnet.schemas import CompressionReport

TRAINED_MODEL = "efficientnet_lite0"
SMALL = ["--img-size", "32", "--batch-size", "8", "--workers", "0", "--threads", "1", "--repeats", "3"]


def _candidate(name, kind, top1, latency, size):
    return Candidate(name, f"{name}.x", kind, None, top1, round(90.0 - top1, 4), latency, size)


CANDIDATES = [
    _candidate("original", "original", 90.0, 1.0, 13.0),
    _candidate("int8", "quantize", 89.6, 0.55, 3.6),
    _candidate("prune30", "prune", 89.2, 0.7, 9.0),
    _candidate("prune30+int8", "prune+quantize", 89.1, 0.4, 2.5),
    _candidate("prune50", "prune", 86.0, 0.6, 6.5),
    _candidate("prune50+int8", "prune+quantize", 85.5, 0.3, 1.8),
]


def test_choose_the_best_within_the_drop():
    assert choose(CANDIDATES, "latency", 1.0) == ("prune30+int8", True, None)
    assert [c.name for c in CANDIDATES if c.feasible] == ["original", "int8", "prune30", "prune30+int8"]
    assert choose(CANDIDATES, "latency", 0.5) == ("int8", True, None)
    assert choose(CANDIDATES, "size", 5.0) == ("prune50+int8", True, None)
    # An impossible constraint: the original comes back, and the closest candidate is named.
    assert choose(CANDIDATES, "latency", 0.1) == ("original", False, "int8")


def test_pareto_front_cheapest_first():
    assert pareto_names(CANDIDATES, "latency") == ["prune50+int8", "prune30+int8", "int8", "original"]
    assert pareto_names(CANDIDATES, "size") == ["prune50+int8", "prune30+int8", "int8", "original"]


def test_auto_search_end_to_end_then_resume(trained, tmp_path, capsys):
    data, weights = trained
    before = weights.read_bytes()
    out = tmp_path / "out"
    args = ["compress", "--auto", "--weights", str(weights), "--data", str(data), "--out", str(out),
            "--targets", "0.5", "--no-sensitivity", "--max-accuracy-drop", "99", *SMALL,
            "--family", "efficientnet_lite0", "--family-epochs", "1", "--distill-alpha", "0.5",
            "--runtime", "auto"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    printed, logged = capsys.readouterr()
    assert "chose " in printed and weights.read_bytes() == before
    assert "with the original as teacher (alpha 0.5" in logged  # the pruning rung recovers by distillation
    assert "scale:efficientnet_lite0: trained on" in logged and "with the original as teacher\n" in logged
    member = (out / "candidates" / "scale-efficientnet_lite0" / "config.yaml").read_text()
    # Distilled from the original and trained with its recipe (the fixture trains without augmentation).
    assert "teacher" in member and "\naugment: none\n" in member

    result = json.loads((out / "auto.json").read_text())
    names = [c["name"] for c in result["candidates"]]
    assert names == ["original", "int8", "int8-tensor", "prune50", "prune50+int8", "prune50+int8-tensor",
                     "scale:efficientnet_lite0", "scale:efficientnet_lite0+int8",
                     "scale:efficientnet_lite0+int8-tensor"]  # fmt: skip
    # each int8 candidate twice: per-channel weight scales, and one scale per layer
    grids = {c["name"]: json.loads(onnx.load(c["path"]).metadata_props[0].value)["quantization"]["per_channel"]
             for c in result["candidates"] if c["path"].endswith(".onnx")}  # fmt: skip
    assert grids == {name: not name.endswith("-tensor") for name in names if "int8" in name}
    assert result["met"] and all(c["feasible"] for c in result["candidates"])  # every drop is within 99 points
    compressed = [c for c in result["candidates"] if c["kind"] != "original"]
    chosen = next(c for c in result["candidates"] if c["name"] == result["chosen"])
    assert chosen["latency_ms"] == min(c["latency_ms"] for c in compressed)
    assert (out / f"model{'.onnx' if chosen['path'].endswith('.onnx') else '.safetensors'}").exists()
    assert result["pareto"] and set(result["pareto"]) <= set(names)
    # --runtime auto: a chosen int8 file was measured in both runtimes and records the choice
    if chosen["path"].endswith(".onnx"):
        meta = json.loads(onnx.load(str(out / "model.onnx")).metadata_props[0].value)
        assert sorted(result["runtimes_measured"]) == ["onnxruntime", "openvino"]
        assert meta["runtime"] == result["runtime"] and meta["quantization"]["runtimes_measured"]
    else:
        assert result["runtime"] is None and not result["runtimes_measured"]
    # the measurement itself, on a copy of the int8 candidate: same top-1 as the report's in ONNX Runtime
    copy = tmp_path / "int8.onnx"
    shutil.copyfile(out / "candidates" / "int8" / "model.onnx", copy)
    runtime, measured = choose_file_runtime(copy, str(data), img_size=32, threads=1, repeats=3)
    meta = json.loads(onnx.load(str(copy)).metadata_props[0].value)
    assert meta["runtime"] == runtime in measured and meta["quantization"]["runtimes_measured"] == measured
    assert all(m["latency_ms"] > 0 for m in measured.values())

    report = CompressionReport.from_dict(json.loads((out / "report.json").read_text()))
    rows = {row.name: row for row in report.passes}
    assert measured["onnxruntime"]["top1"] == pytest.approx(rows["int8"].top1)
    assert rows["prune50"].flops <= 0.55 * rows["original"].flops
    assert rows["int8"].size_mb < 0.35 * rows["original"].size_mb
    assert all(row.latency_ms_onnxruntime for row in report.passes) and report.quant_error

    # Resumed after the measurement was lost: no candidate is rebuilt.
    pruned = out / "candidates" / "prune50" / "model.safetensors"
    stamp = pruned.stat().st_mtime_ns
    (out / "report.json").unlink()
    assert main([*args, "--resume"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert pruned.stat().st_mtime_ns == stamp and (out / "report.json").exists()
    # Without --resume nothing is overwritten; other settings are refused.
    assert main(args) == 1
    assert "not empty" in capsys.readouterr().err
    other = [a if a != "99" else "50" for a in args]
    assert main([*other, "--resume"]) == 1
    assert "other settings" in capsys.readouterr().err
    assert main([*args, "--resume", "--no-per-tensor"]) == 1
    assert "other settings" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--targets", "0.5", "0.3"], "must rise from mildest"),
        (["--targets", "1.5"], r"fractions in \(0, 1\)"),
        (["--max-accuracy-drop", "-1"], r"max accuracy drop must be in \[0, 100\)"),
        (["--distill-alpha", "2"], r"distill alpha must be in \[0, 1\]"),
        (["--distill-alpha", "0.5", "--finetune-epochs", "0"], "distillation needs fine-tuning epochs"),
        (["--family", "efficientnet_b99"], r"--family efficientnet_b99: unknown model"),
        (["--runtime", "auto", "--device", "cuda"], "chooses where an int8 file runs on the CPU"),
    ],
)
def test_bad_search_settings_are_one_line(trained, tmp_path, capsys, extra, message):
    data, weights = trained
    out = tmp_path / "out"
    args = ["compress", "--auto", "--weights", str(weights), "--data", str(data), "--out", str(out), *extra]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert re.search(message, err), err
    assert not out.exists()


def test_missing_inputs_and_devices(trained, tmp_path, capsys, monkeypatch):
    assert main(["compress", "--auto", "--data", "fashion-mnist", "--out", str(tmp_path / "o")]) == 1
    assert "--auto needs --weights" in capsys.readouterr().err
    assert main(["compress", "--recipe", "r.yaml", "--weights", "w", "--out", str(tmp_path / "o")]) == 1
    assert "go with --auto" in capsys.readouterr().err
    with pytest.raises(EffnetError, match="no such checkpoint"):
        AutoJob(weights=str(tmp_path / "none.safetensors"), data="d", out=str(tmp_path / "o")).validate()
    with pytest.raises(EffnetError, match="ONNX file"):
        AutoJob(weights="model.onnx", data="d", out="o").validate()
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(EffnetError, match="no CUDA GPU is visible"):
        AutoJob(weights=str(trained[1]), data="d", out="o", device="cuda").validate()
