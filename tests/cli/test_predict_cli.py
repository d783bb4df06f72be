import json
import subprocess
import sys

import pytest
import torch

import effnet
from effnet.cli import main
from effnet.weights.io import write_checkpoint

# Acceptable top-1 classes for the real photos (ImageNet has several near-synonyms for each).
EXPECTED = {
    "chelsea.png": {"tabby", "tiger cat", "Egyptian cat"},
    "coffee.png": {"espresso", "cup", "coffee mug"},
    "rocket.jpg": {"missile", "projectile", "space shuttle"},
}


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_json_on_real_photos_with_pretrained_lite0(capsys, sample_photos):
    code, out, err = run_cli(capsys, "predict", *map(str, sample_photos.values()), "--json", "--topk", "3")
    assert code == 0, err
    results = json.loads(out)
    assert [r["image"] for r in results] == [str(p) for p in sample_photos.values()]
    for r in results:
        name = r["image"].rsplit("/", 1)[-1]
        preds = r["predictions"]
        assert len(preds) == 3 and set(preds[0]) == {"index", "label", "prob"}
        assert preds[0]["label"] in EXPECTED[name], preds
        assert preds[0]["prob"] >= preds[1]["prob"] >= preds[2]["prob"]


def test_one_bad_file_in_a_batch_is_reported_and_the_rest_classified(capsys, tmp_path, sample_photos):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    code, out, err = run_cli(
        capsys, "predict", str(sample_photos["coffee.png"]), str(bad), str(tmp_path / "nope.png"), "--batch-size", "1"
    )
    assert code == 1
    assert "espresso" in out and "1 of 3 inputs classified" in out
    assert f"{bad}:" in err and "nope.png: no such file" in err
    assert "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("effnet: warning:")]) == 2


def test_predict_directory_recursively(capsys, tmp_path, sample_photos):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "cat.png").write_bytes(sample_photos["chelsea.png"].read_bytes())
    code, out, _ = run_cli(capsys, "predict", str(tmp_path), "--json", "--topk", "1")
    assert code == 0
    (result,) = json.loads(out)
    assert result["image"].endswith("cat.png") and result["predictions"][0]["label"] in EXPECTED["chelsea.png"]


def test_predict_with_a_fine_tuned_effnet_checkpoint_uses_its_classes(capsys, tmp_path, sample_photos):
    model = effnet.create_model("efficientnet_lite0", num_classes=2)
    meta = {
        "arch": model.config.to_dict(),
        "classes": ["cat", "not cat"],
        "preprocessing": {"input_size": 64, "resize_size": 72, "interpolation": "bilinear"},
    }
    path = write_checkpoint(tmp_path / "best.safetensors", model.state_dict(), meta)
    code, out, err = run_cli(capsys, "predict", str(sample_photos["chelsea.png"]), "--weights", str(path), "--json")
    assert code == 0, err
    (result,) = json.loads(out)
    assert {p["label"] for p in result["predictions"]} == {"cat", "not cat"}
    assert sum(p["prob"] for p in result["predictions"]) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "x.jpg", "--model", "efficientnet_b42"], "unknown model 'efficientnet_b42'"),
        (["predict", "x.jpg", "--weights", "/no/such/file.pth"], "does not exist"),
        (["predict", "x.jpg", "--device", "cuda:banana"], "unknown device"),
        (["info", "resnet9000"], "unknown model"),
    ],
)
def test_user_mistakes_get_one_line(capsys, argv, message):
    code, _, err = run_cli(capsys, *argv)
    assert code == 1
    assert err.count("\n") == 1 and message in err and err.startswith("effnet: error:")


def test_cuda_requested_without_gpu(capsys, sample_photos):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")  # never the case in CI, which has no GPU
    code, _, err = run_cli(capsys, "predict", str(sample_photos["coffee.png"]), "--device", "cuda")
    assert code == 1 and "no CUDA GPU is available" in err


def test_bad_option_value_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["predict", "x.jpg", "--topk", "0"])
    assert exc.value.code == 2
    assert "at least 1" in capsys.readouterr().err


def test_installed_console_script_runs_without_traceback(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    proc = subprocess.run(
        [sys.executable, "-m", "effnet", "predict", str(bad), "--json"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 1
    assert json.loads(proc.stdout)[0]["error"].endswith("empty file (0 bytes)")
    assert "Traceback" not in proc.stderr


def test_out_of_memory_names_the_batch_size(capsys, monkeypatch, sample_photos):
    # No GPU in CI: simulate the CUDA allocator failing inside the forward pass.
    def no_memory(self, x):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(effnet.EfficientNet, "forward", no_memory)
    photos = [str(p) for p in sample_photos.values()]
    code, _, err = run_cli(capsys, "predict", *photos, "--batch-size", "2")
    assert code == 1 and err.count("\n") == 1
    assert "out of memory at batch size 2" in err and "--batch-size 1" in err


def effnet_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "effnet", *argv], capture_output=True, text=True, timeout=300)


def test_predict_runs_an_exported_onnx_file_like_its_checkpoint(tmp_path, capsys, sample_photos):
    from tests.export.tiny import IMG, tiny_effnet

    from effnet.weights.specs import Preprocessing

    model = tiny_effnet(num_classes=3)
    meta = {
        "arch": model.config.to_dict(),
        "classes": ["cat", "coffee", "rocket"],
        "preprocessing": Preprocessing(IMG, IMG + 8, "bilinear").to_dict(),
    }
    checkpoint = write_checkpoint(tmp_path / "best.safetensors", model.state_dict(), meta)
    onnx_file = tmp_path / "model.onnx"
    assert run_cli(capsys, "export", "--weights", str(checkpoint), "--out", str(onnx_file))[0] == 0
    photos = [str(p) for p in sample_photos.values()]
    code, out, _ = run_cli(capsys, "predict", *photos, "--weights", str(checkpoint), "--json", "--topk", "3")
    torch_results = json.loads(out)

    # As a user runs it: a fresh process, the ONNX file as --weights.
    from_onnx = effnet_cli("predict", *photos, "--weights", str(onnx_file), "--json", "--topk", "3")
    assert from_onnx.returncode == 0 and from_onnx.stderr == "", from_onnx.stderr
    onnx_results = json.loads(from_onnx.stdout)
    assert [r["image"] for r in onnx_results] == photos
    for ours, theirs in zip(onnx_results, torch_results, strict=True):
        assert [p["label"] for p in ours["predictions"]] == [p["label"] for p in theirs["predictions"]]
        assert {p["label"] for p in ours["predictions"]} == {"cat", "coffee", "rocket"}  # names from the file
        for a, b in zip(ours["predictions"], theirs["predictions"], strict=True):
            assert a["prob"] == pytest.approx(b["prob"], abs=1e-4)

    # Commands that need the PyTorch weights say so in one line and name the checkpoint (eval runs
    # ONNX files itself: tests/compress/test_quantize.py).
    code, _, err = run_cli(capsys, "export", "--weights", str(onnx_file), "--out", str(tmp_path / "again.onnx"))
    assert code == 1 and err.count("\n") == 1
    assert f"{onnx_file} is an ONNX file, not a PyTorch checkpoint" in err
    assert f"it was exported from {checkpoint}" in err


def test_predict_refuses_an_onnx_file_without_preprocessing(tmp_path, capsys):
    import onnx
    from tests.export.tiny import IMG, tiny_effnet

    from effnet.export import export_model

    path = tmp_path / "bare.onnx"
    export_model(tiny_effnet(), "onnx", path, img_size=IMG)
    proto = onnx.load(str(path))
    del proto.metadata_props[:]  # as another tool would write it
    onnx.save(proto, str(path))
    code, _, err = run_cli(capsys, "predict", str(path), "--weights", str(path))
    assert code == 1 and err.count("\n") == 1 and "records no preprocessing" in err
