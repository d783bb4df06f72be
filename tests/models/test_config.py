import pytest

import effnet
from effnet.models.config import MODEL_CONFIGS, EfficientNetConfig


def test_list_models_has_the_whole_family():
    names = effnet.list_models()
    assert [f"efficientnet_b{i}" for i in range(8)] + [f"efficientnet_lite{i}" for i in range(5)] == names
    assert effnet.list_models("lite") == [f"efficientnet_lite{i}" for i in range(5)]
    assert effnet.list_models("*b[01]") == ["efficientnet_b0", "efficientnet_b1"]


@pytest.mark.parametrize("alias", ["efficientnet_b0", "EfficientNet-B0", "efficientnet-b0", "b0", " B0 "])
def test_name_aliases(alias):
    assert effnet.get_config(alias).name == "efficientnet_b0"


def test_unknown_name_suggests_close_matches():
    with pytest.raises(effnet.EffnetError, match="did you mean efficientnet_b1"):
        effnet.get_config("efficientnet_b1x")


def test_released_table_values():
    table = {n: (c.width_mult, c.depth_mult, c.resolution, c.dropout) for n, c in MODEL_CONFIGS.items()}
    assert table["efficientnet_b4"] == (1.4, 1.8, 380, 0.4)
    assert table["efficientnet_b7"] == (2.0, 3.1, 600, 0.5)
    assert table["efficientnet_lite4"] == (1.4, 1.8, 300, 0.3)


@pytest.mark.parametrize("name", sorted(MODEL_CONFIGS))
def test_config_round_trips_through_dict(name):
    config = MODEL_CONFIGS[name]
    assert EfficientNetConfig.from_dict(config.to_dict()) == config


def test_from_dict_names_unknown_keys():
    data = MODEL_CONFIGS["efficientnet_b0"].to_dict() | {"widht_mult": 2.0}
    with pytest.raises(effnet.EffnetError, match="widht_mult"):
        EfficientNetConfig.from_dict(data)


@pytest.mark.parametrize(
    "change, message",
    [({"dropout": 1.5}, "dropout"), ({"activation": "gelu"}, "activation"), ({"num_classes": 0}, "num_classes")],
)
def test_invalid_configs_are_rejected_by_name(change, message):
    with pytest.raises(effnet.EffnetError, match=message):
        MODEL_CONFIGS["efficientnet_b0"].replace(**change)
