"""A network whose widths were changed block by block goes through every command like any other."""

import json
import random

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import save_file
from tests.training.conftest import make_image_folder

import effnet
from effnet.cli import main
from effnet.data.images import eval_transform, load_image
from effnet.models.surgery import keep_channels
from effnet.weights.io import read_metadata
from effnet.weights.specs import Preprocessing

CLASSES = ["class_0", "class_1", "class_2"]  # as make_image_folder names them


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    """Lite0 with its real ImageNet weights, every prunable group cut to a random subset of 60-90%."""
    rng = random.Random(0)
    model = effnet.create_model("efficientnet_lite0", weights="imagenet", num_classes=3).eval()
    keep = {
        g.name: sorted(rng.sample(range(g.channels), max(1, int(g.channels * rng.uniform(0.6, 0.9)))))
        for g in model.structure().groups
        if g.prunable
    }
    small = keep_channels(model, keep)
    small.pretrained_meta["classes"] = CLASSES
    small.pretrained_meta["preprocessing"] = Preprocessing(64, 64, "bilinear", (0.5,) * 3, (0.5,) * 3).to_dict()
    path = effnet.save_model(small, tmp_path_factory.mktemp("pruned") / "pruned.safetensors")
    return small, path


def logits(model, x):
    with torch.no_grad():
        return model.eval()(x)


def test_the_block_list_is_saved_and_the_model_reloads_with_equal_logits(pruned):
    small, path = pruned
    meta = read_metadata(path)
    assert meta["format_version"] == 2 and len(meta["arch"]["layout"]["blocks"]) == len(small.layout.blocks)
    assert small.layout != effnet.create_model("efficientnet_lite0").layout
    x = torch.randn(2, 3, 64, 64)
    for name in (None, "efficientnet_lite0"):  # the file's own layout wins for its family member
        reloaded = effnet.create_model(name, weights=path)
        assert reloaded.layout == small.layout
        assert torch.equal(logits(reloaded, x), logits(small, x))
    with pytest.raises(effnet.EffnetError, match="holds weights for efficientnet_lite0, not efficientnet_b0"):
        effnet.create_model("efficientnet_b0", weights=path)


def test_predict_and_eval_on_the_pruned_checkpoint(pruned, tmp_path, capsys):
    small, path = pruned
    folder = make_image_folder(tmp_path / "data", classes=3, per_class=4, size=40)
    image = next((folder / "class_0").iterdir())
    assert main(["predict", str(image), "--weights", str(path), "--json", "--topk", "3"]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    pre = Preprocessing.from_dict(small.pretrained_meta["preprocessing"])
    expected = torch.softmax(logits(small, eval_transform(pre)(load_image(image))[None]), dim=1)[0]
    top = result["predictions"][0]
    assert top["label"] == CLASSES[int(expected.argmax())]
    assert top["prob"] == pytest.approx(float(expected.max()), abs=1e-5)

    code = main(["eval", "--weights", str(path), "--data", str(folder), "--json", "--workers", "0"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 12 and [c["class"] for c in report["per_class"]] == CLASSES


def test_export_of_the_pruned_checkpoint_matches_and_records_the_layout(pruned, tmp_path, capsys):
    small, path = pruned
    out = tmp_path / "pruned.onnx"
    assert main(["export", "--weights", str(path), "--out", str(out)]) == 0, capsys.readouterr().err
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    recorded = json.loads(props["effnet"]) if "effnet" in props else {k: json.loads(v) for k, v in props.items()}
    arch = recorded["arch"]
    assert arch["layout"]["blocks"] == [b for b in small.arch_dict()["layout"]["blocks"]]
    x = torch.randn(1, 3, 64, 64)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(onnx_logits, logits(small, x).numpy(), atol=1e-4)


def test_fine_tune_and_resume_from_the_pruned_checkpoint(pruned, tmp_path, capsys):
    small, path = pruned
    folder = make_image_folder(tmp_path / "data", classes=3, per_class=8, size=32)
    run = tmp_path / "run"
    common = ["--workers", "0", "--no-progress", "--no-tensorboard", "--augment", "none", "--batch-size", "8"]
    # No --model: the checkpoint names its own architecture.
    assert (
        main(["train", "--weights", str(path), "--data", str(folder), "--out", str(run), "--epochs", "1", *common]) == 0
    )
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2"]) == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    trained = effnet.create_model(weights=run / "last.safetensors")
    assert trained.layout == small.layout


def test_a_checkpoint_of_format_version_1_still_loads_and_a_newer_one_is_refused(tmp_path):
    model = effnet.create_model("efficientnet_b0", num_classes=4).eval()
    config = model.config.to_dict()
    del config["layout"]  # version 1 files record the scaling config only
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    old = tmp_path / "old.safetensors"
    save_file(
        tensors, str(old), metadata={"effnet": json.dumps({"format": "effnet", "format_version": 1, "arch": config})}
    )
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(logits(effnet.create_model(weights=old), x), logits(model, x))
    new = tmp_path / "new.safetensors"
    save_file(
        tensors, str(new), metadata={"effnet": json.dumps({"format": "effnet", "format_version": 9, "arch": config})}
    )
    with pytest.raises(effnet.EffnetError, match="written by a newer effnet"):
        effnet.create_model(weights=new)
