"""The inference passes every deployment starts with: fold batch norms, freeze TF padding.

Both are exact (outputs equal up to float rounding) and both change structure in ways the
architecture config does not express, so they are structural passes: a saved result records
them and is rebuilt on load. ``effnet export`` runs the same two passes before tracing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from effnet.compress.base import Pass, PassConfig, PassContext, register_pass
from effnet.export.fuse import count_foldable_batchnorms, fuse_for_inference
from effnet.export.padding import PaddedConv2d, freeze_same_padding
from effnet.models.blocks import SameConv2d
from effnet.sizes import input_size_problem

__all__ = ["FoldBatchNorm", "FoldBatchNormConfig", "FreezePadding", "FreezePaddingConfig"]


@dataclass(frozen=True)
class FoldBatchNormConfig(PassConfig):
    """Fold every batch norm into the convolution before it (Ioffe & Szegedy, 2015); no settings."""

    pass_name = "fold_batchnorm"


@register_pass
class FoldBatchNorm(Pass):
    name = "fold_batchnorm"
    config_type = FoldBatchNormConfig
    description = "fold batch norms into the preceding convolutions; dropout becomes identity (inference only)"
    structural = True

    def run(self, model: nn.Module, config: PassConfig, context: PassContext) -> tuple[nn.Module, dict[str, Any]]:
        folded = count_foldable_batchnorms(model)
        return fuse_for_inference(model), {"folded": folded}

    def rebuild(self, model: nn.Module, config: PassConfig) -> nn.Module:
        return fuse_for_inference(model)


@dataclass(frozen=True)
class FreezePaddingConfig(PassConfig):
    """Replace TF "same" padding computed at run time by constant padding for one input size."""

    pass_name = "freeze_padding"

    img_size: int | None = None  # the square input side; default: the model's input size

    def validate(self) -> list[str]:
        problem = input_size_problem(self.img_size, "img_size") if self.img_size is not None else None
        return [problem] if problem else []


@register_pass
class FreezePadding(Pass):
    name = "freeze_padding"
    config_type = FreezePaddingConfig
    description = "freeze TensorFlow 'same' padding to constants for one input size (export-friendly)"
    structural = True

    def resolve(self, model: nn.Module, config: PassConfig, context: PassContext) -> PassConfig:
        assert isinstance(config, FreezePaddingConfig)
        if config.img_size is not None:
            return config
        return FreezePaddingConfig(img_size=int(context.example_input(model).shape[-1]))

    def run(self, model: nn.Module, config: PassConfig, context: PassContext) -> tuple[nn.Module, dict[str, Any]]:
        assert isinstance(config, FreezePaddingConfig) and config.img_size is not None
        example = context.example_input(model)
        example = example.new_zeros(1, example.shape[1], config.img_size, config.img_size)
        dynamic = sum(1 for m in model.modules() if type(m) is SameConv2d)
        frozen = freeze_same_padding(model, example)
        asymmetric = sum(1 for m in frozen.modules() if isinstance(m, PaddedConv2d))
        return frozen, {"img_size": config.img_size, "frozen": dynamic, "asymmetric": asymmetric}

    def rebuild(self, model: nn.Module, config: PassConfig) -> nn.Module:
        assert isinstance(config, FreezePaddingConfig)
        size = config.img_size or getattr(getattr(model, "config", None), "resolution", 224)
        device = next(model.parameters()).device  # a network being rebuilt may live on the meta device
        return freeze_same_padding(model, torch.zeros(1, _in_chans(model), size, size, device=device))


def _in_chans(model: nn.Module) -> int:
    return int(getattr(getattr(model, "config", None), "in_chans", 3))
