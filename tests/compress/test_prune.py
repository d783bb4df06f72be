"""Structured channel pruning: targets met, widths rounded, the right channels chosen."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import effnet
from effnet.compress import PassContext, apply_pass
from effnet.compress.prune import PruneChannelsConfig, _layout_with, plan_channels
from effnet.models.summary import count_flops, count_params, layout_cost


@pytest.fixture(scope="module")
def b0():
    torch.manual_seed(0)
    return effnet.create_model("efficientnet_b0", num_classes=10).eval()


@pytest.mark.parametrize("kind", ["channels", "params", "flops"])
@pytest.mark.parametrize("scope", ["global", "local"])
def test_targets_are_met_with_rounded_widths(b0, kind, scope):
    config = PruneChannelsConfig(target=0.4, target_kind=kind, scope=scope)
    pruned, report = apply_pass(b0, config, PassContext(img_size=96))
    details = report.details
    assert details["met"] and 0.4 <= details["removed_fraction"] < 0.5
    if kind == "params":
        assert report.after.params <= 0.6 * report.before.params
    if kind == "flops":  # the analytic count used by the search agrees with PyTorch's counter
        assert count_flops(pruned, 96) == details["flops_after"] <= 0.6 * count_flops(b0, 96)
    for name, (before, after) in details["groups"].items():
        assert after % 8 == 0 or after == before, name
    counts = {name: widths[1] for name, widths in details["groups"].items()}
    assert _layout_with(b0, counts).layout == pruned.layout  # the plan's cost model describes the result
    assert count_params(pruned) == report.after.params
    assert pruned.layout.stem_channels == 32 and pruned.layout.head_channels == 1280  # left alone by default


def test_the_weakest_channels_go(b0):
    model = effnet.create_model("efficientnet_b0", num_classes=10).eval()
    model.load_state_dict(b0.state_dict())
    # Every other hidden channel of the first stage-1 block is made weak in every filter slice it
    # indexes (expand, depthwise, squeeze-excite, project).
    scale = torch.where(torch.arange(96) % 2 == 0, 1e-3, 1.0)
    with torch.no_grad():
        for key, dim in model.structure().group("stages.1.0.hidden").members:
            if key.endswith(".weight") and ".bn." not in key:
                model.get_parameter(key).mul_(scale.reshape([-1 if d == dim else 1 for d in range(4)]))
    config = PruneChannelsConfig(target=0.5, scope="local", ratios={"stages.1.0.hidden": 0.5})
    keep, _ = plan_channels(model, config)
    assert keep["stages.1.0.hidden"] == list(range(1, 96, 2))


def test_batchnorm_scale_importance_reads_the_gammas(b0):
    model = effnet.create_model("efficientnet_b0", num_classes=10).eval()
    model.load_state_dict(b0.state_dict())
    with torch.no_grad():
        model.stages[2][0].expand.bn.weight[:72] = 1e-4  # 144 hidden channels; the first half fades out
        model.stages[2][0].dw.bn.weight[:72] = 1e-4
    config = PruneChannelsConfig(importance="bn_scale", scope="local", ratios={"stages.2.0.hidden": 0.5})
    keep, _ = plan_channels(model, config)
    assert keep["stages.2.0.hidden"] == list(range(72, 144))


def test_taylor_importance_uses_calibration_data(b0):
    data = DataLoader(TensorDataset(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))), batch_size=4)
    pruned, report = apply_pass(b0, "prune_channels", PassContext(img_size=32, data=data), importance="taylor")
    assert report.details["met"] and pruned(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    assert all(p.grad is None for p in b0.parameters())  # the input model's gradients are untouched too
    with pytest.raises(effnet.EffnetError, match="taylor importance needs calibration data"):
        apply_pass(b0, "prune_channels", importance="taylor")


def test_stem_and_head_only_when_asked(b0):
    pruned, _ = apply_pass(b0, "prune_channels", target=0.3, include_stem=True, include_head=True, scope="local")
    assert pruned.layout.stem_channels < 32 and pruned.layout.head_channels < 1280
    assert pruned.layout.blocks[0].in_channels == pruned.layout.stem_channels


def test_pruned_model_saves_and_reloads_without_the_pass(b0, tmp_path):
    pruned, _ = apply_pass(b0, "prune_channels", target=0.5)
    assert not getattr(pruned, "effnet_passes", [])  # widths live in the layout: nothing to re-apply
    reloaded = effnet.create_model(weights=effnet.save_model(pruned, tmp_path / "p.safetensors")).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(reloaded(x), pruned.eval()(x))


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"target": 1.5}, r"target must be a fraction in \(0, 1\)"),
        ({"target": 0.0}, r"target must be a fraction in \(0, 1\)"),
        ({"round_to": 0}, "round_to must be between 1 and 256"),
        ({"ratios": {"stages.*": 1.0}}, r"must be a fraction in \[0, 1\)"),
        ({"importance": "random"}, "importance must be one of l1, l2, bn_scale, taylor"),
        ({"max_ratio": 0.0}, r"max_ratio must be a fraction in \(0, 1\]"),
        ({"score_scale": {"stages.1.0.hidden": -1.0}}, "must be a positive number"),
    ],
)
def test_bad_settings_are_one_line(settings, message):
    with pytest.raises(effnet.EffnetError, match=message):
        PruneChannelsConfig.from_dict(settings)


def test_models_the_pruner_cannot_handle_are_refused_before_any_work(b0, tmp_path):
    with pytest.raises(effnet.EffnetError, match="prune_channels cannot handle this model: .*resnet18 is not one"):
        apply_pass(effnet.create_model("resnet18"), "prune_channels")
    folded, _ = apply_pass(b0, "fold_batchnorm")
    with pytest.raises(effnet.EffnetError, match="prune before folding"):
        apply_pass(folded, "prune_channels")


@pytest.mark.parametrize(
    ("capability", "device", "multiple"),
    [("AVX512", "cpu", 16), ("AVX2", "cpu", 8), ("DEFAULT", "cpu", 8), ("AVX512", "cuda", 8)],
)
def test_the_channel_multiple_follows_the_runtime(monkeypatch, capability, device, multiple):
    from effnet.compress.prune import channel_multiple
    from effnet.compress.runner import PruneJob

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert channel_multiple(device) == multiple
    if device == "cpu":
        assert PruneJob(round_to="auto").multiple == multiple
    assert PruneJob(round_to=24).multiple == 24


def test_widths_keep_a_multiple_of_sixteen_when_asked(b0):
    pruned, report = apply_pass(
        b0, PruneChannelsConfig(target=0.5, target_kind="flops", round_to=16), PassContext(img_size=64)
    )
    changed = {name: after for name, (before, after) in report.details["groups"].items() if after != before}
    assert changed and all(width % 16 == 0 for width in changed.values())
    assert count_flops(pruned, 64) <= 0.5 * count_flops(b0, 64)


def test_no_group_loses_more_than_max_ratio(b0):
    cheap = {"stages.1.1.hidden": 0.1}  # left to itself, the threshold would take almost all of this group
    uncapped = plan_channels(b0, PruneChannelsConfig(target=0.5, target_kind="flops", score_scale=cheap))[1]
    assert uncapped["groups"]["stages.1.1.hidden"] == [144, 8]
    config = PruneChannelsConfig(target=0.5, target_kind="flops", score_scale=cheap, max_ratio=0.6)
    _, report = apply_pass(b0, config, PassContext(img_size=64))
    assert report.details["met"]
    for name, (before, after) in report.details["groups"].items():
        assert after >= 0.4 * before, name


def test_score_scale_moves_the_cut_between_groups(b0):
    """A group whose scores are scaled down (its FLOPs cost more time) gives more channels."""
    plain = PruneChannelsConfig(target=0.4, target_kind="flops")
    cheap = PruneChannelsConfig(target=0.4, target_kind="flops", score_scale={"stages.1.1.hidden": 0.5})
    before = plan_channels(b0, plain, PassContext(img_size=64))[1]["groups"]
    after = plan_channels(b0, cheap, PassContext(img_size=64))[1]["groups"]
    assert after["stages.1.1.hidden"][1] < before["stages.1.1.hidden"][1]
    assert sum(w for _, w in after.values()) > sum(w for _, w in before.values())  # the FLOPs came from one group


def test_latency_scale_is_measured_per_stage(monkeypatch):
    """One value per non-squeeze group, shared within a stage's hidden widths, from the timed variants."""
    from effnet.bench import core
    from effnet.compress.prune import measure_latency_scale

    torch.manual_seed(0)
    model = effnet.create_model(effnet.scaled_config(-2), num_classes=3).eval()  # B0 with fewer blocks
    timed: list[str] = []

    def fake_benchmark(models, **kwargs):  # the parent takes 10 ms; each variant 1 ms less per 10% FLOPs saved
        from types import SimpleNamespace

        full = layout_cost(model.config, kwargs["img_size"])[1]
        rows = []
        for name, m in models:
            timed.append(name)
            saved = 1 - layout_cost(m.config, kwargs["img_size"])[1] / full
            slower = 2.0 if name == "stages.1.*.hidden" else 1.0  # this stage's FLOPs cost twice the time
            latency = 15.0 if name == "stages.2.0.out" else 10.0 * (1 - slower * saved)  # noise: slower than all
            rows.append(SimpleNamespace(model=name, latency_ms_median=latency))
        return SimpleNamespace(results=rows)

    monkeypatch.setattr(core, "benchmark", fake_benchmark)
    monkeypatch.setattr("effnet.bench.benchmark", fake_benchmark)
    scale = measure_latency_scale(model, PruneChannelsConfig(round_to=8), 32)
    assert timed[0] == "parent" and "stages.1.*.hidden" in timed and "stages.1.0.out" in timed
    assert not any(name.endswith(".squeeze") for name in scale)
    assert scale["stages.1.0.hidden"] == scale["stages.1.1.hidden"] > 1.2
    assert scale["stages.2.0.out"] == 0.25  # clamped, never zero or negative
    others = {k: v for k, v in scale.items() if k != "stages.2.0.out" and (not k.startswith("stages.1.") or "out" in k)}
    assert others and all(abs(v - 1.0) < 1e-6 for v in others.values())
