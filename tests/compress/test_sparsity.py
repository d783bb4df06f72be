"""Unstructured magnitude pruning, its schedule during fine-tuning, and sparse storage."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tests.training.conftest import tiny_recipe

import effnet
from effnet.compress import PruneWeightsConfig, SparsityCallback, apply_pass
from effnet.compress.sparsity import prunable_weights, scheduled_sparsity, sparsity_of


@pytest.fixture(scope="module")
def b0():
    torch.manual_seed(0)
    return effnet.create_model("efficientnet_b0", num_classes=10).eval()


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_the_requested_share_of_weights_is_zeroed(b0, scope):
    pruned, report = apply_pass(b0, "prune_weights", sparsity=0.8, scope=scope)
    names = list(prunable_weights(pruned, PruneWeightsConfig()))
    assert report.details["sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert sparsity_of(pruned, names) == pytest.approx(0.8, abs=1e-3)
    if scope == "layer":
        assert all(v == pytest.approx(0.8, abs=0.02) for v in report.details["layers"].values())
    assert torch.count_nonzero(pruned.stem.conv.weight) == b0.stem.conv.weight.numel()  # left alone
    assert torch.equal(pruned.classifier.weight, b0.classifier.weight)
    assert report.after.nonzero_params < 0.35 * report.before.nonzero_params
    kept = pruned.stages[3][0].expand.conv.weight != 0  # the largest magnitudes are what stays
    original = b0.stages[3][0].expand.conv.weight.abs()
    if kept.any() and (~kept).any():
        assert original[kept].min() >= original[~kept].max()  # within a layer LAMP orders by magnitude too


def test_global_sparsity_does_not_depend_on_a_layers_scale():
    from effnet.compress.sparsity import magnitude_masks

    torch.manual_seed(0)
    weights = {"a": torch.randn(64, 32), "b": torch.randn(16, 8, 3, 3), "c": torch.randn(128, 64)}
    masks = magnitude_masks(weights, 0.8, "global")
    # A batch norm after a layer can make its raw weights tiny or huge; its mask must not change.
    rescaled = magnitude_masks({**weights, "b": weights["b"] * 1e-3}, 0.8, "global")
    assert all(torch.equal(masks[n], rescaled[n]) for n in weights)
    kept = sum(int(m.sum()) for m in masks.values())
    assert kept == pytest.approx(0.2 * sum(w.numel() for w in weights.values()), abs=2)
    assert all(m.any() for m in masks.values())  # every layer keeps its largest weight
    assert masks["c"].float().mean() < masks["b"].float().mean()  # larger layers are pruned harder


def test_sparse_storage_shrinks_the_file_and_reloads_exactly(b0, tmp_path):
    pruned, _ = apply_pass(b0, "prune_weights", sparsity=0.8)
    dense = effnet.save_model(pruned, tmp_path / "dense.safetensors")
    sparse = effnet.save_model(pruned, tmp_path / "sparse.safetensors", sparse=True)
    ratio = sparse.stat().st_size / dense.stat().st_size
    assert ratio < 0.35, ratio  # 20% of the values plus one bit per weight, and the dense small tensors
    reloaded = effnet.create_model(weights=sparse)
    expected = pruned.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in reloaded.state_dict().items())


def test_a_damaged_sparse_tensor_is_one_line(b0, tmp_path):
    pruned, _ = apply_pass(b0, "prune_weights", sparsity=0.8)
    path = effnet.save_model(pruned, tmp_path / "sparse.safetensors", sparse=True)
    tensors = load_file(str(path))
    key = next(k for k in tensors if k.endswith(".__values__") and tensors[k].numel() > 0)
    tensors[key] = tensors[key][:-1].clone()  # one value short of what the mask says
    with safe_open(str(path), "pt") as fh:
        metadata = fh.metadata()
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(effnet.EffnetError, match="malformed sparse tensors"):
        effnet.create_model(weights=path)


def test_the_cubic_schedule():
    assert scheduled_sparsity(0, 0.1, 0.8, begin=10, end=110) == 0.1
    assert scheduled_sparsity(110, 0.1, 0.8, begin=10, end=110) == 0.8
    assert scheduled_sparsity(60, 0.1, 0.8, begin=10, end=110) == pytest.approx(0.8 - 0.7 * 0.5**3)


def test_masks_hold_through_fine_tuning_and_rise_on_schedule(image_folder, tmp_path):
    torch.manual_seed(0)
    model = effnet.create_model("efficientnet_lite0", num_classes=3)
    callback = SparsityCallback(PruneWeightsConfig(sparsity=0.6), schedule="polynomial", frequency=1)
    recipe = tiny_recipe(image_folder, tmp_path / "run", epochs=3, ema=True, ema_decay=0.5)
    recipe.pop("model")
    effnet.fit(model, image_folder, recipe, callbacks=[callback])
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    levels = [r["sparsity"] for r in rows]
    assert levels == sorted(levels) and levels[0] < 0.6 and levels[-1] == pytest.approx(0.6)
    names = list(prunable_weights(model, callback.config))
    assert sparsity_of(model, names) == pytest.approx(0.6, abs=2e-3)
    saved = effnet.create_model(weights=tmp_path / "run" / "last.safetensors")  # the EMA weights
    assert sparsity_of(saved, names) == pytest.approx(0.6, abs=2e-3)


def test_resumed_fine_tuning_keeps_the_same_masks(image_folder, tmp_path):
    class InterruptAt(effnet.Callback):
        def __init__(self, step):
            self.step = step

        def on_after_backward(self, trainer):
            if trainer.global_step + 1 == self.step:
                raise KeyboardInterrupt

    def run(out, callbacks, **changes):
        torch.manual_seed(0)
        recipe = tiny_recipe(image_folder, out, epochs=3, **changes)
        recipe.pop("model")
        return effnet.fit(effnet.create_model("efficientnet_lite0", num_classes=3), image_folder, recipe,
                          callbacks=callbacks)  # fmt: skip

    schedule = dict(schedule="polynomial", frequency=2)
    run(tmp_path / "straight", [SparsityCallback(PruneWeightsConfig(sparsity=0.5), **schedule)])
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed", [SparsityCallback(PruneWeightsConfig(sparsity=0.5), **schedule), InterruptAt(4)])
    run(tmp_path / "resumed", [SparsityCallback(PruneWeightsConfig(sparsity=0.5), **schedule)], resume=True)
    mine, reference = (
        load_file(str(tmp_path / "resumed" / "last.safetensors")),
        load_file(str(tmp_path / "straight" / "last.safetensors")),
    )
    assert all(torch.equal(mine[k], reference[k]) for k in reference)


def test_bad_settings_are_one_line():
    with pytest.raises(effnet.EffnetError, match=r"sparsity must be a fraction in \(0, 1\)"):
        PruneWeightsConfig(sparsity=1.0)
    with pytest.raises(effnet.EffnetError, match="schedule must be constant or polynomial"):
        SparsityCallback(schedule="linear")
