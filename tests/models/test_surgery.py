"""Keeping chosen channels: the smaller network computes what the masked original computes."""

import pytest
import torch

import effnet
from effnet.models.surgery import keep_channels


@pytest.fixture(scope="module")
def b0():
    torch.manual_seed(0)
    model = effnet.create_model("efficientnet_b0", num_classes=5).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model


def every_other(n):
    return list(range(0, n, 2))


def test_dropping_hidden_and_squeeze_channels_equals_zeroing_them(b0):
    """Zeroing a hidden channel's depthwise batch norm makes it output 0 (SiLU(0) = 0), and a
    squeeze channel with zero weights and bias contributes nothing: the pruned network must give
    exactly those logits."""
    structure = b0.structure()
    keep = {}
    masked = effnet.create_model("efficientnet_b0", num_classes=5).eval()
    masked.load_state_dict(b0.state_dict())
    with torch.no_grad():
        for g in structure.groups:
            if g.kind == "hidden":
                keep[g.name] = every_other(g.channels)
                path = g.name.removesuffix(".hidden")
                dropped = torch.tensor([i for i in range(g.channels) if i % 2])
                bn = masked.get_submodule(f"{path}.dw.bn")
                bn.weight[dropped] = 0
                bn.bias[dropped] = 0
            elif g.kind == "squeeze" and g.channels > 1:
                keep[g.name] = [0]
                path = g.name.removesuffix(".squeeze")
                fc1 = masked.get_submodule(f"{path}.se.fc1")
                fc1.weight[1:] = 0
                fc1.bias[1:] = 0
    small = keep_channels(b0, keep)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(small(x), masked(x), atol=1e-5)
    assert small.layout.blocks[1].hidden_channels == 48 and small.layout.blocks[1].se_channels == 1
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in b0.parameters())


def test_every_prunable_group_can_shrink_and_the_network_runs(b0):
    keep = {g.name: every_other(g.channels) for g in b0.structure().groups if g.prunable}
    small = keep_channels(b0, keep)
    assert small(torch.zeros(1, 3, 32, 32)).shape == (1, 5)
    assert small.layout.stem_channels == 16 and small.layout.head_channels == 640
    assert small.config.layout == small.layout  # the config describes what was built


def test_the_input_model_is_untouched_and_shares_no_storage(b0):
    before = {k: v.clone() for k, v in b0.state_dict().items()}
    small = keep_channels(b0, {"stages.1.0.hidden": range(10)})
    with torch.no_grad():
        for p in small.parameters():
            p.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in b0.state_dict().items())


@pytest.mark.parametrize(
    "keep, message",
    [
        ({"stages.9.9.hidden": [0]}, "no channel group"),
        ({"classes": [0]}, "cannot change its width"),
        ({"stages.1.0.hidden": []}, "at least one channel"),
        ({"stages.1.0.hidden": [0, 0]}, "distinct"),
        ({"stages.1.0.hidden": [96]}, r"in \[0, 96\)"),
    ],
)
def test_bad_selections_are_one_clear_error(b0, keep, message):
    with pytest.raises(effnet.EffnetError, match=message):
        keep_channels(b0, keep)


def test_dropping_residual_stream_channels_equals_zeroing_their_batch_norms():
    """A channel of a stage group (tied by residual sums) or of the stem or head is zero everywhere
    once the batch norms producing it have zero scale and shift (ReLU6(0) = SiLU(0) = 0)."""
    model = effnet.create_model("efficientnet_lite0", weights="imagenet").eval()
    masked = effnet.create_model("efficientnet_lite0", weights="imagenet").eval()
    keep = {}
    with torch.no_grad():
        for g in model.structure().groups:
            if g.kind in ("stage", "stem", "head") and g.prunable:
                keep[g.name] = [i for i in range(g.channels) if i % 4]
                dropped = torch.arange(0, g.channels, 4)
                for key, _ in g.members:
                    if key.endswith((".bn.weight", ".bn.bias")):
                        masked.get_parameter(key)[dropped] = 0
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(keep_channels(model, keep)(x), masked(x), atol=1e-5, rtol=1e-5)
