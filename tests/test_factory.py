"""One reading of "which model with which weights" for every command."""

import pytest

import effnet
from effnet.factory import load_model, split_model_argument


def test_every_spelling_means_the_same(tmp_path):
    path = effnet.save_model(effnet.create_model("efficientnet_lite0", num_classes=3), tmp_path / "m.safetensors")
    assert split_model_argument("efficientnet_b0", "imagenet") == ("efficientnet_b0", "imagenet")
    assert split_model_argument("efficientnet_b0:imagenet", None) == ("efficientnet_b0", "imagenet")
    assert split_model_argument("efficientnet_b0:imagenet", "imagenet") == ("efficientnet_b0", "imagenet")
    assert split_model_argument(None, str(path)) == (None, str(path))
    assert split_model_argument(str(path), None) == (None, str(path))
    assert split_model_argument(str(path), "imagenet") == (None, str(path))  # a command's default tag
    assert load_model(str(path)).num_classes == load_model(None, path).num_classes == 3


@pytest.mark.parametrize(
    "model, weights, message",
    [
        ("", None, "empty model argument"),
        ("efficientnet_b0:", None, "expected NAME:WEIGHTS"),
        ("efficientnet_b0:imagenet", "tf_in1k", "already names its weights"),
        ("runs/nothing/best.safetensors", None, "no such file"),
        (None, None, "give a model name"),
        ("efficientnet_b99", None, "unknown model 'efficientnet_b99'"),
    ],
)
def test_mistakes_are_one_line(model, weights, message, tmp_path):
    with pytest.raises(effnet.EffnetError, match=message):
        load_model(model, weights)


def test_a_checkpoint_and_other_weights_together_are_refused(tmp_path):
    path = effnet.save_model(effnet.create_model("efficientnet_lite0"), tmp_path / "m.safetensors")
    with pytest.raises(effnet.EffnetError, match="give one of them"):
        split_model_argument(str(path), "other.pth")
    with pytest.raises(effnet.EffnetError, match="is a directory"):
        split_model_argument(str(tmp_path), None)
