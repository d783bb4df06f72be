"""Compound-scaled members by name: ``<base>_phi<φ>[_a<α>_b<β>_g<γ>]`` (Tan & Le 2019, section 3.3)."""

import math

import pytest
import torch
from tests.training.conftest import make_image_folder, tiny_recipe

import effnet
from effnet.cli import main
from effnet.factory import load_model
from effnet.models.config import MODEL_CONFIGS, normalize_name, parse_scaled_name
from effnet.models.scaling import head_channels, resolve_layout, resolve_stages, scaled_config, stem_channels


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on shared cores two threads wait on each other."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.mark.parametrize(
    "given, canonical, base, phi, coefficients",
    [
        ("efficientnet_b0_phi-1", "efficientnet_b0_phi-1", "efficientnet_b0", -1.0, (1.2, 1.1, 1.15)),
        ("EfficientNet-B0-phi0.5", "efficientnet_b0_phi0.5", "efficientnet_b0", 0.5, (1.2, 1.1, 1.15)),
        ("lite0_phi-1", "efficientnet_lite0_phi-1", "efficientnet_lite0", -1.0, (1.2, 1.1, 1.15)),
        (" b3_phi+2.0 ", "efficientnet_b3_phi2", "efficientnet_b3", 2.0, (1.2, 1.1, 1.15)),
        ("b0_phi-0", "efficientnet_b0_phi0", "efficientnet_b0", 0.0, (1.2, 1.1, 1.15)),
        (
            "efficientnet_b0_phi1_a1.30_b1.05_g1.2",
            "efficientnet_b0_phi1_a1.3_b1.05_g1.2",
            "efficientnet_b0",
            1.0,
            (1.3, 1.05, 1.2),
        ),
        ("efficientnet_b0_phi1_a1.2_b1.1_g1.15", "efficientnet_b0_phi1", "efficientnet_b0", 1.0, (1.2, 1.1, 1.15)),
    ],
)
def test_names_parse_to_their_canonical_member(given, canonical, base, phi, coefficients):
    parsed = parse_scaled_name(given)
    assert (parsed.base, parsed.phi, parsed.coefficients) == (base, phi, coefficients)
    assert parsed.name == canonical == normalize_name(given)
    config = effnet.get_config(given)
    assert config.name == canonical
    assert config == effnet.get_config(canonical) == scaled_config(phi, *coefficients, base=base)
    assert parse_scaled_name(canonical) == parsed


def test_registered_names_are_not_scaled_names():
    assert all(parse_scaled_name(name) is None for name in MODEL_CONFIGS)
    assert effnet.get_config("b0") is MODEL_CONFIGS["efficientnet_b0"]


@pytest.mark.parametrize("phi", [-0.5, -1.0, -3.0, -6.0])
def test_negative_phi_shrinks_by_the_formula(phi):
    b0 = effnet.get_config("efficientnet_b0")
    config = effnet.get_config(f"efficientnet_b0_phi{phi:g}")
    assert config.depth_mult == pytest.approx(1.2**phi)
    assert config.width_mult == pytest.approx(1.1**phi)
    assert config.resolution == round(224 * 1.15**phi / 8) * 8 and config.resolution % 8 == 0
    assert config.resolution < b0.resolution
    for small, full in zip(resolve_stages(config), resolve_stages(b0), strict=True):
        assert 8 <= small.out_channels <= full.out_channels and small.out_channels % 8 == 0
        assert 1 <= small.repeats <= full.repeats
        assert small.repeats == math.ceil(full.repeats * 1.2**phi)  # depth rounds up, never to zero
    assert head_channels(config) < head_channels(b0)
    model = effnet.create_model(config, num_classes=4).eval()
    assert sum(p.numel() for p in model.parameters()) < sum(
        p.numel() for p in effnet.create_model("efficientnet_b0", num_classes=4).parameters()
    )
    assert model(torch.zeros(1, 3, config.resolution, config.resolution)).shape == (1, 4)


def test_known_values_of_b0_phi_minus_one():
    config = effnet.get_config("efficientnet_b0_phi-1")
    assert config.resolution == 192  # 224 / 1.15 = 194.8, to a multiple of 8
    assert [s.repeats for s in resolve_stages(config)] == [1, 2, 2, 3, 3, 4, 1]  # ceil(r / 1.2)
    assert [s.out_channels for s in resolve_stages(config)] == [16, 24, 40, 72, 104, 176, 288]
    assert stem_channels(config) == 32 and head_channels(config) == 1160  # 1280 / 1.1 = 1163.6


def test_lite_members_keep_lite_rules_when_shrunk():
    config = effnet.get_config("efficientnet_lite0_phi-2")
    lite0 = MODEL_CONFIGS["efficientnet_lite0"]
    stages, base_stages = resolve_stages(config), resolve_stages(lite0)
    assert (config.activation, config.se_ratio, config.padding) == ("relu6", 0.0, "same")
    assert stem_channels(config) == 32 and head_channels(config) == 1280  # Lite's stem and head are not scaled
    assert stages[0].repeats == base_stages[0].repeats and stages[-1].repeats == base_stages[-1].repeats
    assert stages[3].out_channels < base_stages[3].out_channels


def test_resolution_floor_is_one_clear_error():
    assert scaled_config(-14.87).resolution == 32  # the bound the error message names
    with pytest.raises(effnet.EffnetError) as info:
        effnet.get_config("efficientnet_b0_phi-15")
    message = str(info.value)
    assert "24 px" in message and "at least 32 px" in message and "phi >= -14.87" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "name, words",
    [
        ("efficientnet_b0_phix", "malformed"),
        ("efficientnet_b0_phi", "malformed"),
        ("efficientnet_b0_phi1.", "malformed"),
        ("efficientnet_b0_phi1_a1.2", "malformed"),
        ("efficientnet_b0_phi1e3", "malformed"),
        ("efficientnet_b9_phi1", "unknown base model 'efficientnet_b9'"),
        ("resnet18_phi1", "unknown base model 'resnet18'"),
        ("efficientnet_b0_phi-1_phi1", "unknown base model 'efficientnet_b0_phi-1'"),
    ],
)
def test_bad_names_are_one_line_naming_the_valid_forms(name, words):
    with pytest.raises(effnet.EffnetError) as info:
        effnet.get_config(name)
    message = str(info.value)
    assert words in message and "<base>_phi<φ>" in message and "efficientnet_b0_phi-1" in message
    assert "\n" not in message
    assert normalize_name(name)  # normalising never raises; get_config explains


def test_coefficients_below_one_are_refused_by_name():
    with pytest.raises(effnet.EffnetError, match="at least 1"):
        effnet.get_config("efficientnet_b0_phi1_a0.9_b1.1_g1.15")


def test_scaled_config_names_read_back_to_the_same_member():
    for args in [(-1.0,), (0.5,), (2.0, 1.3, 1.05, 1.2), (-0.25, 1.0, 1.4, 1.0)]:
        config = scaled_config(*args)
        assert effnet.get_config(config.name) == config
    with pytest.raises(effnet.EffnetError, match="registered model"):
        scaled_config(1.0, base="efficientnet_b0_phi-1")


def test_info_accepts_a_scaled_name_and_rejects_a_bad_one_in_one_line(capsys):
    assert main(["info", "efficientnet_b0_phi-1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("efficientnet_b0_phi-1\n") and "192x192" in out
    assert main(["info", "efficientnet_b0_phi-one"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "malformed" in err


def test_saved_checkpoint_reloads_from_the_file_alone(tmp_path):
    model = effnet.create_model("efficientnet_lite0_phi-1", num_classes=3).eval()
    path = effnet.save_model(model, tmp_path / "m.safetensors")
    x = torch.randn(2, 3, 64, 64)
    for loaded in (
        load_model(None, path),
        load_model("efficientnet_lite0_phi-1", path),
        effnet.create_model("lite0-phi-1", weights=path),
    ):
        # the file records every block's widths, which are exactly those the name scales to
        assert loaded.config.replace(layout=None) == model.config
        assert resolve_layout(loaded.config) == resolve_layout(model.config)
        assert loaded.pretrained_meta["arch"] == "efficientnet_lite0_phi-1"
        torch.testing.assert_close(loaded.eval()(x), model(x))
    with pytest.raises(effnet.EffnetError, match="holds weights for efficientnet_lite0_phi-1"):
        effnet.create_model("efficientnet_lite0_phi-2", weights=path)


def test_a_run_trained_from_a_scaled_name_reloads(tmp_path):
    data = make_image_folder(tmp_path / "data", classes=2, per_class=4)
    recipe = tiny_recipe(data, tmp_path / "run", model="efficientnet_lite0_phi-3", epochs=1, batch_size=4)
    result = effnet.train(recipe)
    model = load_model(None, result.best_path)
    assert model.config.name == "efficientnet_lite0_phi-3" and model.num_classes == 2
    expected = effnet.get_config("efficientnet_lite0_phi-3").replace(num_classes=2)
    assert model.config.replace(layout=None) == expected
    assert resolve_layout(model.config) == resolve_layout(expected)


def test_fractional_phi_names_work_as_command_model_arguments():
    assert load_model("efficientnet_b0_phi0.5").config.name == "efficientnet_b0_phi0.5"


def test_scaled_names_have_no_pretrained_weights_and_say_so():
    with pytest.raises(effnet.EffnetError, match="no pretrained weights are registered for efficientnet_b0_phi-1"):
        effnet.create_model("efficientnet_b0_phi-1", weights="imagenet")
