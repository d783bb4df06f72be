"""Freezing TensorFlow "same" padding to constants for one input size.

:class:`~effnet.models.blocks.SameConv2d` computes its padding from the input's height and
width at every call. That is right for eager PyTorch at any resolution, but an exporter that
traces it records shape arithmetic (or bakes constants in with a warning), and a runtime has to
evaluate it on every run. For a fixed export resolution the padding is a constant: this pass
replaces each ``SameConv2d`` by a plain ``nn.Conv2d`` with ``padding=`` when the padding is
symmetric, or by a :class:`PaddedConv2d` (constant zero pad, then convolve) when TensorFlow's
extra row/column at the bottom/right makes it asymmetric. Exported graphs then hold only
constant ``Pad`` operators, which ONNX Runtime fuses into the convolution.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from effnet.errors import EffnetError
from effnet.models.blocks import SameConv2d, same_padding
from effnet.models.summary import forward_once


class PaddedConv2d(nn.Conv2d):
    """A convolution after a fixed zero padding ``(left, right, top, bottom)``, valid for one input size.

    Made by :func:`freeze_same_padding`; the size it was frozen for is ``frozen_hw`` and other
    sizes are refused in eager mode, since their TensorFlow padding would differ.
    """

    def __init__(self, *args, static_pad: tuple[int, int, int, int], frozen_hw: tuple[int, int], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.static_pad = tuple(int(p) for p in static_pad)
        self.frozen_hw = tuple(int(s) for s in frozen_hw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Tracers see shapes as tensors; the check is for eager callers who change resolution.
        if not torch.jit.is_tracing() and tuple(x.shape[-2:]) != self.frozen_hw:
            raise EffnetError(
                f"this model's padding was frozen for {self.frozen_hw[0]}x{self.frozen_hw[1]} inputs, "
                f"got {x.shape[-2]}x{x.shape[-1]}; export again with that image size"
            )
        return super().forward(F.pad(x, self.static_pad))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, static_pad={self.static_pad}, frozen_hw={self.frozen_hw}"


def freeze_same_padding(model: nn.Module, example_input: torch.Tensor) -> nn.Module:
    """A copy of ``model`` whose ``SameConv2d`` layers use constant padding for ``example_input``'s size.

    The input model is not modified; a model without ``SameConv2d`` comes back as an equal copy.
    Outputs are identical to the original's at that input size.

    >>> import effnet
    >>> model = effnet.create_model("efficientnet_lite0").eval()  # TF "same" padding
    >>> frozen = freeze_same_padding(model, torch.zeros(1, 3, 224, 224))
    >>> any(isinstance(m, SameConv2d) for m in frozen.modules())
    False
    """
    frozen = copy.deepcopy(model)
    sizes = _same_conv_input_sizes(frozen, example_input)
    for name, (height, width) in sizes.items():
        conv = frozen.get_submodule(name)
        (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
        top, bottom = same_padding(height, kh, sh, dh)
        left, right = same_padding(width, kw, sw, dw)
        replacement = _plain_conv(conv, (top, bottom, left, right), (height, width))
        frozen.set_submodule(name, replacement)
    return frozen


def _same_conv_input_sizes(model: nn.Module, example_input: torch.Tensor) -> dict[str, tuple[int, int]]:
    """The (height, width) each ``SameConv2d`` sees for ``example_input``, from one forward pass."""
    sizes: dict[str, tuple[int, int]] = {}
    handles = []
    for name, module in model.named_modules():
        if type(module) is SameConv2d:

            def record(mod: nn.Module, args: tuple, name: str = name) -> None:
                sizes[name] = (int(args[0].shape[-2]), int(args[0].shape[-1]))

            handles.append(module.register_forward_pre_hook(record))
    if not handles:
        return sizes
    forward_once(model, example_input[:1], handles)
    return sizes


def _plain_conv(conv: nn.Conv2d, pad: tuple[int, int, int, int], hw: tuple[int, int]) -> nn.Conv2d:
    top, bottom, left, right = pad
    options = {
        "in_channels": conv.in_channels,
        "out_channels": conv.out_channels,
        "kernel_size": conv.kernel_size,
        "stride": conv.stride,
        "dilation": conv.dilation,
        "groups": conv.groups,
        "bias": conv.bias is not None,
        "device": "meta",
    }
    if top == bottom and left == right:
        new: nn.Conv2d = nn.Conv2d(padding=(top, left), **options)
    else:
        new = PaddedConv2d(padding=0, static_pad=(left, right, top, bottom), frozen_hw=hw, **options)
    new.weight = conv.weight
    if conv.bias is not None:
        new.bias = conv.bias
    new.train(conv.training)
    return new
