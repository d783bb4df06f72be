"""Quantization-aware training: fake-quant grids, frozen batch norms, resume, removal, ``quantize --mode qat``."""

import copy
import io
import json

import onnx
import pytest
import torch
from tests.conftest import randomize_batchnorm

import effnet
from effnet.cli import main
from effnet.compress.qat import (
    _ATTRIBUTE,
    ActivationObserver,
    FakeQuantCallback,
    fake_quantize_weight,
    has_fake_quant,
    input_layers,
    insert_fake_quant,
    remove_fake_quant,
    weight_scales,
)
from effnet.compress.quantize import QuantizeConfig, _dequantized_weights, quantize_model
from effnet.factory import load_model
from effnet.schemas import CompressionReport

SIZE = 32
TRAINED_MODEL = "efficientnet_lite0"  # for the trained fixture (conftest)
FAST = ["--workers", "0", "--repeats", "3", "--threads", "1", "--calib-images", "16", "--no-progress"]


@pytest.fixture(scope="module")
def lite0():
    torch.manual_seed(0)
    model = randomize_batchnorm(effnet.create_model("efficientnet_lite0", num_classes=3))
    with torch.no_grad():
        model.stem.bn.weight[:4] *= -1  # negative batch-norm scales flip the folded weights' signs
    return model


def _onnx_node(module_name: str) -> str:
    """The ONNX node an effnet export gives a layer: stages.1.0.dw.conv -> /stages/stages.1/stages.1.0/dw/conv/Conv."""
    segments: list[str] = []
    for part in module_name.split("."):
        segments.append(f"{segments[-1]}.{part}" if part.isdigit() else part)
    return "/" + "/".join(segments) + ("/Gemm" if module_name == "classifier" else "/Conv")


def _folded_grid_mismatches(model: torch.nn.Module, quantized_onnx, per_channel: bool = True) -> tuple[int, int]:
    """(weights compared, weights off by a step): ``model``'s fake-quantized weights, folded with their batch
    norms as the export folds them, against the int8 weights ONNX Runtime wrote into ``quantized_onnx``."""
    rounded = _dequantized_weights(onnx.load(str(quantized_onnx)))
    modules = dict(model.named_modules())
    layers = {n: m for n, m in modules.items() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear) and n != "stem.conv"}
    assert len(rounded) == len(layers) == 49  # the stem stays float (QuantizeConfig.float_stem)
    compared = off_grid = 0
    for name, module in layers.items():
        factor = None
        if name.endswith(".conv"):
            bn = modules[name.removesuffix(".conv") + ".bn"]
            factor = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
        expected = fake_quantize_weight(module.weight, per_channel, factor).double().detach()
        if not per_channel:
            folded = module.weight if factor is None else module.weight * factor.view(-1, 1, 1, 1)
            step = weight_scales(folded, per_channel=False).double()
            expected = expected if factor is None else expected * factor.double().view(-1, 1, 1, 1)
        elif factor is not None:
            step = weight_scales(module.weight).double()
            factor = factor.double()
            expected, step = expected * factor.view(-1, 1, 1, 1), (step * factor.abs()).view(-1, 1, 1, 1)
        else:
            step = weight_scales(module.weight).double().view(-1, 1)
        error = (torch.from_numpy(rounded[_onnx_node(name)]) - expected).abs() / step
        compared += error.numel()
        off_grid += int((error > 1e-3).sum())  # one step apart: a value exactly halfway, rounded the other way
    return compared, off_grid


def test_fake_quantized_weights_lie_on_the_per_channel_int8_grid(lite0):
    for module in lite0.modules():
        if isinstance(module, torch.nn.Conv2d | torch.nn.Linear):
            shape = (-1,) + (1,) * (module.weight.dim() - 1)
            steps = fake_quantize_weight(module.weight) / weight_scales(module.weight).view(shape)
            assert torch.allclose(steps, steps.round(), atol=1e-4)  # whole multiples of the channel's scale
            assert steps.abs().flatten(1).amax(1).round().eq(127).all()  # each channel's largest weight is +-127
    # Folding a batch norm scales each output channel by g; the rounding commutes with it, also for g < 0,
    # which is why training the unfolded weights trains the folded file's rounding.
    weight = lite0.stem.conv.weight.detach()
    factor = torch.tensor([-2.0, 0.5, 3.0, -0.25] * (weight.shape[0] // 4)).view(-1, 1, 1, 1)
    assert torch.allclose(fake_quantize_weight(weight * factor), fake_quantize_weight(weight) * factor, atol=1e-6)
    x = torch.randn(3, 4, requires_grad=True)
    fake_quantize_weight(x).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))  # straight through


def test_per_tensor_fake_quant_rounds_the_weights_as_the_per_tensor_file_stores_them(lite0, tmp_path):
    # One scale per tensor does not commute with the batch-norm folding (lite0's stem has negative
    # scales, its other batch norms random statistics): the rounding is simulated on the folded weights.
    model = copy.deepcopy(lite0)
    insert_fake_quant(model, per_channel=False)
    assert model.stages[1][0].dw.conv.__dict__["_effnet_per_tensor"] == (model.stages[1][0].dw.bn,)
    assert model.classifier.__dict__["_effnet_per_tensor"] == (None,)  # no batch norm after it
    remove_fake_quant(model)
    assert not any("_effnet_per_tensor" in vars(m) for m in model.modules())
    images = torch.randn(16, 3, SIZE, SIZE)
    config = QuantizeConfig(per_channel=False, calib_images=16, bias_correction=False)
    quantize_model(lite0, tmp_path / "tensor.onnx", config, [images], SIZE)
    compared, off_grid = _folded_grid_mismatches(lite0, tmp_path / "tensor.onnx", per_channel=False)
    assert compared > 3_000_000 and off_grid <= compared * 1e-5
    # per channel, the same model's grid is another one: the comparison can tell them apart
    compared, off_grid = _folded_grid_mismatches(lite0, tmp_path / "tensor.onnx", per_channel=True)
    assert off_grid > compared * 0.1


def test_activations_are_rounded_to_the_uint8_grid_of_their_running_range():
    observer = ActivationObserver(momentum=0.5)
    x = torch.linspace(-1.0, 3.0, 101)
    y = observer.fake_quantize(x, update=True)
    scale, zero = observer.qparams()
    assert torch.allclose(scale, torch.tensor([4.0 / 255])) and int(zero) == round(1.0 / (4.0 / 255))
    assert torch.allclose((y / scale + zero), (y / scale + zero).round(), atol=1e-3)
    assert (y - x).abs().max() <= scale / 2 + 1e-6
    observer.fake_quantize(x * 3, update=True)  # momentum 0.5: halfway to the new batch's range
    assert torch.allclose(observer.range, torch.tensor([-2.0, 6.0]))
    observer.fake_quantize(x * 100, update=False)  # evaluation does not move the range
    assert torch.allclose(observer.range, torch.tensor([-2.0, 6.0]))


def test_removing_fake_quant_leaves_the_plain_network_with_its_names(lite0):
    model = copy.deepcopy(lite0)
    x = torch.randn(4, 3, SIZE, SIZE)
    with torch.no_grad():
        reference = model.eval()(x)
    keys, params = list(model.state_dict()), dict(model.named_parameters())
    observers = insert_fake_quant(model)
    assert has_fake_quant(model) and len(observers) == 50
    assert list(model.state_dict()) == keys and all(p is params[n] for n, p in model.named_parameters())
    with torch.no_grad():
        simulated = model(x)  # the first batch sets each observer's range
    assert all(o.ready for o in observers.values())
    assert not torch.allclose(simulated, reference, atol=1e-4)
    relative = (simulated - reference).norm() / reference.norm()
    assert relative < 0.5  # int8 rounding, not garbage

    duplicate = copy.deepcopy(model)  # a copy computes with its own weights, not the original's
    with torch.no_grad():
        duplicate.classifier.weight.mul_(2.0)
        assert not torch.allclose(duplicate(x), simulated) and torch.equal(model(x), simulated)

    assert remove_fake_quant(model) is model and not has_fake_quant(model)
    assert list(model.state_dict()) == keys and all(p is params[n] for n, p in model.named_parameters())
    assert not any("forward" in vars(m) or "_conv_forward" in vars(m) for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(x), reference)
    with pytest.raises(effnet.EffnetError, match="already"):
        insert_fake_quant(duplicate)


def test_callback_state_round_trips_through_a_saved_training_state(lite0):
    first, second = copy.deepcopy(lite0), copy.deepcopy(lite0)
    callback = FakeQuantCallback(momentum=0.1)
    assert callback.state_dict() == {}  # nothing observed: nothing to save
    callback.attach(first)
    first.train()
    for _ in range(3):
        first(torch.randn(2, 3, SIZE, SIZE))
    buffer = io.BytesIO()
    torch.save(callback.state_dict(), buffer)  # as the engine writes it with the training state
    buffer.seek(0)
    restored = FakeQuantCallback()
    restored.load_state_dict(torch.load(buffer))
    restored.attach(second)  # the engine loads state before fit start attaches
    assert restored.momentum == 0.1 and restored.observers.keys() == callback.observers.keys()
    for name, observer in callback.observers.items():
        assert torch.equal(restored.observers[name].range, observer.range)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(first.eval()(x), second.eval()(x))
    callback.detach()
    restored.detach()
    assert not has_fake_quant(first) and not has_fake_quant(second)
    assert callback.state_dict()["per_channel"] is True
    with pytest.raises(effnet.EffnetError, match="rounded weights per output channel; resume it without --per-tensor"):
        FakeQuantCallback(per_channel=False).load_state_dict(callback.state_dict())
    stray = FakeQuantCallback()
    stray.load_state_dict({"observers": {"no.such.layer": {"range": torch.zeros(2)}}})
    with pytest.raises(effnet.EffnetError, match="no.such.layer"):
        stray.attach(copy.deepcopy(lite0))


def test_fine_tuning_trains_through_the_rounding_with_batch_norms_frozen_and_resumes(trained, tmp_path):
    data, weights = trained
    model = load_model(None, weights)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recipe = {
        "out": str(tmp_path / "qat"),
        "epochs": 1,
        "lr": 1e-3,
        "batch_size": 8,
        "workers": 0,
        "progress": False,
        "tensorboard": False,
        "augment": "none",
        "val_split": 0.25,
        "freeze_bn": False,  # only the callback keeps the statistics still
    }
    callback = FakeQuantCallback()
    result = effnet.fit(model, data, recipe, callbacks=[callback])
    after = result.model.state_dict()
    assert list(after) == list(before) and not has_fake_quant(result.model)
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    assert len(stats) > 60 and all(torch.equal(before[k], after[k]) for k in stats)
    changed = [k for k in before if k.endswith("conv.weight") and not torch.equal(before[k], after[k])]
    assert len(changed) > 40  # gradients passed the rounding
    assert result.history[0]["fake_quant_layers"] == 50
    saved = load_model(None, tmp_path / "qat" / "last.safetensors")  # a plain float checkpoint
    assert all(torch.equal(v, after[k]) for k, v in saved.state_dict().items())
    ranges = {name: o.range.clone() for name, o in callback.observers.items()}

    resumed = FakeQuantCallback()
    effnet.fit(load_model(None, weights), data, {**recipe, "resume": True}, callbacks=[resumed])
    assert resumed.observers.keys() == ranges.keys()
    assert all(torch.equal(resumed.observers[n].range, r) for n, r in ranges.items())


def test_quantize_qat_writes_a_model_and_leaves_the_checkpoint_alone(trained, tmp_path, capsys):
    data, weights = trained
    before = weights.read_bytes()
    out = tmp_path / "q"
    argv = ["quantize", "--weights", str(weights), "--data", str(data), "--out", str(out), "--mode", "qat", *FAST]
    assert main([*argv, "--qat-lr", "1e-3"]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert weights.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["bench.json", "model.onnx", "qat", "report.json"]
    report = CompressionReport.from_dict(json.loads((out / "report.json").read_text()))
    rows = {row.name: row for row in report.passes}
    other = [f"quantized ({r})" for r in ("onnxruntime", "openvino") if r != rows["quantized"].runtime]
    assert [row.name for row in report.passes] == ["float", "static", "qat-float", "quantized", *other]
    assert all(row.name in printed for row in report.passes)
    assert max(rows["quantized"].size_mb, rows["static"].size_mb) < 0.3 * rows["float"].size_mb
    assert rows["float"].latency_ms_onnxruntime and rows["quantized"].latency_ms_onnxruntime
    assert rows["qat-float"].latency_ms_onnxruntime is None  # the float network's speed; not timed again
    assert all(row.top1 is not None for row in report.passes) and len(report.quant_error) == 50
    assert [row.layer for row in report.quant_error if row.kept_float] == ["/stem/conv/Conv"]
    first_epoch = json.loads((out / "qat" / "metrics.jsonl").read_text().splitlines()[0])
    assert first_epoch["fake_quant_layers"] == 49  # the fine-tune did not round the stem either
    meta = json.loads(onnx.load(str(out / "model.onnx")).metadata_props[0].value)
    assert meta["quantization"]["mode"] == "qat" and meta["quantization"]["qat_lr"] == 1e-3
    tuned = load_model(None, out / "qat" / "last.safetensors")  # the fine-tuned network, a plain checkpoint
    original = load_model(None, weights)
    assert list(tuned.state_dict()) == list(original.state_dict())
    assert not torch.equal(tuned.stem.conv.weight, original.stem.conv.weight)
    # The int8 weights in the file are the grid the fine-tune trained with.
    compared, off_grid = _folded_grid_mismatches(tuned, out / "model.onnx")
    assert compared > 3_000_000 and off_grid <= compared * 1e-5

    assert main([*argv, "--resume"]) == 1  # finished: nothing left to resume
    assert "nothing to resume" in capsys.readouterr().err


def test_quantize_qat_per_tensor_trains_the_one_scale_grid_the_file_gets(trained, tmp_path, capsys):
    data, weights = trained
    out = tmp_path / "q"
    argv = ["quantize", "--weights", str(weights), "--data", str(data), "--out", str(out), "--mode", "qat",
            "--per-tensor", "--runtime", "onnxruntime", "--qat-lr", "1e-3", *FAST]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    meta = json.loads(onnx.load(str(out / "model.onnx")).metadata_props[0].value)
    assert meta["quantization"]["mode"] == "qat" and meta["quantization"]["per_channel"] is False
    tuned = load_model(None, out / "qat" / "last.safetensors")
    compared, off_grid = _folded_grid_mismatches(tuned, out / "model.onnx", per_channel=False)
    assert compared > 3_000_000 and off_grid <= compared * 1e-5


def test_the_layer_reading_the_image_is_found_and_can_stay_float():
    model = effnet.create_model("resnet18", num_classes=3)
    assert input_layers(model, 32) == ["conv1"] and model.training  # its mode is given back
    observers = insert_fake_quant(model, skip=["conv1"])
    assert "conv1" not in observers and len(observers) == 20 and _ATTRIBUTE not in model.conv1.__dict__
    callback = FakeQuantCallback(skip=["conv1"])
    callback.load_state_dict({"observers": {"conv1": {"range": [0.0, 1.0]}}})  # from a run that rounded it
    callback.attach(effnet.create_model("resnet18", num_classes=3))
    assert "conv1" not in callback.observers
    callback.detach()
