import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import effnet
from effnet.models.config import MODEL_CONFIGS
from effnet.models.scaling import (
    head_channels,
    make_divisible,
    resolve_stages,
    scale_repeats,
    scaled_config,
    stem_channels,
)

# Golden per-stage (out_channels, repeats) for every registered variant, with stem and head
# widths. B-series values agree with torchvision's builders; Lite with the TF-Lite reference.
GOLDEN = {
    "efficientnet_b0": (32, [(16, 1), (24, 2), (40, 2), (80, 3), (112, 3), (192, 4), (320, 1)], 1280),
    "efficientnet_b1": (32, [(16, 2), (24, 3), (40, 3), (80, 4), (112, 4), (192, 5), (320, 2)], 1280),
    "efficientnet_b2": (32, [(16, 2), (24, 3), (48, 3), (88, 4), (120, 4), (208, 5), (352, 2)], 1408),
    "efficientnet_b3": (40, [(24, 2), (32, 3), (48, 3), (96, 5), (136, 5), (232, 6), (384, 2)], 1536),
    "efficientnet_b4": (48, [(24, 2), (32, 4), (56, 4), (112, 6), (160, 6), (272, 8), (448, 2)], 1792),
    "efficientnet_b5": (48, [(24, 3), (40, 5), (64, 5), (128, 7), (176, 7), (304, 9), (512, 3)], 2048),
    "efficientnet_b6": (56, [(32, 3), (40, 6), (72, 6), (144, 8), (200, 8), (344, 11), (576, 3)], 2304),
    "efficientnet_b7": (64, [(32, 4), (48, 7), (80, 7), (160, 10), (224, 10), (384, 13), (640, 4)], 2560),
    "efficientnet_lite0": (32, [(16, 1), (24, 2), (40, 2), (80, 3), (112, 3), (192, 4), (320, 1)], 1280),
    "efficientnet_lite1": (32, [(16, 1), (24, 3), (40, 3), (80, 4), (112, 4), (192, 5), (320, 1)], 1280),
    "efficientnet_lite2": (32, [(16, 1), (24, 3), (48, 3), (88, 4), (120, 4), (208, 5), (352, 1)], 1280),
    "efficientnet_lite3": (32, [(24, 1), (32, 3), (48, 3), (96, 5), (136, 5), (232, 6), (384, 1)], 1280),
    "efficientnet_lite4": (32, [(24, 1), (32, 4), (56, 4), (112, 6), (160, 6), (272, 8), (448, 1)], 1280),
}


def test_golden_covers_every_registered_model():
    assert set(GOLDEN) == set(MODEL_CONFIGS)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_stage_widths_and_depths_are_golden(name):
    config = effnet.get_config(name)
    stem, stages, head = GOLDEN[name]
    assert stem_channels(config) == stem
    assert [(s.out_channels, s.repeats) for s in resolve_stages(config)] == stages
    assert head_channels(config) == head
    # Each stage starts from the previous stage's width.
    resolved = resolve_stages(config)
    assert resolved[0].in_channels == stem
    assert all(b.in_channels == a.out_channels for a, b in zip(resolved, resolved[1:], strict=False))


@pytest.mark.parametrize("name", [n for n in GOLDEN if "lite" not in n])
def test_stage_table_matches_torchvision_builder(name):
    from torchvision.models import efficientnet as tv

    config = effnet.get_config(name)
    settings, _ = tv._efficientnet_conf(name, width_mult=config.width_mult, depth_mult=config.depth_mult)
    assert [(s.out_channels, s.num_layers, s.kernel, s.stride, s.expand_ratio) for s in settings] == [
        (s.out_channels, s.repeats, s.kernel, s.stride, s.expand) for s in resolve_stages(config)
    ]


def test_make_divisible_examples():
    assert make_divisible(32 * 1.1) == 32  # 35.2 rounds down to 32, within 10%
    assert make_divisible(11.9) == 16  # rounds to 8, more than 10% below 11.9: the guard adds 8
    assert make_divisible(16 * 1.1) == 16
    assert make_divisible(1280 * 1.1) == 1408
    assert make_divisible(3) == 8  # never below the divisor


@given(st.floats(min_value=1.0, max_value=10_000.0, allow_nan=False))
def test_make_divisible_is_a_positive_multiple_within_ten_percent_below(value):
    rounded = make_divisible(value)
    assert rounded > 0 and rounded % 8 == 0
    assert rounded >= 0.9 * value or rounded == 8


@given(st.integers(min_value=1, max_value=20), st.floats(min_value=0.1, max_value=8.0))
def test_repeats_round_up(repeats, depth):
    assert scale_repeats(repeats, depth) == math.ceil(repeats * depth)
    assert scale_repeats(repeats, depth) >= 1


@given(st.floats(min_value=0.0, max_value=6.0), st.floats(min_value=0.01, max_value=2.0))
def test_compound_scaling_is_monotone_in_phi(phi, step):
    small, large = scaled_config(phi), scaled_config(phi + step)
    for a, b in zip(resolve_stages(small), resolve_stages(large), strict=True):
        assert a.out_channels <= b.out_channels and a.out_channels % 8 == 0 and a.out_channels > 0
        assert a.repeats <= b.repeats
    assert small.resolution <= large.resolution
    assert head_channels(small) <= head_channels(large)


def test_scaled_config_follows_the_formula():
    cfg = scaled_config(2.0)
    assert cfg.width_mult == pytest.approx(1.1**2)
    assert cfg.depth_mult == pytest.approx(1.2**2)
    assert cfg.resolution == 296  # 224 * 1.15**2 = 296.2, to a multiple of 8
    assert scaled_config(0.0).width_mult == 1.0
    assert effnet.create_model(scaled_config(0.0)).config.resolution == 224


def test_scaled_config_rejects_shrinking_coefficients():
    with pytest.raises(effnet.EffnetError, match="at least 1"):
        scaled_config(1.0, alpha=0.9)
    with pytest.raises(effnet.EffnetError, match="at least 32 px"):
        scaled_config(-15)


def test_custom_config_from_explicit_multipliers():
    cfg = effnet.custom_config(width_mult=0.5, depth_mult=0.5, resolution=128)
    assert [s.repeats for s in resolve_stages(cfg)] == [1, 1, 1, 2, 2, 2, 1]
    model = effnet.create_model(cfg, num_classes=3)
    import torch

    assert model(torch.zeros(1, 3, 128, 128)).shape == (1, 3)
