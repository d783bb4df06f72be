import dataclasses
import json
import sys
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from tests.export.tiny import IMG, plain_cnn, tiny_effnet

from effnet.errors import EffnetError
from effnet.export import FORMATS, ExportReport, export_model
from effnet.weights.specs import Preprocessing


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "pt2"])
def test_every_format_is_written_checked_and_reproduces_eager(tmp_path, fmt):
    model = tiny_effnet("same")
    model.train()  # export must not depend on (or change) the caller's mode
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = tmp_path / f"model{FORMATS[fmt].suffix}"

    report = export_model(model, fmt, out, img_size=IMG)

    assert isinstance(report, ExportReport) and report.path == str(out) and out.stat().st_size == report.size_bytes
    assert report.checked_with == FORMATS[fmt].checked_with
    assert report.input_shape == [2, 3, IMG, IMG] and report.checked_batch_sizes == [1, 2]  # any batch by default
    assert report.dynamic_batch
    assert 0 <= report.max_abs_diff <= report.tolerance
    assert report.fused and report.arch == model.config.name
    json.dumps(report.to_dict())
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_onnx_export_has_constant_padding_folded_into_convolutions(tmp_path):
    model = tiny_effnet("same").eval()
    out = tmp_path / "tf.onnx"
    export_model(model, "onnx", out, img_size=IMG)

    graph = onnx.load(str(out)).graph
    ops = {node.op_type for node in graph.node}
    # No shape arithmetic and no separate Pad: TF padding became constant Conv pads.
    assert not ops & {"Shape", "Pad", "Gather", "Slice", "BatchNormalization"}
    pads = [list(a.ints) for n in graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "pads"]
    assert [0, 0, 1, 1] in pads  # (top, left, bottom, right): TF's extra bottom/right row
    x = torch.randn(2, 3, IMG, IMG)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(x).numpy()
    got = np.concatenate([session.run(None, {"input": x[i : i + 1].numpy()})[0] for i in range(2)])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    meta = json.loads(session.get_modelmeta().custom_metadata_map["effnet"])
    assert meta["img_size"] == IMG and meta["arch"]["padding"] == "same" and len(meta["classes"]) == 10


def test_dynamic_batch_onnx_runs_any_batch(tmp_path):
    out = tmp_path / "dyn.onnx"
    report = export_model(tiny_effnet(), "onnx", out, img_size=IMG, opset=18)
    assert report.checked_batch_sizes == [1, 2] and report.opset == 18
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.run(None, {"input": np.zeros((5, 3, IMG, IMG), np.float32)})[0].shape == (5, 10)


def test_a_fixed_batch_is_still_available_from_python(tmp_path):
    out = tmp_path / "fixed.onnx"
    report = export_model(tiny_effnet(), "onnx", out, img_size=IMG, batch_size=4, dynamic_batch=False)
    assert report.input_shape[0] == 4 and report.checked_batch_sizes == [4] and not report.dynamic_batch
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [4, 3, IMG, IMG]


def test_any_module_exports_and_records_its_metadata(tmp_path):
    out = tmp_path / "cnn.pt2"
    report = export_model(plain_cnn(), "pt2", out, img_size=32, batch_size=2, dynamic_batch=True)
    assert report.checked_batch_sizes == [2, 3] and report.arch is None
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
    assert any(name.endswith("effnet.json") for name in names)


def test_a_file_that_does_not_reproduce_the_model_fails_and_is_removed(tmp_path, monkeypatch):
    real_load = FORMATS["torchscript"].load

    def loader_with_a_bug(path):
        run = real_load(path)
        return lambda x: [y + 0.01 for y in run(x)]

    monkeypatch.setitem(FORMATS, "torchscript", dataclasses.replace(FORMATS["torchscript"], load=loader_with_a_bug))
    out = tmp_path / "bad.pt"
    with pytest.raises(EffnetError, match=r"export check failed at batch size 1: max abs difference 0\.01"):
        export_model(plain_cnn(), "torchscript", out, img_size=32)
    assert not out.exists()


def test_bad_requests_are_one_line_errors(tmp_path, monkeypatch):
    model = plain_cnn()
    with pytest.raises(EffnetError, match="unknown export format 'tflite'"):
        export_model(model, "tflite", tmp_path / "m.tflite", img_size=32)
    with pytest.raises(EffnetError, match="is a directory"):
        export_model(model, "onnx", tmp_path, img_size=32)
    with pytest.raises(EffnetError, match="cannot tell the model's input size"):
        export_model(model, "onnx", tmp_path / "m.onnx")
    with pytest.raises(EffnetError, match="opset 99"):
        export_model(model, "onnx", tmp_path / "m.onnx", img_size=32, opset=99)
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(EffnetError, match="pip install onnx"):
        export_model(model, "onnx", tmp_path / "m.onnx", img_size=32)


def test_a_file_exported_at_another_size_records_preprocessing_for_that_size(tmp_path):
    model = tiny_effnet()
    model.pretrained_meta = {
        "preprocessing": Preprocessing(IMG, IMG + 16, "bilinear").to_dict(),
        "classes": list("abcdefghij"),
    }
    out = tmp_path / "half.onnx"
    export_model(model, "onnx", out, img_size=IMG // 2)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    pre = json.loads(session.get_modelmeta().custom_metadata_map["effnet"])["preprocessing"]
    assert (pre["input_size"], pre["resize_size"], pre["interpolation"]) == (IMG // 2, (IMG + 16) // 2, "bilinear")
