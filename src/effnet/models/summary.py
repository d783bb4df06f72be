"""What ``effnet info`` prints: size, cost and the per-stage shape of a model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from effnet.models.config import EfficientNetConfig, get_config
from effnet.models.efficientnet import EfficientNet
from effnet.models.scaling import resolve_layout


@dataclass
class ModelInfo:
    name: str
    params: int
    flops: int  # floating-point operations of one forward pass at ``resolution`` (2 per multiply-add)
    macs: int
    resolution: int
    activation: str
    squeeze_excitation: bool
    stem_channels: int
    head_channels: int
    stages: list[dict]

    def to_dict(self) -> dict:
        return asdict(self)


def forward_once(model: torch.nn.Module, example: torch.Tensor, handles: Sequence[Any] = ()) -> None:
    """Run ``model`` once on ``example`` in eval mode without gradients, then give back its mode
    and remove ``handles``: the hooks through which the caller watches the pass."""
    was_training = model.training
    try:
        with torch.inference_mode():
            model.eval()(example)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: torch.nn.Module, resolution: int, in_chans: int = 3) -> int:
    """FLOPs of one image through ``model`` by PyTorch's own counter (convolutions and matmuls)."""
    device = next(model.parameters()).device
    x = torch.zeros(1, in_chans, resolution, resolution, device=device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(x)
    return int(counter.get_total_flops())


def model_info(name_or_config: str | EfficientNetConfig) -> ModelInfo:
    """Parameters, FLOPs at the default resolution and the stage table, computed on the meta device."""
    config = name_or_config if isinstance(name_or_config, EfficientNetConfig) else get_config(name_or_config)
    with torch.device("meta"):
        model = EfficientNet(config)
    flops = count_flops(model, config.resolution, config.in_chans)
    layout = resolve_layout(config)
    stages = []
    for index in range(layout.num_stages):
        blocks = [b for b in layout.blocks if b.stage == index]
        first = blocks[0]
        stages.append(
            {
                "stage": index,
                "kernel": first.kernel,
                "stride": first.stride,
                # the expansion ratio of the first block (blocks of a pruned stage may differ)
                "expand": round(first.hidden_channels / first.in_channels, 2) if first.expand else 1,
                "in_channels": first.in_channels,
                "out_channels": blocks[-1].out_channels,
                "repeats": len(blocks),
            }
        )
    return ModelInfo(
        name=config.name,
        params=count_params(model),
        flops=flops,
        macs=flops // 2,
        resolution=config.resolution,
        activation=config.activation,
        squeeze_excitation=config.se_ratio > 0,
        stem_channels=layout.stem_channels,
        head_channels=layout.head_channels,
        stages=stages,
    )


def layout_cost(config: EfficientNetConfig, img_size: int | None = None) -> tuple[int, int]:
    """(parameters, multiply-accumulates) of an EfficientNet, computed from its layout alone.

    Equal to :func:`count_params` and half of :func:`count_flops` (convolutions and the classifier;
    batch-norm scales and shifts counted as parameters), without building the network: pruning
    searches call it many times.
    """
    layout = resolve_layout(config)
    size = img_size or config.resolution

    def down(side: int, stride: int) -> int:
        return -(-side // stride)  # ceil: "same" and symmetric k//2 padding agree for odd kernels

    side = down(size, 2)
    params = config.in_chans * layout.stem_channels * 9 + 2 * layout.stem_channels
    macs = side * side * config.in_chans * layout.stem_channels * 9
    for b in layout.blocks:
        if b.expand:
            params += b.in_channels * b.hidden_channels + 2 * b.hidden_channels
            macs += side * side * b.in_channels * b.hidden_channels
        side = down(side, b.stride)
        params += b.hidden_channels * b.kernel * b.kernel + 2 * b.hidden_channels
        macs += side * side * b.hidden_channels * b.kernel * b.kernel
        if b.se_channels:
            params += 2 * b.hidden_channels * b.se_channels + b.se_channels + b.hidden_channels
            macs += 2 * b.hidden_channels * b.se_channels
        params += b.hidden_channels * b.out_channels + 2 * b.out_channels
        macs += side * side * b.hidden_channels * b.out_channels
    last = layout.blocks[-1].out_channels
    params += last * layout.head_channels + 2 * layout.head_channels
    macs += side * side * last * layout.head_channels
    params += layout.head_channels * config.num_classes + config.num_classes
    macs += layout.head_channels * config.num_classes
    return params, macs
