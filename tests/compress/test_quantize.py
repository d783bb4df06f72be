"""Quantization: the ONNX Runtime int8 / 16-bit files, bias correction, the per-layer error, and ``effnet quantize``."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from tests.conftest import randomize_batchnorm
from tests.training.conftest import make_image_folder

import effnet
from effnet.cli import main
from effnet.compress.quantize import (
    QuantizeConfig,
    QuantizedModel,
    _correct_biases,
    _dequantized_weights,
    layer_sensitivity,
    quantize_model,
    quantize_onnx,
)
from effnet.compress.quantize_runner import saturation_hint
from effnet.export import export_model
from effnet.export.formats import onnx_weight_count
from effnet.export.onnx_module import OnnxModule
from effnet.schemas import BenchReport, CompressionReport

SIZE = 32
TRAINED_MODEL = "efficientnet_lite0"  # for the trained fixture (conftest)
FAST = ["--workers", "0", "--repeats", "3", "--threads", "1", "--calib-images", "16"]
STEM = "/stem/conv/Conv"  # the convolution reading the image, float by default (QuantizeConfig.float_stem)


@pytest.fixture(scope="module")
def lite0(tmp_path_factory):
    """A Lite0 with 3 classes, its float export and 16 calibration images."""
    torch.manual_seed(0)
    model = randomize_batchnorm(effnet.create_model("efficientnet_lite0", num_classes=3))
    torch.nn.init.normal_(model.classifier.weight, std=0.05)  # initialised at zero: no signal to compare
    root = tmp_path_factory.mktemp("quantize")
    float_path = root / "float.onnx"
    export_model(model, "onnx", float_path, img_size=SIZE)
    images = torch.randn(24, 3, SIZE, SIZE)
    return model, float_path, images, root


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """ImageNet Lite0 exported at 64 px and 24 images: a network whose output depends on its input
    (a randomly initialised one gives nearly the same logits for every image, so nothing to rank)."""
    torch.manual_seed(0)
    model = effnet.create_model("efficientnet_lite0", weights="imagenet").eval()
    float_path = tmp_path_factory.mktemp("pretrained") / "float.onnx"
    export_model(model, "onnx", float_path, img_size=64)
    return float_path, torch.randn(24, 3, 64, 64)


def _ops(path):
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_static_int8_is_a_quarter_of_the_size_and_close_to_float(lite0):
    model, float_path, images, root = lite0
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = quantize_model(model, root / "int8.onnx", QuantizeConfig(calib_images=16), [images[:16]], SIZE)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the input is untouched
    # The stem reads the image in float (float weights, the image unrounded); the rest is int8.
    assert result.kept_float == [STEM] and _float_layers(result.path) == ({STEM}, {STEM})
    graph = onnx.load(str(result.path)).graph
    assert not any(n.op_type == "QuantizeLinear" and n.input[0] == graph.input[0].name for n in graph.node)
    assert result.path.stat().st_size <= 0.3 * float_path.stat().st_size
    assert result.calibration_images == 16 and result.bias_corrected > 40
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(result.path)
    quantized, reference = OnnxModule(result.path), OnnxModule(float_path)
    assert quantized.pretrained_meta["classes"] == model.pretrained_meta["classes"]  # metadata kept
    meta = json.loads(onnx.load(str(result.path)).metadata_props[0].value)
    assert meta["quantization"]["mode"] == "static" and meta["quantization"]["activations"] == "uint8"
    assert meta["quantization"]["float_stem"] is True
    # the same weights counted in both files (int8 weights and int32 biases; scales are not weights)
    params = onnx_weight_count(onnx.load(str(float_path)))[0]
    assert QuantizedModel(result.path).compression_stats().params == params > 3_300_000
    test = images[16:]
    noise = quantized(test) - reference(test)
    sqnr = 10 * torch.log10(reference(test).pow(2).mean() / noise.pow(2).mean())
    assert sqnr > 10  # dB, on random weights and inputs
    # The per-layer error: every Conv and the classifier, worst first.
    layers = result.layers
    assert len(layers) == 50 and layers[-1]["sqnr_db"] >= layers[0]["sqnr_db"] > 0
    assert all(row["mse"] >= 0 for row in layers)


def _int8_weights(path):
    graph = onnx.load(str(path)).graph
    return [numpy_helper.to_array(i) for i in graph.initializer if i.data_type == TensorProto.INT8 and len(i.dims) > 1]


def test_reduce_range_stores_weights_in_7_bits_and_stays_close_to_float(lite0, tmp_path):
    _, float_path, images, _ = lite0
    calib, test = images[:16].numpy(), images[16:]
    config = QuantizeConfig(calib_images=16, reduce_range=True, float_stem=False)  # the stem in int8 too
    result = quantize_onnx(float_path, tmp_path / "r7.onnx", config, calib)
    weights = _int8_weights(result.path)
    assert len(weights) == 50 and result.kept_float == []  # every convolution and the classifier
    assert max(np.abs(w).max() for w in weights) == 64  # 7 bits: each channel's largest weight on +-64
    assert _float_layers(result.path) == (set(), set())  # no float weights, no unrounded input
    meta = json.loads(onnx.load(str(result.path)).metadata_props[0].value)
    assert meta["quantization"]["reduce_range"] is True and meta["quantization"]["float_stem"] is False
    reference = OnnxModule(float_path)(test)
    noise = OnnxModule(result.path)(test) - reference
    assert 10 * torch.log10(reference.pow(2).mean() / noise.pow(2).mean()) > 6  # dB, half the weight levels
    dynamic = quantize_onnx(float_path, tmp_path / "d7.onnx", QuantizeConfig(mode="dynamic", reduce_range=True))
    (classifier,) = _int8_weights(dynamic.path)
    assert np.abs(classifier).max() <= 64


def test_an_int8_drop_on_a_cpu_without_vnni_suggests_7_bit_weights():
    no_vnni, config = {"sse2", "avx2", "fma"}, QuantizeConfig()
    assert "--reduce-range" in saturation_hint(no_vnni, 1.2, config)
    assert saturation_hint(no_vnni | {"avx512_vnni"}, 1.2, config) is None  # 32-bit sums: nothing saturates
    assert saturation_hint(no_vnni | {"avx_vnni"}, 1.2, config) is None
    assert saturation_hint({"fp", "asimd"}, 1.2, config) is None  # not x86
    assert saturation_hint(no_vnni, 0.3, config) is None  # within what int8 may lose
    assert saturation_hint(no_vnni, 1.2, QuantizeConfig(reduce_range=True)) is None  # already 7 bits
    assert saturation_hint(no_vnni, 1.2, QuantizeConfig(dtype="fp16")) is None  # no integer kernels


def test_layers_kept_in_float_are_not_quantized(lite0):
    model, _, images, root = lite0
    config = QuantizeConfig(calib_images=16, keep_float=("/stem/*", "/classifier/*"))
    result = quantize_model(model, root / "mixed.onnx", config, [images[:16]], SIZE)
    graph = onnx.load(str(result.path)).graph
    producer = {o: n for n in graph.node for o in n.output}
    stem = next(n for n in graph.node if n.name == "/stem/conv/Conv")
    assert producer[stem.input[1]].op_type != "DequantizeLinear" if stem.input[1] in producer else True
    assert "/stem/conv/Conv" in result.kept_float and "/classifier/Gemm" in result.kept_float
    assert "/stem/conv/Conv" not in _dequantized_weights(onnx.load(str(result.path)))
    # Their inputs are not rounded either: ONNX Runtime's optimizer rounds the float weights of a
    # layer that a DequantizeLinear feeds again (per tensor) when the file loads.
    float_weights, float_inputs = _float_layers(result.path)
    assert float_weights == float_inputs == {"/stem/conv/Conv", "/classifier/Gemm"}


def test_sixteen_bit_storage_halves_the_file_and_keeps_the_outputs(lite0):
    model, float_path, images, root = lite0
    reference = OnnxModule(float_path)(images)
    for dtype, tolerance in (("fp16", 2e-3), ("bf16", 2e-2)):
        result = quantize_model(model, root / f"{dtype}.onnx", QuantizeConfig(dtype=dtype), None, SIZE)
        assert result.path.stat().st_size <= 0.55 * float_path.stat().st_size
        out = OnnxModule(result.path)(images)
        assert (out - reference).abs().max() <= tolerance * reference.abs().max() + 1e-3, dtype


def test_dynamic_quantizes_the_classifier_only(lite0):
    model, float_path, images, root = lite0
    result = quantize_model(model, root / "dynamic.onnx", QuantizeConfig(mode="dynamic"), None, SIZE)
    ops = _ops(result.path)
    assert "DynamicQuantizeLinear" in ops and "Conv" in ops and "ConvInteger" not in ops
    assert result.path.stat().st_size < float_path.stat().st_size
    assert OnnxModule(result.path)(images).shape == (24, 3)


def test_adaround_rounds_onto_the_grid_with_less_output_error_than_nearest():
    from effnet.compress.quantize import _adaround_layer

    torch.manual_seed(0)
    weight = torch.randn(16, 8, 3, 3) * 0.1
    # Inputs like activations: smooth in space and mostly positive. (With independent inputs,
    # rounding to nearest is already the best there is: each weight's error adds up on its own.)
    x = torch.relu(torch.nn.functional.interpolate(torch.randn(16, 8, 4, 4), size=12, mode="bilinear") + 0.3)
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1], group=1)
    learned = _adaround_layer(node, weight, x, iters=200)
    scale = weight.abs().amax(dim=(1, 2, 3), keepdim=True) / 127
    steps = learned / scale
    assert torch.allclose(steps, steps.round(), atol=1e-3)  # on the int8 grid ONNX Runtime uses
    assert torch.allclose(learned.abs().amax(dim=(1, 2, 3)), weight.abs().amax(dim=(1, 2, 3)), rtol=1e-6)
    nearest = (weight / scale).round() * scale
    assert ((learned - nearest) != 0).float().mean() > 0.01  # some weights rounded the other way

    def error(w):
        conv = torch.nn.functional.conv2d
        return (conv(x, w, padding=1) - conv(x, weight, padding=1)).pow(2).mean()

    assert error(learned) < 0.7 * error(nearest)  # 0.54x when written


def test_adaround_rounding_is_what_the_int8_file_computes_with(lite0):
    model, float_path, images, root = lite0
    config = QuantizeConfig(calib_images=16, rounding="adaround", adaround_iters=20, bias_correction=False)
    result = quantize_model(model, root / "adaround.onnx", config, [images[:16]], SIZE)
    meta = json.loads(onnx.load(str(result.path)).metadata_props[0].value)
    assert meta["quantization"]["rounding"] == "adaround"
    from effnet.compress.quantize import _dequantized_weights

    learned = _dequantized_weights(onnx.load(str(result.path)))
    plain = quantize_model(model, root / "nearest.onnx", QuantizeConfig(calib_images=16, bias_correction=False),
                           [images[:16]], SIZE)  # fmt: skip
    nearest = _dequantized_weights(onnx.load(str(plain.path)))
    assert learned.keys() == nearest.keys() and len(learned) == 49  # all but the stem, float by default
    # Same grid (scales), other rounding for some weights: the quantizer kept AdaRound's choice.
    changed = [name for name in learned if not np.allclose(learned[name], nearest[name])]
    assert len(changed) > 25
    for name in learned:
        assert np.allclose(np.abs(learned[name]).max(), np.abs(nearest[name]).max(), rtol=1e-5)


def test_bias_correction_subtracts_the_rounding_error_times_the_input_mean():
    """One 1x1 convolution: the corrected bias is b - (W_q - W) @ E[x], exactly."""
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(4, 3, 1, 1)).astype(np.float32)
    bias = rng.normal(size=4).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4, 5, 5])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    scale = np.full(4, 0.05, np.float32)
    q = np.clip(np.round(weight / scale[:, None, None, None]), -127, 127).astype(np.int8)
    quantized = helper.make_model(
        helper.make_graph(
            [
                helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["wd"], axis=0),
                helper.make_node("Conv", ["x", "wd", "b"], ["y"], name="conv"),
            ],
            "q",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 5, 5])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4, 5, 5])],
            [
                numpy_helper.from_array(q, "wq"),
                numpy_helper.from_array(scale, "s"),
                numpy_helper.from_array(np.zeros(4, np.int8), "z"),
                numpy_helper.from_array(bias, "b"),
            ],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
        ir_version=9,
    )
    images = (rng.normal(size=(6, 3, 5, 5)) + np.array([1.0, -2.0, 3.0])[None, :, None, None]).astype(np.float32)
    fixed, corrected = _correct_biases(model, quantized, images)
    assert corrected == 1
    new_bias = numpy_helper.to_array(next(i for i in fixed.graph.initializer if i.name == "b"))
    delta = q.astype(np.float64) * scale[:, None, None, None] - weight
    expected = bias - delta[:, :, 0, 0] @ images.mean(axis=(0, 2, 3))
    np.testing.assert_allclose(new_bias, expected, rtol=1e-5, atol=1e-6)
    assert numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "b")).tolist() == bias.tolist()


def _softmax_kl(reference, out):
    log_p, log_q = reference.log_softmax(1).double(), out.log_softmax(1).double()
    return (log_p.exp() * (log_p - log_q)).sum(1).mean().item()


def test_output_sensitivity_ranks_a_layer_that_quantizes_badly_first_and_auto_float_keeps_it(pretrained, tmp_path):
    """One input channel of a convolution made 1000x larger (and its weights 1000x smaller): the same
    float function, but rounding that input per tensor loses the other channels. That layer alone
    moves the output most; ``auto_float=3`` keeps exactly it and the next two in float (the
    classifier, kept by pattern, is not ranked), each reading an unrounded input."""
    float_path, images = pretrained
    producer_name, victim = (
        "/stages/stages.0/stages.0.0/project/conv/Conv",
        "/stages/stages.1/stages.1.0/expand/conv/Conv",
    )
    model = onnx.load(str(float_path))
    nodes = {n.name: n for n in model.graph.node}
    assert nodes[victim].input[0] == nodes[producer_name].output[0]  # wired directly: no activation between
    values = {i.name: i for i in model.graph.initializer}

    def scale(name, factor, index):
        array = numpy_helper.to_array(values[name]).copy()
        array[index] *= factor
        values[name].CopyFrom(numpy_helper.from_array(array, name))

    scale(nodes[producer_name].input[1], 1000.0, 0)  # output channel 0 of the producer ...
    scale(nodes[producer_name].input[2], 1000.0, 0)
    scale(nodes[victim].input[1], 1e-3, (slice(None), 0))  # ... read 1000x weaker by the victim
    edited = tmp_path / "edited.onnx"
    onnx.save(model, str(edited))
    test = images[16:]
    reference = OnnxModule(edited)(test)
    assert torch.allclose(reference, OnnxModule(float_path)(test), rtol=1e-3, atol=1e-3)  # same float function

    plain = quantize_onnx(edited, tmp_path / "plain.onnx", QuantizeConfig(calib_images=16), images[:16].numpy())
    ranking = layer_sensitivity(edited, plain.path, images[:16].numpy())
    assert len(ranking) == 49 and ranking[0]["layer"] == victim  # the stem is float already
    assert ranking[0]["kl"] > 10 * ranking[1]["kl"]
    assert plain.sensitivity == [] and plain.kept_float == [STEM]  # measured only when asked for

    config = QuantizeConfig(calib_images=16, auto_float=3, keep_float=("/classifier/*",))
    mixed = quantize_onnx(edited, tmp_path / "mixed.onnx", config, images[:16].numpy())
    chosen = [row["layer"] for row in mixed.sensitivity[:3]]
    assert chosen[0] == victim
    ranked = {r["layer"] for r in mixed.sensitivity}
    assert len(ranked) == 48 and not ranked & {"/classifier/Gemm", STEM}  # kept by pattern and by default
    assert sorted(mixed.kept_float) == sorted(["/classifier/Gemm", STEM, *chosen])
    float_weights, float_inputs = _float_layers(mixed.path)
    assert float_weights == {"/classifier/Gemm", STEM, *chosen}  # the other 45 layers have int8 weights
    assert set(chosen) <= float_inputs  # and the chosen ones read an unrounded input
    kls = [row["kl"] for row in mixed.sensitivity]
    assert kls == sorted(kls, reverse=True) and kls[-1] >= 0
    meta = json.loads(onnx.load(str(mixed.path)).metadata_props[0].value)["quantization"]
    assert meta["auto_float"] == 3 and meta["kept_float"] == mixed.kept_float
    assert len(mixed.layers) == 50
    before, after = (
        _softmax_kl(reference, OnnxModule(plain.path)(test)),
        _softmax_kl(reference, OnnxModule(mixed.path)(test)),
    )
    assert after < 0.2 * before


def _float_layers(path):
    """Conv/Gemm nodes of a quantized file whose weights no DequantizeLinear feeds, and those whose input none feeds."""
    graph = onnx.load(str(path)).graph
    producer = {o: n for n in graph.node for o in n.output}
    layers = [n for n in graph.node if n.op_type in ("Conv", "Gemm")]

    def dequantized(tensor):
        return tensor in producer and producer[tensor].op_type == "DequantizeLinear"

    return {n.name for n in layers if not dequantized(n.input[1])}, {
        n.name for n in layers if not dequantized(n.input[0])
    }


def test_classifier_bits_4_stores_the_classifier_at_4_bits_with_its_bias_corrected(pretrained, tmp_path):
    from effnet.compress.quantize import CLASSIFIER_BLOCK, _input_means, _matmul_nbits_weight

    float_path, images = pretrained
    calib = images[:16].numpy()
    four = quantize_onnx(float_path, tmp_path / "c4.onnx", QuantizeConfig(calib_images=16, classifier_bits=4), calib)
    graph = onnx.load(str(four.path)).graph
    (node,) = [n for n in graph.node if n.op_type == "MatMulNBits"]
    ops = [n.op_type for n in graph.node]
    assert "Gemm" not in ops and ops.count("DequantizeLinear") > 49  # the convolutions stay int8 QDQ
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert (attrs["bits"], attrs["block_size"], attrs["K"], attrs["N"]) == (4, CLASSIFIER_BLOCK, 1280, 1000)
    # 1.28M weights at half a byte instead of one: 0.25x the float file, where all-int8 is 0.28x
    assert four.path.stat().st_size < 0.26 * float_path.stat().st_size
    constants = {i.name: i for i in graph.initializer}
    rounded = _matmul_nbits_weight(node, constants, 1280)  # (in, out)
    float_graph = onnx.load(str(float_path)).graph
    values = {i.name: numpy_helper.to_array(i) for i in float_graph.initializer}
    (gemm,) = [n for n in float_graph.node if n.op_type == "Gemm"]
    weight, bias = values[gemm.input[1]].T.astype(np.float64), values[gemm.input[2]].astype(np.float64)
    # every weight is its block's scale times an integer in [-8, 7] (4 bits), the nearest such one
    # but where the block's largest magnitude has the other sign and +8 is clipped to +7
    scales = numpy_helper.to_array(constants[node.input[2]]).astype(np.float64).reshape(1000, 40).T  # (block, out)
    grid = rounded.reshape(40, CLASSIFIER_BLOCK, 1000) / scales[:, None, :]
    assert np.allclose(grid, grid.round(), atol=1e-3) and grid.round().min() >= -8 and grid.round().max() <= 7
    error = np.abs(rounded - weight).reshape(40, CLASSIFIER_BLOCK, 1000) / np.abs(scales[:, None, :])
    assert error.max() <= 1.0 + 1e-4 and np.mean(error <= 0.5 + 1e-4) > 0.99
    # the bias absorbs the mean error the rounding adds (measured on the float network's pool output)
    mean = _input_means(onnx.load(str(float_path)), [gemm.name], calib)[gemm.name].astype(np.float64)
    stored = numpy_helper.to_array(constants[f"{gemm.name}_bias"]).astype(np.float64)
    np.testing.assert_allclose(stored, bias - mean @ (rounded - weight), rtol=1e-4, atol=1e-5)
    assert [row["layer"] for row in four.layers if "classifier" in row["layer"]] == [gemm.name]
    assert QuantizedModel(four.path).compression_stats().params == onnx_weight_count(onnx.load(str(float_path)))[0]
    reference, test = OnnxModule(float_path)(images[16:]), images[16:]
    assert torch.allclose(OnnxModule(four.path)(test), reference, atol=0.5 * reference.abs().max().item())
    meta = json.loads(onnx.load(str(four.path)).metadata_props[0].value)["quantization"]
    assert meta["classifier_bits"] == 4


def test_a_classifier_kept_in_float_is_not_stored_at_4_bits(lite0, tmp_path):
    _, float_path, images, _ = lite0
    config = QuantizeConfig(calib_images=16, classifier_bits=4, keep_float=("/classifier/*",))
    result = quantize_onnx(float_path, tmp_path / "kept.onnx", config, images[:16].numpy())
    assert "MatMulNBits" not in _ops(result.path) and _float_layers(result.path)[0] == {"/classifier/Gemm", STEM}


def test_classifier_bits_4_without_calibration_is_weight_only(pretrained, tmp_path):
    float_path, images = pretrained
    config = QuantizeConfig(mode="dynamic", classifier_bits=4)
    result = quantize_onnx(float_path, tmp_path / "w4.onnx", config, images[:16].numpy())
    ops = [n.op_type for n in onnx.load(str(result.path)).graph.node]
    assert ops.count("MatMulNBits") == 1 and "DequantizeLinear" not in ops and ops.count("Conv") == 49
    reference = OnnxModule(float_path)(images[16:])
    assert (OnnxModule(result.path)(images[16:]).argmax(1) == reference.argmax(1)).float().mean() >= 0.75


def _input_scale(path):
    graph = onnx.load(str(path)).graph
    node = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == graph.input[0].name)
    return float(numpy_helper.to_array(next(i for i in graph.initializer if i.name == node.input[1])))


def test_moving_average_observer_takes_the_mean_of_per_image_extremes(lite0, tmp_path):
    _, float_path, images, _ = lite0
    calib = images[:16].numpy().copy()  # the fixture's images stay as they are
    calib[3] *= 3  # one outlier image: min/max follows it, the mean of per-image extremes much less
    # The image's own range shows what the observer did: it is quantized when the stem is int8.
    config = QuantizeConfig(calib_images=16, observer="moving_average", bias_correction=False, float_stem=False)
    averaged = quantize_onnx(float_path, tmp_path / "avg.onnx", config, calib)
    int8_stem = QuantizeConfig(calib_images=16, float_stem=False)
    minmax = quantize_onnx(float_path, tmp_path / "mm.onnx", int8_stem, calib)
    flat = calib.reshape(len(calib), -1)
    low, high = min(0.0, flat.min(1).mean()), max(0.0, flat.max(1).mean())
    assert _input_scale(averaged.path) == pytest.approx((high - low) / 255, rel=1e-5)
    assert _input_scale(minmax.path) == pytest.approx((flat.max() - min(0.0, flat.min())) / 255, rel=1e-5)
    meta = json.loads(onnx.load(str(averaged.path)).metadata_props[0].value)["quantization"]
    assert meta["observer"] == "moving_average"


def test_mse_range_trades_clipping_against_rounding():
    from effnet.compress.quantize import _mse_range

    rng = np.random.default_rng(0)
    gauss, edges = np.histogram(rng.standard_normal(1_000_000), 2048, range=(-6, 6))
    low, high = (float(v) for v in _mse_range(gauss, edges).values())
    assert -4.5 < low < -3.0 and 3.0 < high < 4.5  # the rare tails are clipped, not the body
    uniform, edges = np.histogram(rng.uniform(0, 3, 100_000), 2048, range=(-3, 3))
    low, high = (float(v) for v in _mse_range(uniform, edges).values())
    assert low == 0.0 and high == pytest.approx(3.0, abs=0.01)  # nothing to gain by clipping a uniform


def test_mse_observer_quantizes_with_the_ranges_it_computes(lite0, tmp_path):
    from effnet.compress.quantize import _mse_ranges

    _, float_path, images, _ = lite0
    calib = images[:16].numpy()
    config = QuantizeConfig(calib_images=16, observer="mse", bias_correction=False, float_stem=False)
    result = quantize_onnx(float_path, tmp_path / "mse.onnx", config, calib)
    name = onnx.load(str(result.path)).graph.input[0].name
    (chosen,) = _mse_ranges(float_path, calib)[name]
    low, high = float(chosen["rmin"]), float(chosen["rmax"])
    assert low > calib.min() and high < calib.max()  # Gaussian inputs: the tails are clipped
    assert _input_scale(result.path) == pytest.approx((high - low) / 255, rel=1e-5)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"calib_images": 4}, "at least 16 calibration images"),
        ({"dtype": "fp16", "mode": "dynamic"}, "no dynamic mode"),
        ({"percentile": 100.0}, "percentile must be"),
        ({"observer": "l1"}, "observer must be one of minmax, moving_average, percentile, entropy, mse"),
        ({"classifier_bits": 2}, "classifier_bits must be 8 or 4"),
        ({"classifier_bits": 4, "dtype": "bf16"}, "classifier_bits 4 is a weight format of the int8 modes"),
        ({"auto_float": -1}, "auto_float must be a whole number of layers"),
        ({"auto_float": 1.5}, "auto_float must be a whole number of layers"),
        ({"auto_float": True}, "auto_float must be a whole number of layers"),
        ({"auto_float": 2, "mode": "dynamic"}, "auto_float ranks layers of a calibrated int8 model"),
        ({"auto_float": 2, "dtype": "fp16"}, "auto_float ranks layers of a calibrated int8 model"),
        ({"sensitivity_images": 0}, "sensitivity_images must be at least 1"),
    ],
)
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(effnet.EffnetError, match=f"invalid quantize settings: .*{message}"):
        QuantizeConfig(**settings)


def test_quantize_is_a_pass_that_chains_after_pruning(lite0, tmp_path):
    from effnet.compress import PassContext, apply_pass

    model, _, images, _ = lite0
    pruned, _ = apply_pass(model, "prune_channels", target=0.3, target_kind="flops")
    context = PassContext(img_size=SIZE, data=[images[:16]])
    quantized, report = apply_pass(pruned, QuantizeConfig(calib_images=16, keep_float="/stem/*"), context)
    assert report.config["keep_float"] == ["/stem/*"] and report.details["calibration_images"] == 16
    assert report.after.size_bytes < 0.3 * report.before.size_bytes
    saved = quantized.save(tmp_path / "chained.onnx")
    meta = json.loads(onnx.load(str(saved)).metadata_props[0].value)
    widths = [block["hidden_channels"] for block in meta["arch"]["layout"]["blocks"]]
    assert widths != [block["hidden_channels"] for block in model.arch_dict()["layout"]["blocks"]]  # pruned arch
    assert OnnxModule(saved)(images[16:]).shape == (8, 3)


def test_too_few_images_and_unknown_layers_are_refused(lite0, tmp_path):
    model, _, images, _ = lite0
    with pytest.raises(effnet.EffnetError, match="at least 16 calibration images, got 8"):
        quantize_model(model, tmp_path / "q.onnx", QuantizeConfig(calib_images=16), [images[:8]], SIZE)
    with pytest.raises(effnet.EffnetError, match="'/nothing/\\*' matches no layer"):
        quantize_model(model, tmp_path / "q.onnx", QuantizeConfig(keep_float=("/nothing/*",)), [images], SIZE)
    with pytest.raises(effnet.EffnetError, match="auto_float 50 is more than the 49 layers there are to quantize"):
        config = QuantizeConfig(calib_images=16, auto_float=50, keep_float=("/stem/*",))
        quantize_model(model, tmp_path / "q.onnx", config, [images], SIZE)
    assert not (tmp_path / "q.onnx").exists()


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.rand(16, 3, SIZE, SIZE) * 255, r"range from .* to 25\d, but the model's preprocessing .* 0-255 pixels"),
        (torch.rand(16, 3, SIZE, SIZE), "no value below 0, .* they look unnormalised"),
        (torch.randn(16, 3, SIZE + 8, SIZE + 8), "calibration images are 3x40x40, the model is quantized for 3x32x32"),
        (torch.randn(16, 1, SIZE, SIZE), "calibration images are 1x32x32"),
    ],
)
def test_calibration_images_prepared_otherwise_are_refused(lite0, tmp_path, images, message):
    model = lite0[0]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(effnet.EffnetError, match=message):
        quantize_model(model, tmp_path / "q.onnx", QuantizeConfig(calib_images=16), [images], SIZE)
    assert not (tmp_path / "q.onnx").exists()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# -- effnet quantize ------------------------------------------------------------------------------


def test_quantize_writes_a_model_every_command_runs(trained, tmp_path, capsys, monkeypatch):
    data, weights = trained
    before = weights.read_bytes()
    out = tmp_path / "q"
    # As on an x86 CPU without VNNI where int8 lost accuracy: the command suggests 7-bit weights.
    monkeypatch.setattr("effnet.bench.measure.cpu_flags", lambda: {"sse2", "avx2"})
    monkeypatch.setattr("effnet.compress.quantize_runner.SATURATION_DROP", -101.0)
    argv = ["quantize", "--weights", str(weights), "--data", str(data), "--out", str(out), *FAST]
    assert main(argv) == 0, capsys.readouterr().err
    captured = capsys.readouterr()
    printed = captured.out
    assert "without VNNI" in captured.err and "compare --reduce-range" in captured.err
    assert "float" in printed and "quantized" in printed and "worst layer" in printed
    assert weights.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["bench.json", "model.onnx", "report.json"]
    report = CompressionReport.from_dict(json.loads((out / "report.json").read_text()))
    # --runtime auto timed the quantized file in both runtimes and recorded the faster accurate one.
    original, quantized, other = report.passes
    meta = json.loads(onnx.load(str(out / "model.onnx")).metadata_props[0].value)
    measured = meta["quantization"]["runtimes_measured"]
    assert sorted(measured) == ["onnxruntime", "openvino"] and quantized.runtime == meta["runtime"]
    assert other.name == f"quantized ({other.runtime})" and other.runtime != quantized.runtime
    assert quantized.latency_ms == measured[quantized.runtime]["latency_ms"]
    assert quantized.top1 == measured[quantized.runtime]["top1"] and other.top1 == measured[other.runtime]["top1"]
    assert quantized.size_mb < 0.3 * original.size_mb
    assert original.latency_ms_onnxruntime and quantized.latency_ms_onnxruntime and other.latency_ms
    assert original.top1 is not None and quantized.top1 is not None
    assert len(report.quant_error) == 50
    bench = BenchReport.from_dict(json.loads((out / "bench.json").read_text()))
    assert len(bench.results) == 4  # float and quantized, each in both runtimes
    precision = {(Path(r.model).name, r.precision) for r in bench.results}
    assert precision == {("float.onnx", "fp32"), ("model.onnx", "int8")}  # as recorded, not the input's type

    model = str(out / "model.onnx")
    assert main(["eval", "--weights", model, "--data", str(data), "--workers", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 36
    from effnet.training.eval_checkpoint import evaluate_checkpoint

    assert evaluate_checkpoint(model, str(data), workers=0, max_images=10).n == 10  # the recipes' test_images
    image = next(iter((data / "class_0").iterdir()))
    assert main(["predict", str(image), "--weights", model, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["predictions"][0]["label"].startswith("class_")
    assert main(["bench", model, "--repeats", "2", "--warmup", "1", "--threads", "1", "--json"]) == 0
    assert [r["runtime"] for r in json.loads(capsys.readouterr().out)["results"]] == [meta["runtime"]]

    html = tmp_path / "report.html"
    done = subprocess.run(
        [sys.executable, "-m", "effnet", "report", str(out / "report.json"), "--out", str(html)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "quantized" in html.read_text()


def test_runtime_choice_is_the_fastest_within_the_accuracy_tolerance():
    from effnet.compress.quantize_runner import _choose_runtime

    def runs(ort, ov):
        return {"onnxruntime": {"top1": ort[0], "latency_ms": ort[1]}, "openvino": {"top1": ov[0], "latency_ms": ov[1]}}

    assert _choose_runtime("auto", runs((90.0, 1.0), (90.0, 0.8))) == "openvino"
    assert _choose_runtime("auto", runs((90.0, 1.0), (89.6, 0.8))) == "openvino"  # within 0.5 points
    assert _choose_runtime("auto", runs((90.0, 1.0), (89.0, 0.8))) == "onnxruntime"  # faster but less accurate
    assert _choose_runtime("auto", runs((90.0, 0.7), (90.3, 0.8))) == "onnxruntime"
    assert _choose_runtime("openvino", runs((90.0, 0.7), (80.0, 0.8))) == "openvino"  # asked for
    timed = runs((90.0, 1.0), (90.0, 0.8))  # wall clock says OpenVINO; one-thread CPU time says otherwise
    timed["onnxruntime"]["cpu_ms"], timed["openvino"]["cpu_ms"] = 0.6, 0.7
    assert _choose_runtime("auto", timed) == "onnxruntime"


def test_a_file_quantized_for_openvino_runs_there_and_falls_back_without_it(trained, tmp_path, capsys, monkeypatch):
    data, weights = trained
    out = tmp_path / "q"
    argv = ["quantize", "--weights", str(weights), "--data", str(data), "--out", str(out), *FAST]
    assert main([*argv, "--runtime", "openvino"]) == 0, capsys.readouterr().err
    assert "openvino" in capsys.readouterr().out
    model = str(out / "model.onnx")
    module = OnnxModule(model)
    assert module.runtime == "openvino"
    images = torch.randn(3, 3, SIZE, SIZE)
    in_ort = OnnxModule(model, runtime="onnxruntime")(images)
    assert torch.allclose(module(images), in_ort, atol=0.1)  # the same int8 file, two runtimes' kernels
    assert main(["bench", model, "--repeats", "2", "--warmup", "1", "--threads", "1", "--json"]) == 0
    assert [r["runtime"] for r in json.loads(capsys.readouterr().out)["results"]] == ["openvino"]
    # Where OpenVINO is missing the file still runs, in ONNX Runtime, and says so; asking for it is refused.
    monkeypatch.setattr("effnet.export.ov_runtime.openvino_available", lambda: False)
    assert OnnxModule(model).runtime == "onnxruntime"
    assert "running it in ONNX Runtime" in capsys.readouterr().err
    assert main(["bench", model, "--repeats", "2", "--warmup", "1", "--threads", "1", "--json"]) == 0
    assert [r["runtime"] for r in json.loads(capsys.readouterr().out)["results"]] == ["onnxruntime"]
    monkeypatch.setattr("effnet.compress.quantize_runner.openvino_available", lambda: False)
    refused = ["quantize", "--weights", str(weights), "--data", str(data), "--out", str(tmp_path / "o"), *FAST]
    assert main([*refused, "--runtime", "openvino"]) == 1
    err = capsys.readouterr().err
    assert "needs the openvino package" in err and "Traceback" not in err and not (tmp_path / "o").exists()


def test_quantize_auto_float_reports_the_layers_kept(trained, tmp_path, capsys):
    data, weights = trained
    out = tmp_path / "q"
    argv = ["quantize", "--weights", str(weights), "--data", str(data), "--out", str(out), *FAST, "--auto-float", "2"]
    assert main([*argv, "--int8-stem"]) == 0, capsys.readouterr().err  # the stem ranked with the others
    printed = capsys.readouterr().out
    report = CompressionReport.from_dict(json.loads((out / "report.json").read_text()))
    kept = [row.layer for row in report.quant_error if row.kept_float]
    assert len(kept) == 2 and f"kept in float: {', '.join(kept)}" in printed
    assert all(row.output_kl is not None for row in report.quant_error)
    most = sorted(report.quant_error, key=lambda row: -row.output_kl)[:2]
    assert {row.layer for row in most} == set(kept)
    assert _float_layers(out / "model.onnx")[0] == set(kept)
    meta = json.loads(onnx.load(str(out / "model.onnx")).metadata_props[0].value)["quantization"]
    assert meta["auto_float"] == 2 and sorted(meta["kept_float"]) == sorted(kept) and meta["float_stem"] is False


def _settings_in_file(path):
    """(activation type, per-channel, largest |weight|) as the int8 file stores them."""
    graph = onnx.load(str(path)).graph
    init = {i.name: i for i in graph.initializer}
    activation_types = {init[n.input[2]].data_type for n in graph.node if n.op_type == "QuantizeLinear"}
    weight_scales = [
        numpy_helper.to_array(init[n.input[1]])
        for n in graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in init and init[n.input[0]].data_type == TensorProto.INT8
    ]
    (activations,) = activation_types
    per_channel = {scale.size > 1 for scale in weight_scales}
    assert len(per_channel) == 1
    largest = max(int(np.abs(w).max()) for w in _int8_weights(path))
    return {TensorProto.UINT8: "uint8", TensorProto.INT8: "int8"}[activations], per_channel.pop(), largest


def test_tune_keeps_the_fastest_setting_within_the_tolerance_and_reports_every_file(trained, tmp_path, capsys):
    from effnet.compress.quantize_runner import RUNTIME_TOP1_TOLERANCE, TUNED_SETTINGS, fastest_accurate

    data, weights = trained
    out = tmp_path / "q"
    argv = ["quantize", "--weights", str(weights), "--data", str(data), "--out", str(out), *FAST, "--tune"]
    assert main(argv) == 0, capsys.readouterr().err
    assert "tuned: " in capsys.readouterr().err
    # Eight files, each written with the setting its name says.
    assert sorted(p.stem for p in (out / "tune").iterdir()) == sorted(TUNED_SETTINGS) and len(TUNED_SETTINGS) == 8
    for label, (activations, per_channel, reduce) in TUNED_SETTINGS.items():
        assert _settings_in_file(out / "tune" / f"{label}.onnx") == (activations, per_channel, 64 if reduce else 127)
    meta = json.loads(onnx.load(str(out / "model.onnx")).metadata_props[0].value)
    tuned, quantization = meta["quantization"]["tuned"], meta["quantization"]
    activations, per_channel, reduce = TUNED_SETTINGS[tuned["chosen"]]
    assert (quantization["activations"], quantization["per_channel"], quantization["reduce_range"]) == (
        activations, per_channel, reduce,
    )  # fmt: skip
    assert _settings_in_file(out / "model.onnx") == (activations, per_channel, 64 if reduce else 127)
    # The choice is the rule applied to what was measured: 8 files x 2 runtimes.
    measured = {tuple(k[:-1].split(" (")): m for k, m in tuned["measured"].items()}
    assert len(measured) == 16 and fastest_accurate(measured) == (tuned["chosen"], meta["runtime"])
    best = max(m["top1"] for m in measured.values())
    assert measured[(tuned["chosen"], meta["runtime"])]["top1"] >= best - RUNTIME_TOP1_TOLERANCE
    report = CompressionReport.from_dict(json.loads((out / "report.json").read_text()))
    names = [row.name for row in report.passes]
    assert names[:2] == ["float", "quantized"] and len(names) == 17
    assert {f"{label} ({runtime})" for label, runtime in measured} - set(names[2:]) == {
        f"{tuned['chosen']} ({meta['runtime']})"
    }  # every pair but the chosen one, which is the quantized row
    chosen = report.passes[1]
    assert chosen.runtime == meta["runtime"] and chosen.top1 == measured[(tuned["chosen"], meta["runtime"])]["top1"]
    assert len(json.loads((out / "bench.json").read_text())["results"]) == 18  # float + 8 files, 2 runtimes


def test_tune_tries_every_setting_the_other_options_allow():
    from effnet.compress.quantize_runner import TUNED_SETTINGS, _tuned_configs

    every = _tuned_configs(QuantizeConfig(observer="mse", auto_float=2))
    assert list(every) == list(TUNED_SETTINGS)
    assert all(c.observer == "mse" and c.auto_float == 2 for c in every.values())  # the rest applies to all
    assert {(c.activations, c.per_channel, c.reduce_range) for c in every.values()} == set(TUNED_SETTINGS.values())
    # AdaRound learns 8-bit per-channel rounding: only the activation type is left to try.
    assert list(_tuned_configs(QuantizeConfig(rounding="adaround"))) == ["u8-channel", "s8-channel"]


def test_the_fastest_accurate_pair_is_chosen_among_files_and_runtimes():
    from effnet.compress.quantize_runner import fastest_accurate

    measured = {
        ("u8-channel", "onnxruntime"): {"top1": 92.0, "latency_ms": 0.60},
        ("u8-tensor", "onnxruntime"): {"top1": 91.6, "latency_ms": 0.55},
        ("s8-tensor", "onnxruntime"): {"top1": 91.6, "latency_ms": 1.60},
        ("u8-tensor-7bit", "openvino"): {"top1": 91.0, "latency_ms": 0.40},  # faster, 1 point less accurate
    }
    assert fastest_accurate(measured) == ("u8-tensor", "onnxruntime")
    measured[("u8-channel", "openvino")] = {"top1": 92.4, "latency_ms": 0.58}  # raises the bar: 91.6 is out
    assert fastest_accurate(measured) == ("u8-channel", "openvino")
    assert fastest_accurate({("a", "onnxruntime"): {"top1": 90.0, "latency_ms": None}}) is None  # nothing timed
    tie = {"a": {"top1": 90.0, "latency_ms": 1.00}, "b": {"top1": 90.3, "latency_ms": 1.02}}
    assert fastest_accurate(tie) == "b"  # 2% is within timing noise: the more accurate wins
    tie["b"]["latency_ms"] = 1.05
    assert fastest_accurate(tie) == "a"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--calib-images", "8"], "at least 16 calibration images"),
        (["--keep-float", "/nothing/*"], "matches no layer"),
        (["--mode", "dynamic", "--dtype", "bf16"], "no dynamic mode"),
        (["--auto-float", "-1"], "auto_float must be a whole number of layers"),
        (["--rounding", "adaround", "--mode", "dynamic"], "adaround learns the rounding of calibrated int8"),
        (["--auto-float", "2", "--mode", "dynamic"], "auto_float ranks layers of a calibrated int8 model"),
        (["--mode", "qat", "--dtype", "fp16"], "trains for int8, not fp16"),
        (["--mode", "qat", "--qat-lr", "0"], "qat_lr must be"),
        (["--mode", "qat", "--activations", "int8"], "uint8 activations"),
        (["--resume"], "continues the fine-tune of --mode qat"),
        (["--runtime", "torch"], "runtime 'torch' is not available: .* slower than ONNX Runtime float"),
        (["--classifier-bits", "4", "--dtype", "fp16"], "classifier_bits 4 is a weight format of the int8 modes"),
        (["--reduce-range", "--mode", "qat"], "simulates 8-bit weights; drop --reduce-range"),
        (["--reduce-range", "--rounding", "adaround"], "adaround learns the rounding of 8-bit weights"),
        (["--reduce-range", "--dtype", "bf16"], "reduce_range narrows int8 weights to 7 bits; bf16"),
        (["--per-tensor", "--rounding", "adaround"], "adaround rounds per-channel int8 weights; drop --per-tensor"),
        (["--tune", "--mode", "qat"], "--tune compares the settings of static int8, not qat int8"),
        (["--tune", "--dtype", "fp16"], "--tune compares the settings of static int8, not static fp16"),
        (["--tune", "--per-tensor"], "--tune tries one scale per tensor, .* itself; drop --per-tensor"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(trained, tmp_path, capsys, extra, message):
    data, weights = trained
    argv = ["quantize", "--weights", str(weights), "--data", str(data), "--out", str(tmp_path / "o"), *FAST, *extra]
    assert main(argv) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and re.search(message, errors[0]) and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def test_other_classes_and_a_used_folder_are_refused(trained, tmp_path, capsys):
    data, weights = trained
    other = make_image_folder(tmp_path / "other", classes=4, per_class=4, size=32)
    argv = ["quantize", "--weights", str(weights), "--data", str(other), "--out", str(tmp_path / "x"), *FAST]
    assert main(argv) == 1
    assert "classes differ" in capsys.readouterr().err and not (tmp_path / "x").exists()
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    argv = ["quantize", "--weights", str(weights), "--data", str(data), "--out", str(used), *FAST]
    assert main(argv) == 1
    assert "not empty" in capsys.readouterr().err and (used / "keep.txt").read_text() == "mine"
