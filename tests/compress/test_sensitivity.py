"""Pruning sensitivity: units, the accuracy curves, the report JSON and the suggested ratios."""

import fnmatch
import json
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import effnet
from effnet.compress import PassContext, apply_pass
from effnet.compress import sensitivity as sensitivity_module
from effnet.compress.prune import PruneChannelsConfig, channel_scores, plan_channels, prunable_groups
from effnet.compress.sensitivity import (
    SensitivityResult,
    _recalibrate_batchnorm,
    _unit_keep,
    prune_sensitivity,
    ratios_for_target,
    sensitivity_units,
    suggest_ratios,
)
from effnet.models.surgery import keep_channels
from effnet.schemas import CompressionReport, PruneSensitivity

FRAGILE = "stages.6.*.hidden"  # Lite0's last stage has one block: its hidden width carries everything after it
ROBUST = "stages.4.*.hidden"
RATIOS = (0.25, 0.5)


def _every_group(model):
    config = PruneChannelsConfig(include_stem=True, include_head=True, include_squeeze=True)
    return [g.name for g in prunable_groups(model, config)]


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_lite0"])
@pytest.mark.parametrize("granularity", ["stage", "group"])
def test_units_split_every_prunable_group_once(name, granularity):
    model = effnet.create_model(name, num_classes=3)
    every = _every_group(model)
    units = sensitivity_units(model, granularity)
    covered = [g for u in units for g in u.groups]
    assert sorted(covered) == sorted(every) and len(covered) == len(set(covered))
    for unit in units:  # the name selects exactly its groups, so it can be a ratios key
        assert [g for g in every if fnmatch.fnmatchcase(g, unit.name)] == list(unit.groups), unit.name
        assert unit.channels == sum(model.structure().group(g).channels for g in unit.groups)
    if granularity == "group":
        assert [u.name for u in units] == [u.groups[0] for u in units]
    else:
        kinds = {u.name.rsplit(".", 1)[-1] for u in units}
        assert kinds == ({"stem", "hidden", "out", "head"} | ({"squeeze"} if name == "efficientnet_b0" else set()))
    assert units[0].name == "stem" and units[-1].name == "head"


def test_the_channels_chosen_are_those_prune_channels_chooses():
    torch.manual_seed(0)
    model = effnet.create_model("efficientnet_b0", num_classes=3)  # b0: squeeze groups too
    structure = model.structure()
    units = sensitivity_units(model, "stage")

    def plan(ratios):
        config = PruneChannelsConfig(
            scope="local", importance="l1", ratios=ratios, include_stem=True, include_head=True, include_squeeze=True
        )
        return plan_channels(model, config)[0]

    # Local scope chooses within each group alone, so one plan with every unit at 0.6 holds each unit's choice.
    everything = plan(dict.fromkeys([u.name for u in units], 0.6))
    ours = {}
    for unit in units:
        groups = [structure.group(n) for n in unit.groups]
        scores = {g.name: channel_scores(model, g, "l1") for g in groups}
        ours.update(
            _unit_keep({n: s / s.mean() for n, s in scores.items()}, {g.name: g.channels for g in groups}, 0.6, 8)
        )
    assert ours == everything and len(everything) > len(units)
    # The "*": 0 entry after a unit keeps every other group whole.
    assert set(plan({"stages.2.*.hidden": 0.6, "*": 0.0})) == {"stages.2.0.hidden", "stages.2.1.hidden"}


# -- a Lite0 with one fragile and one robust unit -------------------------------------------------


def _dead_channels(model, group_name, live_count):
    """A mask of the group's channels except the first ``live_count``, and the block they belong to."""
    dead = torch.ones(model.structure().group(group_name).channels, dtype=torch.bool)
    dead[:live_count] = False
    return dead, group_name.rsplit(".", 1)[0]


def _feed_nothing(model, group_name, live_count, filter_scale):
    """Channels past ``live_count`` feed nothing (zero projection weights); their filters are scaled
    by ``filter_scale``: large, the pruner keeps them and removes the live ones (fragile); tiny,
    it removes them first and the network computes the same (robust)."""
    dead, block = _dead_channels(model, group_name, live_count)
    with torch.no_grad():
        model.get_parameter(f"{block}.project.conv.weight")[:, dead] = 0
        model.get_parameter(f"{block}.expand.conv.weight")[dead] *= filter_scale
        model.get_parameter(f"{block}.dw.conv.weight")[dead] *= filter_scale


def _features(model, images):
    with torch.inference_mode():
        return torch.flatten(model.pool(model.forward_features(images)), 1)


@pytest.fixture(scope="module")
def lite0_case():
    """A Lite0 whose labels are its own predictions (top-1 100%), arranged so that pruning the
    fragile unit makes the network output one constant class no image has (top-1 0%), while
    pruning the robust unit (at most 75%) removes only channels that feed nothing (top-1 100%)."""
    torch.manual_seed(0)
    model = effnet.create_model("efficientnet_lite0", num_classes=3).eval()
    _feed_nothing(model, "stages.6.0.hidden", live_count=64, filter_scale=100.0)  # 1152 channels
    for block in range(3):
        group = f"stages.4.{block}.hidden"
        _feed_nothing(model, group, model.structure().group(group).channels // 4, filter_scale=1e-3)
    images = torch.randn(12, 3, 32, 32)
    # What the network computes once the fragile unit loses its live channels: a constant.
    config = PruneChannelsConfig(scope="local", ratios={FRAGILE: 0.25, "*": 0.0}, include_head=True)
    collapsed = keep_channels(model, plan_channels(model, config)[0]).eval()
    constant = _features(collapsed, images)
    assert torch.equal(constant, constant[:1].expand_as(constant))
    # Classes 0 and 1 split the images by the side of the constant they lie on; class 2 wins only at it.
    spread = _features(model, images) - constant[0]
    direction = spread[0] - spread[1]
    margin = (spread @ direction).abs().min().item()
    with torch.no_grad():
        model.classifier.weight.copy_(torch.stack([direction, -direction, torch.zeros_like(direction)]))
        offset = (constant[0] @ direction).item()
        model.classifier.bias.copy_(torch.tensor([-offset, offset, 1e-3 * margin]))
    with torch.inference_mode():
        labels = model(images).argmax(1)
        assert collapsed.classifier.weight.shape == model.classifier.weight.shape
        collapsed.classifier.load_state_dict(model.classifier.state_dict())
        assert (collapsed(images).argmax(1) == 2).all()
    assert set(labels.tolist()) == {0, 1}
    loader = DataLoader(TensorDataset(images, labels), batch_size=6)
    lines = []
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = prune_sensitivity(model, loader, ratios=RATIOS, progress=lines.append)
    return model, loader, result, lines, before


def test_the_fragile_unit_ranks_first_and_the_robust_one_loses_nothing(lite0_case):
    model, _, result, _, _ = lite0_case
    assert result.baseline_top1 == 100.0 and result.images == 12 and result.ratios == list(RATIOS)
    units = {u.name: u for u in result.units}
    assert units[FRAGILE].top1 == [0.0, 0.0]
    assert result.ranked()[0].name == FRAGILE
    assert all(result.drops(u)[-1] < 100.0 for u in result.units if u.name != FRAGILE)
    robust = units[ROBUST]
    assert robust.top1 == [100.0, 100.0] and robust.removed[0] > 0 and robust.removed[1] > robust.removed[0]
    assert result.ranked()[-1].top1 == [100.0, 100.0]
    assert any(result.drops(u)[-1] > 0 for u in result.units if u.name not in (FRAGILE, ROBUST))  # pruning matters


def test_the_input_model_is_untouched_and_progress_is_reported(lite0_case):
    model, _, result, lines, before = lite0_case
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not model.training
    assert len(lines) == len(result.units) * len(RATIOS)
    assert lines[-1].startswith(f"[{len(lines)}/{len(lines)}] head at 0.5: top-1 ")


def test_ratio_zero_is_the_unpruned_accuracy(lite0_case):
    model, loader, _, _, _ = lite0_case
    result = prune_sensitivity(model, loader, ratios=[0.0], granularity="group", max_batches=1)
    assert result.images == 6
    assert all(u.top1 == [result.baseline_top1] and u.removed == [0] for u in result.units)
    assert "*" in result.to_table()  # marked as unchanged


def test_table_lists_every_unit_with_top1_and_drop(lite0_case):
    _, _, result, _, _ = lite0_case
    table = result.to_table()
    lines = table.splitlines()
    assert lines[0].startswith("efficientnet_lite0: top-1 100.00% unpruned, 12 images, l2 importance")
    assert "not recalibrated" in lines[0]
    assert lines[1].split() == ["unit", "channels", "top-1@0.25", "drop", "top-1@0.5", "drop"]
    row = next(line for line in lines if line.startswith(FRAGILE))
    assert row.split() == [FRAGILE, "1152", "0.00", "100.00", "0.00", "100.00"]
    assert len([line for line in lines if line.split() and line.split()[0] in {u.name for u in result.units}]) == len(
        result.units
    )


def test_report_json_validates_and_effnet_report_plots_it(lite0_case, tmp_path):
    _, _, result, _, _ = lite0_case
    path = result.save(tmp_path / "sensitivity.json")
    document = json.loads(path.read_text())
    assert document["schema"] == "effnet.compression"
    report = CompressionReport.from_dict(document)
    assert report.model == "efficientnet_lite0"
    fragile = next(r for r in report.prune_sensitivity if r.layer == FRAGILE)
    assert fragile == PruneSensitivity(FRAGILE, [0.0, 0.25, 0.5], [100.0, 0.0, 0.0])  # starts at the unpruned top-1
    assert len(report.prune_sensitivity) == len(result.units)

    out = tmp_path / "report.html"
    done = subprocess.run(
        [sys.executable, "-m", "effnet", "report", str(path), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    page = out.read_text(encoding="utf-8")
    assert "Pruning sensitivity per layer: efficientnet_lite0" in page
    assert f"most sensitive: {FRAGILE} (-100.0 points)" in page


@pytest.mark.parametrize("max_drop", [0.0, 10.0, 100.0])
def test_suggested_ratios_respect_max_drop(lite0_case, max_drop):
    _, _, result, _, _ = lite0_case
    suggestion = suggest_ratios(result, max_drop=max_drop)
    assert list(suggestion) == [u.name for u in result.units] + ["*"] and suggestion["*"] == 0.0
    for unit in result.units:
        drops = result.drops(unit)
        ratio = suggestion[unit.name]
        assert all(d <= max_drop for r, d in zip(result.ratios, drops, strict=True) if r <= ratio)
        if ratio < result.ratios[-1]:  # the next ratio up was too much
            assert drops[result.ratios.index(ratio) + 1 if ratio else 0] > max_drop
    assert suggestion[ROBUST] == 0.5
    assert suggestion[FRAGILE] == (0.5 if max_drop == 100.0 else 0.0)
    # The same suggestion from the JSON file, read back.
    assert suggest_ratios(CompressionReport.from_dict(result.to_report().to_dict()), max_drop=max_drop) == suggestion


def test_suggestion_prunes_through_prune_channels(lite0_case):
    model, loader, result, _, _ = lite0_case
    suggestion = suggest_ratios(result, max_drop=0.0)
    config = PruneChannelsConfig(scope="local", ratios=suggestion, include_stem=True, include_head=True)
    assert PruneChannelsConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config  # recipes carry it
    pruned, report = apply_pass(model, config, PassContext(img_size=32))
    units = {g: u.name for u in result.units for g in u.groups}
    for group, (before, after) in report.details["groups"].items():
        if suggestion[units[group]] == 0.0:
            assert after == before, group
    widths = report.details["groups"]
    assert all(widths[g][1] < widths[g][0] for g in ("stages.4.0.hidden", "stages.4.1.hidden", "stages.4.2.hidden"))
    assert report.after.params < report.before.params
    images, labels = next(iter(loader))
    with torch.inference_mode():
        assert pruned(images).shape == (6, 3)
    unfilled = suggest_ratios(result, max_drop=0.0, others=None)
    assert "*" not in unfilled and PruneChannelsConfig(scope="local", ratios=unfilled).ratios == unfilled


def test_a_ratio_is_trusted_only_when_the_smaller_ones_held():
    noisy = CompressionReport(
        prune_sensitivity=[
            PruneSensitivity("a", [0.0, 0.25, 0.5, 0.75], [80.0, 70.0, 79.5, 60.0]),
            PruneSensitivity("b", [0.5, 0.0, 0.25], [79.0, 80.0, 79.9]),  # any order
        ]
    )
    assert suggest_ratios(noisy, max_drop=1.0) == {"a": 0.0, "b": 0.5, "*": 0.0}
    assert suggest_ratios(noisy, max_drop=10.0, others=0.1) == {"a": 0.5, "b": 0.5, "*": 0.1}


def test_ratios_for_a_budget_spare_the_fragile_unit(lite0_case):
    model, _, result, _, _ = lite0_case
    ratios, threshold = ratios_for_target(result, model, 0.05, "flops", 32, include_stem=True, include_head=True)
    assert ratios[FRAGILE] == 0.0 and ratios[ROBUST] > 0.0 and list(ratios)[-1] == "*"
    config = PruneChannelsConfig(
        scope="local", ratios=ratios, target_kind="flops", include_stem=True, include_head=True
    )
    _, report = apply_pass(model, config, PassContext(img_size=32))
    assert report.details["removed_fraction"] >= 0.05
    assert 0.0 <= threshold < 100.0


def test_ratios_for_a_budget_follow_the_curves():
    """One threshold for all units: a unit that loses 5x less per ratio is pruned 5x more."""
    model = effnet.create_model("efficientnet_lite0", num_classes=3)
    cheap, dear = "stages.4.*.hidden", "stages.5.*.hidden"
    curves = CompressionReport(
        prune_sensitivity=[
            PruneSensitivity(cheap, [0.0, 0.5, 0.75], [80.0, 78.0, 70.0]),
            PruneSensitivity(dear, [0.0, 0.5, 0.75], [80.0, 70.0, 60.0]),
        ]
    )
    ratios, threshold = ratios_for_target(curves, model, 0.1, "flops", 64)
    assert set(ratios) == {cheap, dear, "*"} and ratios["*"] == 0.0
    assert threshold < 2.0  # the cheap unit is not saturated yet
    assert ratios[cheap] == pytest.approx(5 * ratios[dear], rel=1e-3)
    config = PruneChannelsConfig(scope="local", ratios=ratios, target_kind="flops")
    _, details = plan_channels(model, config, PassContext(img_size=64))
    assert 0.1 <= details["removed_fraction"] < 0.12
    with pytest.raises(effnet.EffnetError, match="removes only .* short of the target 90%"):
        ratios_for_target(curves, model, 0.9, "flops", 64)


# -- batch-norm recalibration ---------------------------------------------------------------------


def test_batchnorm_recalibration_averages_the_given_batches():
    torch.manual_seed(0)
    model = effnet.create_model("efficientnet_lite0", num_classes=3).eval()
    batches = [torch.randn(4, 3, 32, 32) + shift for shift in (0.0, 1.0)]
    momentum = model.stem.bn.momentum
    _recalibrate_batchnorm(model, batches, torch.device("cpu"))
    with torch.no_grad():
        outputs = [model.stem.conv(b) for b in batches]
    per_batch_mean = torch.stack([o.mean((0, 2, 3)) for o in outputs])
    per_batch_var = torch.stack([o.var((0, 2, 3)) for o in outputs])  # unbiased, as batch norm keeps it
    assert torch.allclose(model.stem.bn.running_mean, per_batch_mean.mean(0), atol=1e-5)
    assert torch.allclose(model.stem.bn.running_var, per_batch_var.mean(0), rtol=1e-4)
    assert model.stem.bn.momentum == momentum and not model.training


def test_batchnorm_recalibration_treats_the_reference_like_the_copies(lite0_case, monkeypatch):
    model, loader, plain, _, before = lite0_case
    calls = []
    real = sensitivity_module._recalibrate_batchnorm

    def spy(copy, batches, device):
        assert copy is not model and [b.shape[0] for b in batches] == [6, 6]  # the same two batches each time
        calls.append(batches)
        real(copy, batches, device)

    monkeypatch.setattr(sensitivity_module, "_recalibrate_batchnorm", spy)
    result = prune_sensitivity(model, loader, ratios=[0.5], max_batches=1, recalibrate_bn_batches=5, bn_loader=loader)
    assert result.recalibrated_bn_batches == 2  # all the loader had
    pruned_copies = sum(1 for u in result.units if u.removed[0] > 0)
    assert len(calls) == 1 + pruned_copies and all(c is calls[0] for c in calls)
    assert result.given_top1 == 100.0  # the unpruned model as given; the reference is re-estimated
    assert "re-estimated on 2 batches" in result.to_table() and "100.00% before re-estimating" in result.to_table()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert plain.given_top1 is None and plain.recalibrated_bn_batches == 0


# -- bad input ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small():
    model = effnet.create_model("efficientnet_lite0", num_classes=3).eval()
    loader = DataLoader(TensorDataset(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])), batch_size=4)
    return model, loader


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"ratios": [0.5, 1.0]}, r"ratios must be fractions in \[0, 1\), got 1.0"),
        ({"ratios": [-0.1]}, r"ratios must be fractions in \[0, 1\), got -0.1"),
        ({"ratios": [float("nan")]}, r"ratios must be fractions in \[0, 1\), got nan"),
        ({"ratios": ["half"]}, r"ratios must be fractions in \[0, 1\), got 'half'"),
        ({"ratios": 0.5}, r"ratios must be a list of fractions in \[0, 1\), got 0.5"),
        ({"ratios": []}, "ratios is empty"),
        ({"ratios": [0.5, 0.5]}, "ratios must be distinct"),
        ({"granularity": "layer"}, "granularity must be 'stage' or 'group', got 'layer'"),
        ({"importance": "taylor"}, "importance must be one of l1, l2, bn_scale for sensitivity, got 'taylor'"),
        ({"max_batches": 0}, "max_batches must be at least 1, got 0"),
        ({"recalibrate_bn_batches": 2}, "recalibrate_bn_batches needs bn_loader"),
        ({"recalibrate_bn_batches": 2, "bn_loader": []}, "bn_loader gave no batch"),
        ({"recalibrate_bn_batches": -1}, "recalibrate_bn_batches must be 0 or more"),
        ({"classes": ["a", "b"]}, "the model has 3 outputs but 2 class names were given"),
    ],
)
def test_bad_settings_are_one_line_errors(small, settings, message):
    model, loader = small
    with pytest.raises(effnet.EffnetError, match=message) as caught:
        prune_sensitivity(model, loader, **settings)
    assert "\n" not in str(caught.value)


def test_bad_models_and_data_are_one_line_errors(small):
    model, loader = small
    cases = [
        (nn.Sequential(nn.Conv2d(3, 8, 3)), loader, "pruning sensitivity cannot handle this model: .*Sequential"),
        (effnet.create_model("resnet18", num_classes=3), loader, "cannot handle this model: .*resnet18"),
        (model, DataLoader(TensorDataset(torch.zeros(0, 3, 32, 32), torch.zeros(0, dtype=torch.long))), "no images"),
        (model, DataLoader(TensorDataset(torch.randn(2, 3, 32, 32), torch.tensor([0, 7]))), "labels below 3"),
        (model, [(torch.randn(2, 3, 32, 32),)], "must yield \\(images, labels\\)"),
    ]
    for bad_model, data, message in cases:
        with pytest.raises(effnet.EffnetError, match=message) as caught:
            prune_sensitivity(bad_model, data, ratios=[0.5])
        assert "\n" not in str(caught.value)
    for bad, message in [(-1, "max_drop must be a number"), ("1", "max_drop must be a number")]:
        with pytest.raises(effnet.EffnetError, match=message):
            suggest_ratios(CompressionReport(), max_drop=bad)
    with pytest.raises(effnet.EffnetError, match="must include ratio 0"):
        suggest_ratios(CompressionReport(prune_sensitivity=[PruneSensitivity("a", [0.5], [70.0])]))
    with pytest.raises(effnet.EffnetError, match="no units"):
        suggest_ratios(CompressionReport())
    with pytest.raises(effnet.EffnetError, match="others must be a fraction"):
        suggest_ratios(CompressionReport(), others=1.0)
    with pytest.raises(effnet.EffnetError, match="needs a SensitivityResult or a CompressionReport, not dict"):
        suggest_ratios({})  # type: ignore[arg-type]
    assert isinstance(SensitivityResult("m", 1.0, [0.5], []).to_table(), str)
