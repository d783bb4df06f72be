import json

import pytest
from tests.training.conftest import make_image_folder

import effnet
from effnet.cli import main


@pytest.fixture
def folder(tmp_path):
    return make_image_folder(tmp_path / "data")


COMMON = ["--img-size", "32", "--workers", "0", "--no-progress", "--no-tensorboard", "--augment", "none"]


def test_train_from_yaml_with_flag_override_then_eval(capsys, tmp_path, folder):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: efficientnet_lite0\ndata: {folder}\nepochs: 5\nbatch_size: 8\nval_split: 0.25\n")
    run = tmp_path / "run"
    code = main(["train", "--config", str(recipe), "--epochs", "1", "--out", str(run), "--json", *COMMON])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    assert result["epochs"] == 1 and len(result["history"]) == 1  # the flag overrode the file
    assert "epochs: 1" in (run / "config.yaml").read_text()

    assert (
        main(["eval", "--weights", str(run / "best.safetensors"), "--data", str(folder), "--json", "--workers", "0"])
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 24 and 0 <= report["top1"] <= report["top5"] <= 100
    assert [c["class"] for c in report["per_class"]] == ["class_0", "class_1", "class_2"]
    assert sum(map(sum, report["confusion"])) == 24

    assert main(["eval", "--weights", str(run / "best.safetensors"), "--data", str(folder), "--workers", "0"]) == 0
    assert "top-1" in capsys.readouterr().out


def test_eval_with_other_classes_is_a_clear_error(capsys, tmp_path, folder):
    run = tmp_path / "run"
    assert main(["train", "--data", str(folder), "--out", str(run), "--epochs", "1", "--batch-size", "8", *COMMON]) == 0
    capsys.readouterr()
    other = make_image_folder(tmp_path / "other", classes=4)
    assert main(["eval", "--weights", str(run / "best.safetensors"), "--data", str(other), "--workers", "0"]) == 1
    err = capsys.readouterr().err
    assert "the checkpoint has 3 classes" in err and "class_3" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "setup, message",
    [
        ("one_class", "only one class folder"),
        ("empty", "empty folder"),
        ("missing", "no such file or directory"),
    ],
)
def test_bad_data_gets_one_line(capsys, tmp_path, setup, message):
    data = tmp_path / "data"
    if setup == "one_class":
        make_image_folder(data, classes=1)
    elif setup == "empty":
        data.mkdir()
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), "--epochs", "1", *COMMON]) == 1
    err = capsys.readouterr().err
    assert message in err and err.startswith("effnet: error:") and err.count("\n") == 1
    assert not (out / "last.safetensors").exists()


def test_out_of_range_flags(capsys, tmp_path, folder):
    assert main(["train", "--data", str(folder), "--out", str(tmp_path / "r"), "--val-split", "2", *COMMON]) == 1
    assert "val_split must be between 0 and 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--data", str(folder), "--out", str(tmp_path / "r"), "--epochs", "0"])
    assert "at least 1" in capsys.readouterr().err


def test_unreadable_images_are_counted_or_strict(capsys, tmp_path, folder):
    (folder / "class_0" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    assert (
        main(
            [
                "train",
                "--data",
                str(folder),
                "--out",
                str(tmp_path / "a"),
                "--epochs",
                "1",
                "--batch-size",
                "8",
                *COMMON,
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "1 unreadable images skipped" in err and "broken.jpg" in err
    assert (
        main(["train", "--data", str(folder), "--out", str(tmp_path / "b"), "--epochs", "1", "--strict", *COMMON]) == 1
    )
    err = capsys.readouterr().err
    assert "broken.jpg" in err and err.count("\n") == 1


def test_preprocessing_overrides_travel_with_the_checkpoint(capsys, tmp_path, folder):
    run = tmp_path / "run"
    args = ["train", "--data", str(folder), "--out", str(run), "--epochs", "1", "--batch-size", "8", *COMMON]
    args += ["--crop-pct", "1", "--interpolation", "bilinear", "--mean", "0.2", "0.3", "0.4", "--std", "1", "1", "1"]
    assert main(args) == 0, capsys.readouterr().err
    pre = effnet.create_model(weights=run / "best.safetensors").pretrained_meta["preprocessing"]
    assert pre == {
        "input_size": 32,
        "resize_size": 32,
        "interpolation": "bilinear",
        "mean": [0.2, 0.3, 0.4],
        "std": [1.0, 1.0, 1.0],
    }
    capsys.readouterr()
    assert main(["train", "--data", str(folder), "--out", str(tmp_path / "bad"), "--crop-pct", "0", *COMMON]) == 1
    err = capsys.readouterr().err
    assert "crop_pct must be in [0.1, 1]" in err and err.count("\n") == 1
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("command", ["train", "eval", "bench", "export", "demo"])
def test_huge_image_size_flag_is_refused_before_any_work(capsys, tmp_path, command):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--img-size", "30000"])
    assert exit_info.value.code == 2
    assert "must be between 8 and 2048 pixels, got 30000" in capsys.readouterr().err


def test_resume_with_only_the_run_folder_and_epochs_counted_from_one(tmp_path, folder):
    """As a user types it, in a subprocess: the run folder holds its own recipe."""
    import subprocess
    import sys

    run = tmp_path / "run"

    def effnet_cli(*argv):
        return subprocess.run(
            [sys.executable, "-m", "effnet", *argv], capture_output=True, text=True, timeout=600, check=False
        )

    first = effnet_cli("train", "--data", str(folder), "--out", str(run), "--epochs", "1", "--batch-size", "8", *COMMON)
    assert first.returncode == 0, first.stderr
    assert "epoch 1/1:" in first.stderr
    more = effnet_cli("train", "--out", str(run), "--resume", "--epochs", "2")
    assert more.returncode == 0, more.stderr
    assert "resuming" in more.stderr and "epoch 2/2:" in more.stderr
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert json.loads((run / "summary.json").read_text())["best_epoch"] in (1, 2)
    changed = effnet_cli("train", "--out", str(run), "--resume", "--epochs", "3", "--img-size", "48")
    assert changed.returncode == 1
    assert changed.stderr.count("\n") == 1 and "differ from the run's config.yaml: img_size" in changed.stderr
