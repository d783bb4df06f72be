"""Small models that keep export and bench tests fast on a 2-core CPU."""

from __future__ import annotations

import torch
from tests.conftest import randomize_batchnorm
from torch import nn

import effnet

IMG = 64


def tiny_effnet(padding: str = "symmetric", num_classes: int = 10, seed: int = 0) -> effnet.EfficientNet:
    """A quarter-width, quarter-depth EfficientNet with non-trivial batch-norm statistics."""
    torch.manual_seed(seed)
    config = effnet.custom_config(0.25, 0.25, IMG).replace(padding=padding)
    return randomize_batchnorm(effnet.create_model(config, num_classes=num_classes), seed=seed)


def plain_cnn(num_classes: int = 5) -> nn.Module:
    """A model that is not an EfficientNet: export and bench must work on any nn.Module."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.Hardswish(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(16, num_classes),
    )
    return randomize_batchnorm(model)
