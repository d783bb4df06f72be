import json

import numpy as np
import onnxruntime as ort
from tests.export.tiny import IMG, tiny_effnet

from effnet.cli import main
from effnet.weights.io import write_checkpoint


def _checkpoint(tmp_path):
    model = tiny_effnet("same")
    return write_checkpoint(tmp_path / "tiny.safetensors", model.state_dict(), {"arch": model.config.to_dict()})


def test_export_cli_writes_a_checked_onnx_file_for_any_batch(tmp_path, capsys):
    out = tmp_path / "deploy" / "tiny.onnx"
    assert main(["export", "--weights", str(_checkpoint(tmp_path)), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"input 2x3x{IMG}x{IMG}, any batch" in text
    assert "checked with onnxruntime at batch 1, 2: max abs difference" in text
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == [3, IMG, IMG]
    for batch in (1, 8):
        logits = session.run(None, {"input": np.zeros((batch, 3, IMG, IMG), np.float32)})[0]
        assert logits.shape == (batch, 10)
    # The default file benchmarks at several batch sizes (it used to be fixed at batch 1).
    assert main(["bench", str(out), "--batch-sizes", "1,8", "--repeats", "2", "--warmup", "0", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["results"]
    assert [(r["batch_size"], r["error"]) for r in rows] == [(1, None), (8, None)]
    # The old opt-in flag still works and changes nothing.
    assert main(["export", "--weights", str(_checkpoint(tmp_path)), "--out", str(out), "--dynamic-batch"]) == 0
    assert "any batch" in capsys.readouterr().out


def test_export_cli_json_report_and_format_from_suffix(tmp_path, capsys):
    out = tmp_path / "tiny.pt"
    assert main(["export", "--weights", str(_checkpoint(tmp_path)), "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "torchscript" and report["max_abs_diff"] <= report["tolerance"]


def test_export_cli_warns_about_random_weights(tmp_path, capsys):
    out = tmp_path / "lite0.onnx"
    assert main(["export", "--weights", "efficientnet_lite0", "--out", str(out), "--img-size", "32"]) == 0
    assert "random weights" in capsys.readouterr().err


def test_export_cli_user_mistakes_are_one_line_errors(tmp_path, capsys):
    cases = {
        ("--weights", "efficientnet_b99", "--out", str(tmp_path / "m.onnx")): "unknown model 'efficientnet_b99'",
        ("--weights", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "m.onnx")): "no such file",
        ("--weights", "efficientnet_b0", "--out", str(tmp_path / "m.bin")): "cannot tell the format",
        ("--weights", "efficientnet_b0:nope", "--out", str(tmp_path / "m.onnx")): "nope",
    }
    for args, message in cases.items():
        assert main(["export", *args]) == 1
        err = capsys.readouterr().err
        assert err.startswith("effnet: error:") and message in err and len(err.strip().splitlines()) == 1


def test_the_cli_offers_exactly_the_library_s_formats_and_default_opset():
    """effnet.cli.export spells these out so that its --help needs no PyTorch; they must not drift."""
    import effnet.cli.export
    import effnet.export

    assert effnet.cli.export.FORMATS == tuple(effnet.export.FORMATS)
    assert effnet.cli.export.DEFAULT_OPSET == effnet.export.DEFAULT_OPSET
