import pytest
import torch
import torchvision
from tests.conftest import randomize_batchnorm
from tests.export.tiny import IMG, plain_cnn, tiny_effnet
from torch import nn

import effnet
from effnet.export import count_foldable_batchnorms, fuse_for_inference


def _batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@pytest.mark.parametrize("padding", ["symmetric", "same"])
def test_fused_effnet_matches_eager_and_has_no_batchnorm(padding):
    model = tiny_effnet(padding)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    x = torch.randn(3, 3, IMG, IMG)

    fused = fuse_for_inference(model)

    assert _batchnorms(fused) == 0
    assert not fused.training
    with torch.no_grad():
        expected = model.eval()(x)
        torch.testing.assert_close(fused(x), expected, rtol=1e-4, atol=1e-5)
    # The input model is untouched: same modules, same tensors.
    assert _batchnorms(model) == count_foldable_batchnorms(model) > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_every_batchnorm_of_the_full_b0_is_folded():
    with torch.device("meta"):
        model = effnet.create_model("efficientnet_b0")
    assert count_foldable_batchnorms(model) == _batchnorms(model) == 49


def test_torchvision_blocks_fold_and_keep_their_outputs():
    model = randomize_batchnorm(
        nn.Sequential(
            torchvision.ops.Conv2dNormActivation(3, 8, 3, stride=2),
            torchvision.ops.Conv2dNormActivation(8, 8, 3, groups=8, activation_layer=nn.SiLU),
        )
    )
    x = torch.randn(2, 3, 32, 32)
    fused = fuse_for_inference(model)
    assert _batchnorms(fused) == 0
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-5)


def test_linear_batchnorm_and_dropout_fold_in_any_module():
    model = plain_cnn()
    model.append(nn.BatchNorm1d(5))
    randomize_batchnorm(model)
    x = torch.randn(4, 3, 16, 16)
    fused = fuse_for_inference(model)
    kinds = [type(m) for m in fused]
    assert nn.Dropout not in kinds and _batchnorms(fused) == 0
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model.eval()(x), rtol=1e-4, atol=1e-5)


class _StandardizedConv(nn.Conv2d):
    """A conv that normalises its weight in forward: folding a scale into it would be wrong."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
        return self._conv_forward(x, w, self.bias)


class _BatchNormAct(nn.BatchNorm2d):
    """A batch norm that also applies an activation (like timm's BatchNormAct2d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(super().forward(x))


def test_layers_that_do_more_than_their_base_class_are_left_alone():
    model = randomize_batchnorm(
        nn.Sequential(_StandardizedConv(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), _BatchNormAct(4))
    )
    x = torch.randn(2, 3, 12, 12)
    fused = fuse_for_inference(model)
    assert [type(m) for m in fused] == [_StandardizedConv, nn.BatchNorm2d, nn.Conv2d, _BatchNormAct]
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x))
