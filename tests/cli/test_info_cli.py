import json

import pytest
import torch
import torchvision

from effnet.cli import main
from effnet.models.summary import count_flops


def test_info_json_matches_live_model_and_torchvision_metadata(capsys):
    assert main(["info", "efficientnet_b0", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == 5_288_548
    assert info["resolution"] == 224
    # torchvision publishes 0.386 GFLOPS (multiply-adds) for B0 at 224.
    assert info["macs"] / 1e9 == pytest.approx(
        torchvision.models.EfficientNet_B0_Weights.DEFAULT.meta["_ops"], abs=1e-3
    )
    assert [s["repeats"] for s in info["stages"]] == [1, 2, 2, 3, 3, 4, 1]
    assert info["stages"][2] == {
        "stage": 2,
        "kernel": 5,
        "stride": 2,
        "expand": 6,
        "in_channels": 24,
        "out_channels": 40,
        "repeats": 2,
    }


def test_flops_counted_on_meta_equal_flops_on_real_tensors():
    import effnet

    real = effnet.create_model("efficientnet_lite0")
    with torch.device("meta"):
        meta = effnet.create_model("efficientnet_lite0")
    assert count_flops(real, 128) == count_flops(meta, 128)


def test_info_text(capsys):
    assert main(["info", "lite2"]) == 0
    out = capsys.readouterr().out
    assert "efficientnet_lite2" in out and "6,092,072" in out and "relu6" in out and "260x260" in out


def test_list(capsys):
    assert main(["list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0] == {
        "model": "efficientnet_b0",
        "resolution": 224,
        "weights": ["tv_in1k", "tf_in1k"],
        "baseline": False,
    }
    assert len(rows) == 13 + 5  # the family and the torchvision baselines


def test_demo_fine_tunes_on_real_fashion_mnist(capsys, tmp_path):
    # The README's demo's fine-tuning with a tiny budget: real Fashion-MNIST images, real pretrained Lite0
    # (tests/cli/test_demo.py runs the pruning, quantization and report that follow it).
    out_dir = tmp_path / "demo"
    args = ["--subset", "100", "--epochs", "1", "--img-size", "32", "--no-compress", "--out", str(out_dir)]
    code = main(["demo", *args])
    out = capsys.readouterr().out
    assert code == 0
    assert "test top-1" in out and (out_dir / "train" / "best.safetensors").exists()
