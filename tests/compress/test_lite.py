"""The EfficientNet-Lite swap: ReLU6, no squeeze-excitation, weights kept; recipe step and --auto candidate."""

import json
import re
import textwrap

import pytest
import torch
from tests.conftest import randomize_batchnorm

import effnet
from effnet.cli import main
from effnet.compress import PassContext, apply_pass
from effnet.compress.lite import LiteSwapConfig
from effnet.schemas import CompressionReport


@pytest.fixture(scope="module")
def b0():
    torch.manual_seed(0)
    return randomize_batchnorm(effnet.create_model("efficientnet_b0", num_classes=4)).eval()


def test_swap_keeps_every_other_weight_and_reloads(b0, tmp_path):
    state = {k: v.clone() for k, v in b0.state_dict().items()}
    lite, report = apply_pass(b0, "lite_swap")
    assert all(torch.equal(v, b0.state_dict()[k]) for k, v in state.items())  # input untouched
    assert lite.config.activation == "relu6" and all(b.se_channels == 0 for b in lite.layout.blocks)
    assert not any(isinstance(m, torch.nn.SiLU) for m in lite.modules())
    assert not any(".se." in k for k in lite.state_dict())
    # Every weight it keeps is the parent's, unchanged.
    assert all(torch.equal(v, state[k]) for k, v in lite.state_dict().items())
    se = sum(v.numel() for k, v in state.items() if ".se." in k)
    assert report.details["se_removed"] == 16 and report.details["se_params_removed"] == se
    assert report.before.params - report.after.params == se
    # A plain EfficientNet: it saves as safetensors and reloads with the same outputs.
    x = torch.randn(2, 3, 64, 64)
    path = effnet.save_model(lite, tmp_path / "lite.safetensors")
    with torch.no_grad():
        assert torch.equal(effnet.create_model(weights=path).eval()(x), lite.eval()(x))


def test_calibration_folds_the_gates_and_re_estimates_batch_norm(b0):
    images = [torch.randn(8, 3, 64, 64) for _ in range(3)]
    # The squeeze-excitation gate scales the projection's inputs per channel: its average over the
    # calibration images and positions is folded into the projection's weights.
    gates = []
    block = b0.stages[2][1]
    hook = block.se.scale_activation.register_forward_hook(lambda m, i, out: gates.append(out.mean((2, 3))))
    with torch.no_grad():
        for batch in images:
            b0(batch)
    hook.remove()
    mean_gate = torch.cat(gates).mean(0)
    folded, report = apply_pass(b0, LiteSwapConfig(relu6=False), PassContext(data=images))
    assert report.details["gates_folded"] == 16 and report.details["batchnorm_images"] == 24
    expected = block.project.conv.weight * mean_gate.view(1, -1, 1, 1)
    assert torch.allclose(folded.stages[2][1].project.conv.weight, expected, atol=1e-6)
    plain, report = apply_pass(b0, LiteSwapConfig(relu6=False))  # no data: plain removal
    assert report.details["gates_folded"] == 0 and torch.equal(plain.stages[2][1].project.conv.weight,
                                                               block.project.conv.weight)  # fmt: skip
    # The running statistics are those of the swapped network on the calibration images.
    lite, report = apply_pass(b0, "lite_swap", PassContext(data=[(batch, None) for batch in images]))
    with torch.no_grad():
        stem = torch.cat([lite.stem.conv(batch) for batch in images])
    assert torch.allclose(lite.stem.bn.running_mean, stem.mean((0, 2, 3)), atol=1e-4)
    assert torch.allclose(lite.stem.bn.running_var, stem.var((0, 2, 3)), rtol=1e-3)
    assert lite.stem.bn.momentum == b0.stem.bn.momentum and not lite.training
    # Each repair can be turned off (benchmarks/lite_swap.py measures them one by one).
    kept, report = apply_pass(
        b0, LiteSwapConfig(fold_gates=False, reestimate_batchnorm=False), PassContext(data=images)
    )
    assert report.details["gates_folded"] == 0 and report.details["batchnorm_images"] == 0
    assert torch.equal(kept.stem.bn.running_mean, b0.stem.bn.running_mean)
    with pytest.raises(effnet.EffnetError, match="calibration_batches must be"):
        LiteSwapConfig(calibration_batches=0)


def test_either_change_alone(b0):
    relu_only, _ = apply_pass(b0, LiteSwapConfig(remove_se=False))
    assert relu_only.config.activation == "relu6" and any(b.se_channels for b in relu_only.layout.blocks)
    no_se, report = apply_pass(b0, LiteSwapConfig(relu6=False))
    assert no_se.config.activation == "silu" and report.details["se_removed"] == 16
    # On a model with ReLU6 already, asking for ReLU6 alone changes nothing: refused in one line.
    with pytest.raises(effnet.EffnetError, match="already has ReLU6, the only change asked for"):
        apply_pass(relu_only, LiteSwapConfig(remove_se=False))
    with pytest.raises(effnet.EffnetError, match="nothing would change"):
        LiteSwapConfig(relu6=False, remove_se=False)
    lite0 = effnet.create_model("efficientnet_lite0", num_classes=4)
    with pytest.raises(effnet.EffnetError, match="lite_swap cannot handle this model: .*nothing to swap"):
        apply_pass(lite0, "lite_swap")


def test_recipe_step_swaps_then_learns_from_the_original(trained, tmp_path, capsys):
    data, weights = trained
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"weights: {weights}\ndata: {data}\nimg_size: 32\nbatch_size: 8\nworkers: 0\nthreads: 1\nrepeats: 2\n"
        + textwrap.dedent("""\
        steps:
          - lite: {epochs: 1, alpha: 0.5}
          - quantize: {calib_images: 16}
        """)
    )
    out = tmp_path / "out"
    assert main(["compress", "--recipe", str(recipe), "--out", str(out)]) == 0, capsys.readouterr().err
    logged = capsys.readouterr().err
    assert "lite swap: silu -> relu6, 16 squeeze-excitations removed" in logged
    assert "16 average gates folded" in logged and re.search(r"re-estimated on \d+ training images", logged)
    report = CompressionReport.from_dict(json.loads((out / "report.json").read_text()))
    assert [row.name for row in report.passes] == ["original", "1-lite", "2-quantize"]
    original, lite, _ = report.passes
    assert lite.params < original.params and all(row.latency_ms_onnxruntime for row in report.passes)
    config = (out / "steps" / "1-lite" / "config.yaml").read_text()
    assert "teacher" in config and "alpha: 0.5" in config  # distilled from the original
    swapped = effnet.create_model(weights=out / "steps" / "1-lite" / "best.safetensors")
    assert swapped.config.activation == "relu6"

    bad = tmp_path / "bad.yaml"
    bad.write_text(f"weights: {weights}\ndata: {data}\nsteps:\n  - lite: {{relu6: false, remove_se: false}}\n")
    assert main(["compress", "--recipe", str(bad), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "line 4: lite: invalid lite_swap settings" in err and err.count("\n") == 1


def test_auto_tries_the_swap_and_prunes_from_it(trained, tmp_path, capsys):
    data, weights = trained
    out = tmp_path / "auto"
    args = ["compress", "--auto", "--weights", str(weights), "--data", str(data), "--out", str(out),
            "--targets", "0.5", "--no-sensitivity", "--no-quantize", "--max-accuracy-drop", "99",
            "--lite-epochs", "1", "--distill-alpha", "0.5", "--img-size", "32", "--batch-size", "8", "--workers", "0",
            "--threads", "1", "--repeats", "2"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    logged = capsys.readouterr().err
    assert "the pruning rungs start from it" in logged
    assert f"with {weights} as teacher" in logged  # the rung pruned from the swap learns from the original
    result = json.loads((out / "auto.json").read_text())
    assert [c["name"] for c in result["candidates"]] == ["original", "lite", "lite-prune50"]
    assert [c["kind"] for c in result["candidates"]] == ["original", "lite", "prune"]
    pruned = effnet.create_model(weights=out / "candidates" / "lite-prune50" / "model.safetensors")
    assert pruned.config.activation == "relu6" and not any(b.se_channels for b in pruned.layout.blocks)
    # With a drop the swap exceeds, the rungs prune the original instead.
    strict = tmp_path / "strict"
    strict_args = [a if a != str(out) else str(strict) for a in args]
    strict_args[strict_args.index("99")] = "0"
    assert main(strict_args) == 0, capsys.readouterr().err
    names = [c["name"] for c in json.loads((strict / "auto.json").read_text())["candidates"]]
    logged = capsys.readouterr().err
    if "the pruning rungs start from the original" in logged:
        assert names == ["original", "lite", "prune50"]
    else:  # the swapped model happened to score as well as the original on these 9 images
        assert names == ["original", "lite", "lite-prune50"]
