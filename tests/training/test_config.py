import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from effnet.errors import EffnetError
from effnet.training.config import TrainConfig, load_yaml, resolve_config


def test_yaml_with_flag_overrides(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("model: efficientnet_b0\nepochs: 5\nlr: 0.01\ndata: x\nout: y\ncrop_scale: [0.5, 1.0]\n")
    cfg = resolve_config(path, epochs=7)
    assert (cfg.model, cfg.epochs, cfg.lr, cfg.crop_scale) == ("efficientnet_b0", 7, 0.01, (0.5, 1.0))


def test_unknown_key_is_named_with_a_suggestion(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("data: x\nout: y\nepoch: 5\n")
    with pytest.raises(EffnetError, match=r"unknown setting 'epoch' \(did you mean epochs\?\)"):
        resolve_config(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("epochs: ten\n", "epochs must be a whole number"),
        ("lr: fast\n", "lr must be a number"),
        ("optimizer: adam\n", "optimizer must be one of sgd, adamw, rmsprop"),
        ("ema: maybe\n", "ema must be true or false"),
        ("crop_scale: 0.5\n", "crop_scale must be a list of 2 numbers"),
    ],
)
def test_wrong_types_are_named(tmp_path, text, message):
    path = tmp_path / "recipe.yaml"
    path.write_text("data: x\nout: y\n" + text)
    with pytest.raises(EffnetError, match=message):
        resolve_config(path)


def test_bad_yaml_reports_the_line(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("data: x\nout: [y\nepochs: 3\n")
    with pytest.raises(EffnetError, match="not valid YAML at line"):
        load_yaml(path)


def test_yaml_cannot_build_python_objects(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("data: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(EffnetError, match="not valid YAML"):
        load_yaml(path)


def test_non_mapping_yaml(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(EffnetError, match="must be a mapping"):
        load_yaml(path)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"val_split": 1.5}, "val_split"),
        ({"unfreeze_at": 2}, "unfreeze_at needs freeze_backbone"),
        ({"freeze_backbone": True, "unfreeze_at": 20}, "unfreeze_at must be an epoch"),
        ({"lr": -1.0}, "lr must be positive"),
        ({"data": ""}, "--data is required"),
        ({"crop_pct": 1.2}, "crop_pct must be in"),
        ({"img_size": 30000}, "img_size must be between 8 and 2048 pixels"),
        ({"std": [1, 0, 1]}, "std must be positive"),
        ({"interpolation": "lanczos"}, "interpolation must be one of"),
    ],
)
def test_out_of_range_options(changes, message):
    with pytest.raises(EffnetError, match=message):
        TrainConfig.from_dict({"data": "d", "out": "o", **changes}).validate()


def test_round_trip():
    cfg = TrainConfig(data="d", out="o", amp="bf16", crop_scale=(0.3, 0.9), crop_pct=1.0, mean=(0.1, 0.2, 0.3))
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=True),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=3),
)


@settings(deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(TrainConfig.__dataclass_fields__) + ["bogus"]), _values, max_size=6))
def test_any_mapping_gives_a_config_or_a_clear_error(data):
    try:
        TrainConfig.from_dict({"data": "d", "out": "o", **data}).validate()
    except EffnetError as exc:
        assert "\n" not in str(exc)
