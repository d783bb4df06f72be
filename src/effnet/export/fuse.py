"""Inference-time fusion: fold batch norms into the layers before them and drop eval no-ops.

In eval mode a batch norm is a fixed per-channel affine map, y = (x - mean) / sqrt(var + eps)
* gamma + beta, so it can be folded into the weights and bias of the convolution (or linear
layer) that feeds it (Ioffe & Szegedy, 2015, https://arxiv.org/abs/1502.03167; the folding
is what TensorFlow Lite, ONNX Runtime and TensorRT do at load time). The arithmetic is
PyTorch's own :func:`torch.nn.utils.fusion.fuse_conv_bn_eval`; this module only finds the pairs.

A pair is fused only where the data flow is certain: consecutive children of an
``nn.Sequential`` (effnet's ``ConvBnAct``, torchvision's ``Conv2dNormActivation``), and only for
layer types whose forward is a plain linear map of their weight. A subclass that transforms its
weight (weight standardisation, say) or a batch norm subclass that does more than normalise
(timm's ``BatchNormAct2d``) is left alone, so fusing never changes what a model computes beyond
float rounding.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from effnet.export.padding import PaddedConv2d
from effnet.models.blocks import SameConv2d

# Layers whose output is exactly conv(x, weight) + bias (the padded ones only pad their input first).
# Extend this tuple for new layer types once their forward is known to be a plain convolution.
FOLDABLE_CONVS: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, SameConv2d, PaddedConv2d)
FOLDABLE_TRANSPOSED: tuple[type[nn.Module], ...] = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
PLAIN_BATCHNORMS: tuple[type[nn.Module], ...] = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# Modules that do nothing in eval mode; replacing them with Identity removes a call per forward.
EVAL_NOOPS: tuple[type[nn.Module], ...] = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with batch norms folded into the layers before them.

    The input model is not modified. Batch norms are replaced by ``nn.Identity`` (so the other
    layers keep their names) and dropout layers become ``nn.Identity`` too. Outputs equal the
    original's up to float rounding; the model can no longer be trained as before.

    >>> import effnet
    >>> model = effnet.create_model("efficientnet_lite0")
    >>> fused = fuse_for_inference(model)
    >>> any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    False
    """
    fused = copy.deepcopy(model).eval()
    for container in list(fused.modules()):
        if isinstance(container, nn.Sequential):
            _fold_sequential(container)
    for container in list(fused.modules()):
        for name, child in container.named_children():
            if type(child) in EVAL_NOOPS:
                setattr(container, name, nn.Identity())
    return fused


def count_foldable_batchnorms(model: nn.Module) -> int:
    """How many batch norms :func:`fuse_for_inference` would fold (a quick way to see what it does)."""
    return len(foldable_norms(model))


def foldable_norms(model: nn.Module) -> dict[str, nn.Module]:
    """Layer name -> the batch norm :func:`fuse_for_inference` would fold into that layer.

    >>> import effnet
    >>> norms = foldable_norms(effnet.create_model("efficientnet_lite0"))
    >>> len(norms), norms["stem.conv"] is not None
    (49, True)
    """
    found = {}
    for prefix, container in model.named_modules():
        if isinstance(container, nn.Sequential):
            for layer, norm in _foldable_pairs(container):
                found[f"{prefix}.{layer}" if prefix else layer] = container._modules[norm]
    return found


def _foldable_pairs(seq: nn.Sequential) -> list[tuple[str, str]]:
    names = list(seq._modules)
    pairs = []
    for first, second in zip(names, names[1:], strict=False):
        layer, norm = seq._modules[first], seq._modules[second]
        if _can_fold(layer, norm):
            pairs.append((first, second))
    return pairs


def _can_fold(layer: nn.Module | None, norm: nn.Module | None) -> bool:
    if type(norm) not in PLAIN_BATCHNORMS or norm.running_mean is None or norm.running_var is None:
        return False
    if type(layer) in FOLDABLE_CONVS or type(layer) in FOLDABLE_TRANSPOSED:
        channels = layer.out_channels
    elif type(layer) is nn.Linear:
        channels = layer.out_features
    else:
        return False
    return channels == norm.num_features


def _fold_sequential(seq: nn.Sequential) -> None:
    for first, second in _foldable_pairs(seq):
        layer, norm = seq._modules[first], seq._modules[second]
        with torch.no_grad():
            if type(layer) is nn.Linear:
                folded = fuse_linear_bn_eval(layer, norm)
            else:
                folded = fuse_conv_bn_eval(layer, norm, transpose=type(layer) in FOLDABLE_TRANSPOSED)
        seq._modules[first] = folded
        seq._modules[second] = nn.Identity()
