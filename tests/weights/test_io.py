import os
import pickle

import pytest
import torch
import torchvision

import effnet
from effnet.weights.io import read_checkpoint, write_checkpoint


class _RunsCode:
    """Unpickling this calls os.system: what a hostile checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _RunsCode(marker)}, path)
    with pytest.raises(effnet.EffnetError, match="refused to load .*arbitrary code"):
        effnet.create_model("efficientnet_b0", weights=path)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_plain_pickle_file_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(effnet.EffnetError):
        read_checkpoint(path)
    assert not marker.exists()


def test_zero_byte_checkpoint(tmp_path):
    path = tmp_path / "empty.pth"
    path.touch()
    with pytest.raises(effnet.EffnetError, match="empty"):
        effnet.create_model("efficientnet_b0", weights=path)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.99])
def test_truncated_checkpoint(tmp_path, fraction):
    path = tmp_path / "b0.pth"
    torch.save(torchvision.models.efficientnet_b0().state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(effnet.EffnetError, match="corrupt or truncated"):
        effnet.create_model("efficientnet_b0", weights=path)


def test_truncated_safetensors(tmp_path):
    model = effnet.create_model("efficientnet_b0", num_classes=3)
    path = write_checkpoint(tmp_path / "m.safetensors", model.state_dict(), {"arch": model.config.to_dict()})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(effnet.EffnetError, match="corrupt or truncated"):
        effnet.create_model(weights=path)


def test_random_bytes_and_text_files(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(effnet.EffnetError):
        read_checkpoint(junk)
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(effnet.EffnetError):
        read_checkpoint(text)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(effnet.EffnetError, match="does not exist"):
        effnet.create_model("efficientnet_b0", weights=tmp_path / "nope.pth")
    with pytest.raises(effnet.EffnetError, match="directory"):
        read_checkpoint(tmp_path)


def test_effnet_format_round_trip_carries_architecture_and_classes(tmp_path):
    model = effnet.create_model("efficientnet_lite0", num_classes=3).eval()
    meta = {"arch": model.config.to_dict(), "classes": ["cat", "dog", "owl"]}
    path = write_checkpoint(tmp_path / "run" / "best.safetensors", model.state_dict(), meta)
    assert not list(path.parent.glob("*.tmp"))
    loaded = effnet.create_model(weights=path).eval()  # no name: the file says what it is
    assert loaded.config == model.config
    assert loaded.pretrained_meta["classes"] == ["cat", "dog", "owl"]
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_effnet_checkpoint_of_another_architecture_is_named(tmp_path):
    model = effnet.create_model("efficientnet_lite0", num_classes=3)
    path = write_checkpoint(tmp_path / "m.safetensors", model.state_dict(), {"arch": model.config.to_dict()})
    with pytest.raises(effnet.EffnetError, match="holds weights for efficientnet_lite0, not efficientnet_b0"):
        effnet.create_model("efficientnet_b0", weights=path)


def test_class_count_change_keeps_backbone_of_own_checkpoint(tmp_path):
    model = effnet.create_model("efficientnet_lite0", num_classes=3)
    path = write_checkpoint(tmp_path / "m.safetensors", model.state_dict(), {"arch": model.config.to_dict()})
    five = effnet.create_model(weights=path, num_classes=5)
    assert five.num_classes == 5
    assert torch.equal(five.stem.conv.weight, model.stem.conv.weight)
