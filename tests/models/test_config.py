import dataclasses

import pytest

import effnet
from effnet.models.config import MODEL_CONFIGS, EfficientNetConfig, Layout


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


def test_explicit_layout_round_trips_and_is_what_gets_built():
    from effnet.models.scaling import resolve_layout

    base = MODEL_CONFIGS["efficientnet_b0"]
    layout = resolve_layout(base)
    blocks = list(layout.blocks)
    blocks[0] = dataclasses.replace(blocks[0], in_channels=24, hidden_channels=24)  # a narrower stem
    blocks[3] = dataclasses.replace(blocks[3], hidden_channels=40, se_channels=3)
    config = base.replace(layout=Layout(stem_channels=24, blocks=tuple(blocks), head_channels=512))
    assert EfficientNetConfig.from_dict(config.to_dict()) == config
    model = effnet.create_model(config, num_classes=3)
    assert model.stem.conv.out_channels == 24 and model.head.conv.out_channels == 512
    assert model.stages[2][0].dw.conv.out_channels == 40 and model.stages[2][0].se.fc1.out_channels == 3


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["blocks"][2].update(in_channels=17), "in_channels 17 != 24"),
        (lambda d: d["blocks"][1].update(residual=True), "residual block needs stride 1"),
        (lambda d: d["blocks"][0].update(hidden_channels=64), "hidden_channels must equal in_channels"),
        (lambda d: d["blocks"][5].update(kernel=4), "odd size"),
        (lambda d: d["blocks"][5].update(stride=3), "stride must be 1 or 2"),
        (lambda d: d["blocks"][1].update(stage=3), "stage indices"),
        (lambda d: d["blocks"][1].update(hidden_channels=10**9), "channel counts"),
        (lambda d: d["blocks"][1].update(expand="yes"), "expand must be bool"),
        (lambda d: d["blocks"][1].pop("kernel"), "exactly the keys"),
        (lambda d: d.update(blocks=[]), "1 to 1024 blocks"),
        (lambda d: d.update(blocks=d["blocks"] * 100), "1 to 1024 blocks"),
    ],
)
def test_hostile_layouts_are_refused_by_name(edit, message):
    data = MODEL_CONFIGS["efficientnet_b0"].to_dict()
    from effnet.models.scaling import resolve_layout

    data["layout"] = resolve_layout(MODEL_CONFIGS["efficientnet_b0"]).to_dict()
    edit(data["layout"])
    with pytest.raises(effnet.EffnetError, match=message):
        EfficientNetConfig.from_dict(data)
