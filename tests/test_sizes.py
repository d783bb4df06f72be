"""One set of input-size limits, whichever door a size comes in through."""

import pytest

import effnet
from effnet.compress import FreezePaddingConfig
from effnet.sizes import MAX_INPUT_SIZE, MIN_INPUT_SIZE, check_input_size, resolve_input_size
from effnet.training.config import TrainConfig
from effnet.weights.specs import Preprocessing

LIMITS = f"between {MIN_INPUT_SIZE} and {MAX_INPUT_SIZE} pixels"


@pytest.mark.parametrize("size", [MIN_INPUT_SIZE - 1, MAX_INPUT_SIZE + 1])
def test_every_entry_point_refuses_the_same_sizes(size):
    entry_points = [
        lambda: check_input_size(size),
        lambda: TrainConfig(data="d", out="o", img_size=size).validate(),
        lambda: Preprocessing.from_dict({"input_size": size, "resize_size": size}),
        lambda: FreezePaddingConfig(img_size=size),
        lambda: effnet.get_config("efficientnet_b0").replace(resolution=size),
        lambda: resolve_input_size(effnet.create_model("efficientnet_lite0"), size),
    ]
    for enter in entry_points:
        with pytest.raises(effnet.EffnetError, match=LIMITS):
            enter()


def test_the_size_a_model_expects():
    lite0 = effnet.create_model("efficientnet_lite0", weights="imagenet")
    assert resolve_input_size(lite0) == 224  # its weights' preprocessing
    assert resolve_input_size(effnet.create_model("efficientnet_b3")) == 300  # its config's resolution
    assert resolve_input_size(lite0, 96) == 96
    assert check_input_size(MIN_INPUT_SIZE) == MIN_INPUT_SIZE and check_input_size(MAX_INPUT_SIZE) == MAX_INPUT_SIZE
