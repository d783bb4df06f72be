import pytest
import torch
import torchvision

import effnet
from effnet.models.config import MODEL_CONFIGS
from effnet.models.summary import count_params

# Exact parameter counts: torchvision's for B0-B7, the TF-Lite PyTorch port's for Lite0.
EXPECTED_PARAMS = {
    "efficientnet_b0": 5_288_548,
    "efficientnet_b1": 7_794_184,
    "efficientnet_b2": 9_109_994,
    "efficientnet_b3": 12_233_232,
    "efficientnet_b4": 19_341_616,
    "efficientnet_b5": 30_389_784,
    "efficientnet_b6": 43_040_704,
    "efficientnet_b7": 66_347_960,
    "efficientnet_lite0": 4_652_008,
}


def meta_model(name, **kw):
    with torch.device("meta"):
        return effnet.create_model(name, **kw)


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_parameter_counts_are_exact(name):
    assert count_params(meta_model(name)) == EXPECTED_PARAMS[name]


@pytest.mark.parametrize("name", [n for n in MODEL_CONFIGS if "lite" not in n])
def test_parameter_counts_equal_live_torchvision(name):
    with torch.device("meta"):
        reference = getattr(torchvision.models, name)()
    assert count_params(meta_model(name)) == count_params(reference)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_lite_parameter_counts_equal_the_reference_port(name):
    from efficientnet_lite_pytorch import EfficientNet as LiteReference

    reference = LiteReference.from_name(name.replace("_", "-"))
    assert count_params(meta_model(name)) == count_params(reference)


def test_lite_uses_relu6_and_no_squeeze_excitation():
    model = meta_model("efficientnet_lite0")
    kinds = {type(m).__name__ for m in model.modules()}
    assert "ReLU6" in kinds and "SiLU" not in kinds and "SqueezeExcitation" not in kinds


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_lite0"])
def test_features_only_returns_five_strides(name):
    model = effnet.create_model(name, features_only=True).eval()
    x = torch.zeros(1, 3, 224, 224)
    features = model(x)
    assert [f.stride for f in model.feature_info] == [2, 4, 8, 16, 32]
    assert [tuple(f.shape[-2:]) for f in features] == [(112, 112), (56, 56), (28, 28), (14, 14), (7, 7)]
    assert [f.shape[1] for f in features] == [f.channels for f in model.feature_info]
    assert model.classifier is None and model.head is None


def test_features_match_timm_features_only():
    import timm
    from tests.conftest import randomize_batchnorm

    reference = randomize_batchnorm(timm.create_model("efficientnet_b0", features_only=True))
    full = randomize_batchnorm(timm.create_model("efficientnet_b0"))
    reference.load_state_dict({k: v for k, v in full.state_dict().items() if k in reference.state_dict()})
    x = torch.randn(1, 3, 128, 128)
    ours = effnet.EfficientNet(effnet.get_config("efficientnet_b0"), features_only=True).eval()
    # Copy through the converter so this also tests key mapping for a headless model.
    from effnet.weights.formats import convert
    from effnet.weights.io import Checkpoint

    _, converted = convert(Checkpoint(dict(full.state_dict()), path="timm"), effnet.get_config("efficientnet_b0"))
    ours.load_state_dict({k: v for k, v in converted.state_dict.items() if k.split(".")[0] in ("stem", "stages")})
    with torch.no_grad():
        for a, b in zip(reference(x), ours(x), strict=True):
            assert torch.allclose(a, b, atol=1e-5)


def test_drop_path_rates_grow_linearly_and_are_configurable():
    model = effnet.create_model("efficientnet_b0", drop_path_rate=0.4, drop_rate=0.1)
    blocks = [b for stage in model.stages for b in stage]
    rates = [b.drop_path for b in blocks]
    assert rates[0] == 0.0 and rates == sorted(rates) and rates[-1] == pytest.approx(0.4 * 15 / 16)
    assert model.dropout.p == 0.1


def test_drop_path_is_active_only_in_training():
    torch.manual_seed(0)
    model = effnet.create_model("efficientnet_b0", drop_path_rate=0.5, num_classes=4)
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        model.train()
        model.dropout.p = 0.0
        outs = [model(x) for _ in range(3)]
    assert not all(torch.allclose(outs[0], o) for o in outs[1:])


def test_reset_classifier_and_structure_names():
    model = effnet.create_model("efficientnet_b0")
    model.reset_classifier(7)
    assert model.num_classes == 7 and model.config.num_classes == 7
    modules = dict(model.named_modules())
    assert isinstance(modules[model.stem_name], torch.nn.Conv2d)
    assert isinstance(modules[model.classifier_name], torch.nn.Linear)


def test_in_chans_builds_a_matching_stem():
    model = effnet.create_model("efficientnet_b0", in_chans=1, num_classes=2)
    assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 2)


def test_same_padding_matches_tensorflow_for_odd_and_even_sizes():
    from effnet.models.blocks import same_padding

    assert same_padding(224, 3, 2) == (0, 1)
    assert same_padding(225, 3, 2) == (1, 1)
    assert same_padding(224, 5, 2) == (1, 2)
    assert same_padding(7, 3, 1) == (1, 1)
