import pytest
import torch
from tests.export.tiny import IMG, tiny_effnet
from torch import nn

from effnet.errors import EffnetError
from effnet.export import PaddedConv2d, freeze_same_padding
from effnet.models.blocks import SameConv2d


def test_frozen_padding_reproduces_same_padding_at_that_size():
    model = tiny_effnet("same")
    x = torch.randn(2, 3, IMG, IMG)
    frozen = freeze_same_padding(model, x)

    assert not any(isinstance(m, SameConv2d) for m in frozen.modules())
    assert any(isinstance(m, SameConv2d) for m in model.modules())  # the input is untouched
    padded = [m for m in frozen.modules() if isinstance(m, PaddedConv2d)]
    # Even sizes: TF puts the extra row/column of every strided conv at the bottom/right.
    assert padded and all(m.static_pad[1] == m.static_pad[0] + 1 for m in padded)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), model(x), rtol=0, atol=0)


def test_symmetric_same_padding_becomes_plain_conv_padding():
    conv = SameConv2d(3, 4, 3, stride=2, bias=False)
    x = torch.randn(1, 3, 33, 33)  # odd size: TF's padding is (1, 1)
    frozen = freeze_same_padding(nn.Sequential(conv), x)
    assert type(frozen[0]) is nn.Conv2d and frozen[0].padding == (1, 1)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), conv(x), rtol=0, atol=0)


def test_frozen_model_refuses_another_size():
    model = tiny_effnet("same").eval()
    frozen = freeze_same_padding(model, torch.zeros(1, 3, IMG, IMG))
    with pytest.raises(EffnetError, match=f"frozen for {IMG}x{IMG}"):
        frozen(torch.zeros(1, 3, IMG + 32, IMG + 32))


def test_model_without_same_padding_comes_back_equal():
    model = tiny_effnet("symmetric")
    x = torch.randn(1, 3, IMG, IMG)
    frozen = freeze_same_padding(model, x)
    assert [type(m) for m in frozen.modules()] == [type(m) for m in model.modules()]
    assert frozen is not model
