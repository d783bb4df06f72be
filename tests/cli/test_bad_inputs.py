"""Every command that reads images or checkpoints, run through ``effnet.cli.main`` over the bad-input
corpus of ``tests/corpus.py``: one-line errors or counted warnings, never a traceback, and the good
images next to the bad ones are still classified, trained on, evaluated or measured."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from tests.corpus import Corpus, reason_for, write_corpus
from tests.export.tiny import tiny_effnet

import effnet
from effnet.cli import main
from effnet.weights.io import write_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")  # 32-pixel workloads; see tests/conftest.py
CLASSES = ["blue", "red"]
TRAIN_FLAGS = ["--img-size", "32", "--batch-size", "8", "--epochs", "1", "--workers", "0", "--augment", "none"]
TRAIN_FLAGS += ["--val-split", "0.25", "--no-progress", "--no-tensorboard"]
BENCH_FLAGS = ["--repeats", "1", "--warmup", "0", "--no-memory", "--json"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A fine-tuned-style effnet checkpoint: pretrained Lite0 with a head for the corpus's classes, at 32 px.

    (A randomly initialised network gives the same output for every image, which would hide the
    difference between an upright and a sideways photo.)
    """
    model = effnet.create_model("efficientnet_lite0", weights="imagenet", num_classes=2)
    meta = {
        "arch": model.config.to_dict(),
        "classes": CLASSES,
        "preprocessing": {"input_size": 32, "resize_size": 36, "interpolation": "bilinear"},
    }
    return write_checkpoint(tmp_path_factory.mktemp("weights") / "lite0.safetensors", model.state_dict(), meta)


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    # Every message is one line of its own: no continuation lines, nothing but effnet's lines.
    assert all(line.startswith("effnet: ") for line in err.splitlines()), err
    return code, out, err


def warnings_in(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("effnet: warning:")]


# ---------------------------------------------------------------------------------------------
# Images


def test_predict_classifies_every_good_image_and_names_every_bad_one(corpus, checkpoint, capsys):
    code, out, err = run_cli(capsys, "predict", corpus.images, "--weights", checkpoint, "--json", "--batch-size", "4")
    assert code == 1  # some inputs failed
    results = {r["image"]: r for r in json.loads(out)}
    assert set(results) == {str(p) for p in corpus.good + list(corpus.bad.values())}
    for path in corpus.good:  # including CMYK, 16-bit, palette, RGBA, gray, animated, EXIF-rotated
        result = results[str(path)]
        assert "error" not in result and result["predictions"], path
        assert {p["label"] for p in result["predictions"]} <= set(CLASSES)
    for path in corpus.bad.values():
        assert reason_for(path, corpus) in results[str(path)]["error"]
    assert len(warnings_in(err)) == len(corpus.bad)
    for path in corpus.bad.values():
        assert sum(line.startswith(f"effnet: warning: {path}: ") for line in warnings_in(err)) == 1


def test_predict_respects_exif_orientation(corpus, checkpoint, capsys, tmp_path):
    rotated = corpus.odd["exif_rotated"]
    sideways = tmp_path / "sideways.png"  # the same pixels with the orientation tag ignored
    with Image.open(rotated) as img:
        img.convert("RGB").save(sideways)
    code, out, _ = run_cli(
        capsys, "predict", rotated, corpus.exif_upright, sideways, "--weights", checkpoint, "--json", "--topk", "2"
    )
    assert code == 0
    probs = [{p["label"]: p["prob"] for p in r["predictions"]} for r in json.loads(out)]
    # Same pixels give the same numbers: the EXIF-rotated JPEG is seen upright, not sideways.
    assert probs[0] == probs[1]
    assert probs[0] != probs[2]


def test_train_skips_bad_images_with_a_counted_warning_and_trains_on_the_rest(corpus, capsys, tmp_path):
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--data", corpus.images, "--out", run, "--json", *TRAIN_FLAGS)
    assert code == 0, err
    assert f"effnet: warning: {len(corpus.bad)} unreadable images skipped (use --strict to stop instead)" in err
    skipped = [line for line in warnings_in(err) if line.startswith("effnet: warning: skipped ")]
    assert skipped and all(any(str(p) in line for p in corpus.bad.values()) for line in skipped)
    summary = json.loads((run / "summary.json").read_text())
    # Every good image, odd encodings included, was used: only the bad files were skipped.
    assert summary["skipped_images"] == len(corpus.bad) and summary["classes"] == CLASSES
    assert json.loads(out)["history"][0]["train_loss"] > 0

    strict = tmp_path / "strict"
    code, _, err = run_cli(capsys, "train", "--data", corpus.images, "--out", strict, "--strict", *TRAIN_FLAGS)
    assert code == 1 and err.count("\n") == 1 and err.startswith("effnet: error: ")
    assert any(f"{p}: " in err for p in corpus.bad.values())


def test_eval_skips_bad_images_with_a_counted_warning_and_evaluates_the_rest(corpus, checkpoint, capsys):
    argv = ["eval", "--weights", checkpoint, "--data", corpus.images, "--workers", "0", "--json"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    report = json.loads(out)
    assert report["n"] == len(corpus.good)
    per_class = {c["class"]: c["n"] for c in report["per_class"]}
    assert per_class == {c: sum(1 for p in corpus.good if p.parent.name == c) for c in CLASSES}
    assert sorted(m.split(": ")[0] for m in report["skipped"]) == sorted(str(p) for p in corpus.bad.values())
    count_line = f"effnet: warning: {len(corpus.bad)} unreadable images skipped; the results are over the other "
    assert any(line.startswith(count_line) for line in warnings_in(err))


def test_bench_skips_bad_images_with_a_counted_warning_and_measures_the_rest(corpus, checkpoint, capsys):
    code, out, err = run_cli(capsys, "bench", checkpoint, "--data", corpus.images, *BENCH_FLAGS)
    assert code == 0, err
    report = json.loads(out)
    (row,) = report["results"]
    assert row["error"] is None and row["latency_ms_median"] > 0
    assert row["top1"] is not None and row["top1_images"] == len(corpus.good)
    assert sorted(m.split(": ")[0] for m in report["data_skipped"]) == sorted(str(p) for p in corpus.bad.values())
    count_line = f"effnet: warning: {len(corpus.bad)} unreadable images skipped; top-1 is over the other "
    assert any(line.startswith(count_line) for line in warnings_in(err))
    for path in corpus.bad.values():
        assert sum(line.startswith(f"effnet: warning: {path}: ") for line in warnings_in(err)) == 1


# ---------------------------------------------------------------------------------------------
# Data sets that cannot be used: one line each


@pytest.mark.parametrize(
    "command, data, code, message",
    [
        ("predict", "no_images", 1, "warning: {no_images}: directory contains no images"),
        ("predict", "one_class", 0, None),
        ("train", "no_images", 1, "error: {no_images}: empty folder (no class folders)"),
        ("train", "one_class", 1, "error: {one_class}: only one class folder (red/)"),
        ("train", "csv", 0, "warning: 2 unreadable images skipped"),
        ("eval", "no_images", 1, "error: {no_images}: empty folder (no class folders)"),
        ("eval", "one_class", 1, "error: {one_class}: only one class folder (red/)"),
        ("eval", "csv", 0, "warning: 2 unreadable images skipped"),
        ("eval", "unknown_label_csv", 1, "error: the checkpoint has 2 classes and {unknown_label_csv} has 3"),
        ("bench", "no_images", 1, "error: --data {no_images} is not an ImageFolder-style directory"),
        ("bench", "one_class", 0, None),  # a folder of one known class is fine for measuring accuracy
        ("bench", "csv", 1, "error: --data {csv}: expected a directory of class folders"),
    ],
)
def test_unusable_data_gets_one_line(corpus, checkpoint, capsys, tmp_path, command, data, code, message):
    path = getattr(corpus, data)
    argv = {
        "predict": ["predict", path, "--weights", checkpoint],
        "train": ["train", "--data", path, "--out", tmp_path / "run", *TRAIN_FLAGS],
        "eval": ["eval", "--weights", checkpoint, "--data", path, "--workers", "0"],
        "bench": ["bench", checkpoint, "--data", path, *BENCH_FLAGS],
    }[command]
    got, _, err = run_cli(capsys, *argv)
    assert got == code, err
    if message is None:
        assert warnings_in(err) == []
        return
    places = {name: getattr(corpus, name) for name in ("no_images", "one_class", "csv", "unknown_label_csv")}
    expected = "effnet: " + message.format(**places)
    matching = [line for line in err.splitlines() if line.startswith(expected)]
    assert len(matching) == 1, err
    if data == "unknown_label_csv":
        assert f"['{corpus.unknown_label}']" in err
    if message.startswith("error"):
        assert err.count("\n") == 1


def test_csv_missing_file_and_empty_label_are_named(corpus, checkpoint, capsys):
    code, out, err = run_cli(capsys, "eval", "--weights", checkpoint, "--data", corpus.csv, "--workers", "0", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["n"] == len(corpus.csv_good)
    assert any(m.startswith(f"{corpus.csv_missing}: no such file") for m in report["skipped"])
    assert any("empty label" in m for m in report["skipped"])


# ---------------------------------------------------------------------------------------------
# Checkpoints are untrusted input


class _RunsCode:
    """Unpickling this runs a shell command: what a hostile checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bad_checkpoint(kind: str, tmp_path, checkpoint):
    if kind == "code":
        path = tmp_path / "evil.pth"
        torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _RunsCode(tmp_path / "pwned")}, path)
        return path, "refused to load"
    if kind == "zero_byte":
        path = tmp_path / "empty.pth"
        path.touch()
        return path, "is empty (0 bytes)"
    if kind == "truncated":
        path = tmp_path / "cut.safetensors"
        path.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
        return path, "is corrupt or truncated"
    if kind == "random_bytes":
        path = tmp_path / "noise.pth"
        path.write_bytes(np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes())
        return path, "is corrupt"
    raise AssertionError(kind)


@pytest.mark.parametrize("command", ["predict", "eval", "train"])
@pytest.mark.parametrize("kind", ["code", "zero_byte", "truncated", "random_bytes"])
def test_bad_checkpoints_are_refused_by_every_command(corpus, checkpoint, capsys, tmp_path, command, kind):
    path, message = _bad_checkpoint(kind, tmp_path, checkpoint)
    argv = {
        "predict": ["predict", corpus.good[0], "--weights", path],
        "eval": ["eval", "--weights", path, "--data", corpus.images, "--workers", "0"],
        "train": ["train", "--weights", path, "--data", corpus.images, "--out", tmp_path / "run", *TRAIN_FLAGS],
    }[command]
    code, out, err = run_cli(capsys, *argv)
    assert code == 1 and err.count("\n") == 1 and err.startswith("effnet: error: ")
    assert str(path) in err and message in err
    assert not (tmp_path / "pwned").exists()  # the payload never ran
    assert not (tmp_path / "run" / "last.safetensors").exists()


@pytest.fixture(scope="module")
def torchvision_b0(tmp_path_factory):
    path = tmp_path_factory.mktemp("tv") / "b0.pth"
    torch.save(torchvision.models.efficientnet_b0().state_dict(), path)
    return path


@pytest.mark.parametrize("command", ["predict", "eval", "train"])
def test_checkpoints_of_another_architecture_are_named(corpus, checkpoint, torchvision_b0, capsys, tmp_path, command):
    cases = [
        (checkpoint, "efficientnet_b0", "holds weights for efficientnet_lite0, not efficientnet_b0"),
        (torchvision_b0, "efficientnet_lite0", "(torchvision format) does not match efficientnet_lite0: "),
    ]
    for path, model, message in cases:
        argv = {
            "predict": ["predict", corpus.good[0], "--weights", path],
            "eval": ["eval", "--weights", path, "--data", corpus.images, "--workers", "0"],
            "train": ["train", "--weights", path, "--data", corpus.images, "--out", tmp_path / "run", *TRAIN_FLAGS],
        }[command]
        code, _, err = run_cli(capsys, *argv, "--model", model)
        assert code == 1 and err.count("\n") == 1 and message in err, err
    assert err.rstrip().endswith("it looks like efficientnet_b0")


def test_eval_with_data_of_another_class_count_names_the_difference(corpus, capsys, tmp_path):
    model = tiny_effnet(num_classes=3)
    meta = {"arch": model.config.to_dict(), "classes": ["blue", "green", "red"]}
    path = write_checkpoint(tmp_path / "three.safetensors", model.state_dict(), meta)
    code, _, err = run_cli(capsys, "eval", "--weights", path, "--data", corpus.images, "--workers", "0")
    assert code == 1 and err.count("\n") == 1
    assert f"the checkpoint has 3 classes and {corpus.images} has 2" in err
    assert "checkpoint classes not in the data: ['green']" in err
