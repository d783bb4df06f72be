"""The contract every registered pass keeps: input untouched, output runs, report serialises,
result saves and reloads, config round-trips with unknown keys refused by name."""

import copy
import json

import pytest
import torch
import yaml
from tests.conftest import randomize_batchnorm

import effnet
from effnet.compress import PassContext, PassReport, apply_pass, get_pass, list_passes, pass_config_from_dict
from effnet.compress.quantize import QuantizedModel
from effnet.export.onnx_module import OnnxModule

IMG = 64


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    # Lite0 has TF "same" padding (what freeze_padding changes); resnet18 is a torchvision baseline.
    return {
        "efficientnet_lite0": randomize_batchnorm(effnet.create_model("efficientnet_lite0", num_classes=5)),
        "resnet18": randomize_batchnorm(effnet.create_model("resnet18", num_classes=5)),
    }


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, [type(m) for m in model.modules()]


@pytest.mark.parametrize("model_name", ["efficientnet_lite0", "resnet18"])
@pytest.mark.parametrize("pass_name", list_passes())
def test_every_pass_keeps_the_contract(pass_name, model_name, models, tmp_path):
    model = models[model_name]
    config = get_pass(pass_name).config_type()  # every field has a usable default
    state, kinds = snapshot(model)
    x = torch.randn(2, 3, IMG, IMG)

    if get_pass(pass_name).unsupported(model):  # refused in one line, before anything runs
        with pytest.raises(effnet.EffnetError, match=f"{pass_name} cannot handle this model"):
            apply_pass(model, config, PassContext(img_size=IMG))
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
        return
    calibration = [torch.randn(16, 3, IMG, IMG)]  # for passes that calibrate
    result, report = apply_pass(model, config, PassContext(img_size=IMG, data=calibration))

    after_state, after_kinds = snapshot(model)
    assert after_kinds == kinds and state.keys() == after_state.keys()
    assert all(torch.equal(state[k], after_state[k]) for k in state), "the input model was modified"
    assert result is not model
    with torch.no_grad():
        out = result.eval()(x)
    assert out.shape == (2, 5) and torch.isfinite(out).all()

    data = json.loads(json.dumps(report.to_dict()))
    assert PassReport.from_dict(data) == report and data["name"] == pass_name
    assert report.before.params == sum(p.numel() for p in model.parameters())
    if isinstance(result, QuantizedModel):  # a deployable ONNX file, not PyTorch tensors
        assert report.after == result.compression_stats() and report.after.size_bytes < report.before.size_bytes
        reloaded = OnnxModule(result.save(tmp_path / "result.onnx"))
        assert torch.equal(reloaded(x), out)
        return
    assert report.after.params == sum(p.numel() for p in result.parameters())

    path = effnet.save_model(result, tmp_path / "result.safetensors")
    reloaded = effnet.create_model(weights=path).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(x), out)


@pytest.mark.parametrize("pass_name", list_passes())
def test_every_pass_config_round_trips_and_refuses_unknown_keys(pass_name):
    config = get_pass(pass_name).config_type()
    text = yaml.safe_dump(config.to_dict())
    assert pass_config_from_dict(yaml.safe_load(text)) == config
    assert pass_config_from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(effnet.EffnetError, match="unknown setting 'colour'"):
        pass_config_from_dict({**config.to_dict(), "colour": "blue"})
    with pytest.raises(effnet.EffnetError, match="newer than this effnet"):
        pass_config_from_dict({**config.to_dict(), "version": config.version + 1})


def test_inference_passes_are_exact_and_chain(models, tmp_path):
    model = models["efficientnet_lite0"]
    x = torch.randn(1, 3, IMG, IMG)
    folded, fold_report = apply_pass(model, "fold_batchnorm")
    frozen, freeze_report = apply_pass(folded, {"pass": "freeze_padding", "img_size": IMG})
    with torch.no_grad():
        torch.testing.assert_close(frozen.eval()(x), model.eval()(x), atol=1e-5, rtol=1e-5)
    assert fold_report.details == {"folded": 49} and fold_report.after.params < fold_report.before.params
    assert freeze_report.details == {"img_size": IMG, "frozen": 5, "asymmetric": 5}
    assert [p["pass"] for p in frozen.effnet_passes] == ["fold_batchnorm", "freeze_padding"]
    reloaded = effnet.create_model(weights=effnet.save_model(frozen, tmp_path / "frozen.safetensors"))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in reloaded.modules())
    with pytest.raises(effnet.EffnetError, match=f"frozen for {IMG}x{IMG} inputs"):
        reloaded(torch.zeros(1, 3, IMG + 8, IMG + 8))


def test_freeze_padding_records_the_size_it_used(models):
    _, report = apply_pass(models["efficientnet_lite0"], "freeze_padding", PassContext(img_size=96))
    assert report.config == {"pass": "freeze_padding", "version": 1, "img_size": 96}


def test_bad_pass_requests_are_one_clear_error(models, tmp_path):
    with pytest.raises(effnet.EffnetError, match="unknown pass 'fold_batchnrom'; did you mean fold_batchnorm"):
        apply_pass(models["resnet18"], "fold_batchnrom")
    with pytest.raises(effnet.EffnetError, match="img_size must be between 8 and 2048"):
        apply_pass(models["resnet18"], "freeze_padding", img_size=4)
    with pytest.raises(effnet.EffnetError, match="a pass is a mapping with a 'pass' name"):
        pass_config_from_dict({"img_size": 3})
    folded, _ = apply_pass(models["efficientnet_lite0"], "fold_batchnorm")
    path = effnet.save_model(folded, tmp_path / "folded.safetensors")
    with pytest.raises(effnet.EffnetError, match="loads only as saved"):
        effnet.create_model(weights=path, num_classes=2)


def test_a_model_copy_from_apply_pass_does_not_share_storage(models):
    model = models["resnet18"]
    before = copy.deepcopy(model.state_dict())
    result, _ = apply_pass(model, "fold_batchnorm")
    with torch.no_grad():
        for p in result.parameters():
            p.mul_(0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
