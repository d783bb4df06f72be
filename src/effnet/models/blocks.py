"""Building blocks: convolution + batch norm + activation, and the MBConv block.

MBConv is the inverted residual bottleneck of MobileNetV2 (Sandler et al., 2018,
https://arxiv.org/abs/1801.04381) with squeeze-and-excitation (Hu et al., 2018,
https://arxiv.org/abs/1709.01507), as used by EfficientNet. Stochastic depth (Huang et al.,
2016, https://arxiv.org/abs/1603.09382) drops whole residual branches during training.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import SqueezeExcitation, stochastic_depth

from effnet.models.config import Activation, BlockSpec, Padding


def make_activation(kind: Activation) -> nn.Module:
    """SiLU (a.k.a. swish) for EfficientNet, ReLU6 for EfficientNet-Lite."""
    return nn.ReLU6(inplace=True) if kind == "relu6" else nn.SiLU(inplace=True)


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow "same" padding (before, after) for one spatial dimension."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """A strided convolution with TensorFlow "same" padding, computed from the input size.

    TF pads the extra row/column of a strided convolution at the bottom/right, which PyTorch's
    symmetric ``padding=k//2`` cannot express; weights ported from TF need it to reproduce
    their outputs. Stride-1 convolutions with odd kernels are symmetric anyway and do not
    use this class.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        top, bottom = same_padding(x.shape[-2], kh, sh, dh)
        left, right = same_padding(x.shape[-1], kw, sw, dw)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def make_conv(
    in_channels: int,
    out_channels: int,
    kernel: int,
    stride: int = 1,
    groups: int = 1,
    padding: Padding = "symmetric",
) -> nn.Conv2d:
    """A bias-free convolution (a batch norm follows) with the requested padding flavour."""
    if padding == "same" and (stride > 1 or kernel % 2 == 0):
        return SameConv2d(in_channels, out_channels, kernel, stride, padding=0, groups=groups, bias=False)
    return nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, groups=groups, bias=False)


class ConvBnAct(nn.Sequential):
    """Convolution, batch norm and (optionally) an activation, with stable names conv/bn/act."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        stride: int = 1,
        groups: int = 1,
        activation: Activation | None = "silu",
        padding: Padding = "symmetric",
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        self.conv = make_conv(in_channels, out_channels, kernel, stride, groups, padding)
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)
        self.act = make_activation(activation) if activation else nn.Identity()


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise kxk, squeeze-excite, 1x1 project.

    Every width comes from ``spec``. The expand convolution is absent when ``spec.expand`` is
    false and the squeeze-excite when ``spec.se_channels == 0``; their places hold
    ``nn.Identity`` so every block has the same attributes.
    """

    def __init__(
        self,
        spec: BlockSpec,
        activation: Activation,
        drop_path: float = 0.0,
        padding: Padding = "symmetric",
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        self.spec = spec
        hidden = spec.hidden_channels
        norm = {"padding": padding, "bn_eps": bn_eps, "bn_momentum": bn_momentum}
        self.use_residual = spec.residual
        self.drop_path = drop_path
        self.expand = (
            ConvBnAct(spec.in_channels, hidden, 1, activation=activation, **norm) if spec.expand else nn.Identity()
        )
        self.dw = ConvBnAct(hidden, hidden, spec.kernel, spec.stride, groups=hidden, activation=activation, **norm)
        if spec.se_channels > 0:
            act = type(make_activation(activation))
            self.se: nn.Module = SqueezeExcitation(hidden, spec.se_channels, activation=act)
        else:
            self.se = nn.Identity()
        self.project = ConvBnAct(hidden, spec.out_channels, 1, activation=None, **norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.dw(self.expand(x))))
        if self.use_residual:
            if self.drop_path > 0.0:
                out = stochastic_depth(out, self.drop_path, mode="row", training=self.training)
            out = out + x
        return out

    def extra_repr(self) -> str:
        return f"residual={self.use_residual}, drop_path={self.drop_path:.3f}"
