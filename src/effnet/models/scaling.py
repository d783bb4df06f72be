"""Compound scaling: the one place where widths, depths and resolutions are computed.

Tan & Le (2019), section 3.3: depth d = alpha ** phi, width w = beta ** phi, resolution
r = gamma ** phi, with alpha * beta**2 * gamma**2 ~= 2 so that FLOPs grow by about 2 ** phi.
The released B1-B7 use a hand-tuned table instead (see :mod:`effnet.models.config`); both
end up here, where channels are rounded to multiples of 8 (never more than 10% down) and
repeats are rounded up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from effnet.errors import EffnetError
from effnet.models.config import BlockSpec, EfficientNetConfig, Layout, get_config


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, but never below 90% of it.

    >>> make_divisible(32 * 1.1)  # 35.2 rounds down to 32, within 10%
    32
    >>> make_divisible(11.9)  # 8 would be more than 10% below, so the guard adds a step
    16
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:  # the 10% guard: rounding down must not lose too much width
        rounded += divisor
    return int(rounded)


def scale_channels(channels: int, width_mult: float, divisor: int = 8) -> int:
    """Channels of a layer after width scaling."""
    return make_divisible(channels * width_mult, divisor)


def scale_repeats(repeats: int, depth_mult: float) -> int:
    """Blocks in a stage after depth scaling (always rounded up)."""
    return int(math.ceil(repeats * depth_mult))


@dataclass(frozen=True)
class ResolvedStage:
    """A stage after scaling: what the network actually builds."""

    index: int
    kernel: int
    stride: int
    expand: int
    in_channels: int
    out_channels: int
    repeats: int


def stem_channels(config: EfficientNetConfig) -> int:
    """Output channels of the stem convolution."""
    if config.fixed_stem_head:
        return config.stem_channels
    return scale_channels(config.stem_channels, config.width_mult, config.divisor)


def head_channels(config: EfficientNetConfig) -> int:
    """Output channels of the final 1x1 convolution before pooling."""
    if config.fixed_stem_head:
        return config.head_channels
    return scale_channels(config.head_channels, config.width_mult, config.divisor)


def resolve_stages(config: EfficientNetConfig) -> tuple[ResolvedStage, ...]:
    """Per-stage channels and repeats after width and depth scaling.

    >>> [s.repeats for s in resolve_stages(get_config("efficientnet_b0"))]
    [1, 2, 2, 3, 3, 4, 1]
    """
    stages = []
    in_channels = stem_channels(config)
    last = len(config.stages) - 1
    for index, spec in enumerate(config.stages):
        out_channels = scale_channels(spec.out_channels, config.width_mult, config.divisor)
        if config.fixed_stem_head and index in (0, last):
            repeats = spec.repeats  # Lite keeps the first and last stage at their base depth
        else:
            repeats = scale_repeats(spec.repeats, config.depth_mult)
        stages.append(
            ResolvedStage(
                index=index,
                kernel=spec.kernel,
                stride=spec.stride,
                expand=spec.expand,
                in_channels=in_channels,
                out_channels=out_channels,
                repeats=repeats,
            )
        )
        in_channels = out_channels
    return tuple(stages)


def squeeze_channels(in_channels: int, se_ratio: float) -> int:
    """Squeeze-and-excitation width: relative to the block *input*, as in the reference implementations."""
    return max(1, int(in_channels * se_ratio)) if se_ratio > 0 else 0


def resolve_layout(config: EfficientNetConfig) -> Layout:
    """Every width of the network ``config`` describes: its explicit layout, or the scaled stages.

    >>> layout = resolve_layout(get_config("efficientnet_b0"))
    >>> len(layout.blocks), layout.blocks[1].hidden_channels, layout.head_channels
    (16, 96, 1280)
    """
    if config.layout is not None:
        return config.layout
    blocks = []
    for stage in resolve_stages(config):
        for i in range(stage.repeats):
            in_channels = stage.in_channels if i == 0 else stage.out_channels
            stride = stage.stride if i == 0 else 1
            blocks.append(
                BlockSpec(
                    stage=stage.index,
                    in_channels=in_channels,
                    hidden_channels=in_channels * stage.expand,
                    out_channels=stage.out_channels,
                    se_channels=squeeze_channels(in_channels, config.se_ratio),
                    kernel=stage.kernel,
                    stride=stride,
                    expand=stage.expand != 1,
                    residual=stride == 1 and in_channels == stage.out_channels,
                )
            )
    return Layout(stem_channels=stem_channels(config), blocks=tuple(blocks), head_channels=head_channels(config))


def compound_coefficients(
    phi: float, alpha: float = 1.2, beta: float = 1.1, gamma: float = 1.15
) -> tuple[float, float, float]:
    """(depth, width, resolution) multipliers for compound coefficient ``phi``."""
    return alpha**phi, beta**phi, gamma**phi


def scaled_config(
    phi: float,
    alpha: float = 1.2,
    beta: float = 1.1,
    gamma: float = 1.15,
    base: str = "efficientnet_b0",
    name: str | None = None,
) -> EfficientNetConfig:
    """A custom family member by the compound-scaling formula of the paper.

    The resolution is ``base.resolution * gamma ** phi`` rounded to a multiple of 8.

    >>> cfg = scaled_config(1.0)
    >>> (round(cfg.width_mult, 3), round(cfg.depth_mult, 3), cfg.resolution)
    (1.1, 1.2, 256)
    """
    if phi < 0:
        raise EffnetError(f"phi must be zero or positive, got {phi}")
    if min(alpha, beta, gamma) < 1.0:
        raise EffnetError("alpha, beta and gamma must each be at least 1 (they grow the network)")
    depth, width, res = compound_coefficients(phi, alpha, beta, gamma)
    base_cfg = get_config(base)
    return custom_config(
        width_mult=base_cfg.width_mult * width,
        depth_mult=base_cfg.depth_mult * depth,
        resolution=int(round(base_cfg.resolution * res / 8.0)) * 8,
        base=base,
        name=name or f"{base_cfg.name}_phi{phi:g}",
    )


def custom_config(
    width_mult: float,
    depth_mult: float,
    resolution: int,
    base: str = "efficientnet_b0",
    name: str | None = None,
) -> EfficientNetConfig:
    """A custom family member from explicit multipliers, keeping the base's block design.

    >>> custom_config(1.0, 1.0, 192).resolution
    192
    """
    base_cfg = get_config(base)
    return base_cfg.replace(
        name=name or f"{base_cfg.name}_w{width_mult:g}_d{depth_mult:g}_r{resolution}",
        width_mult=float(width_mult),
        depth_mult=float(depth_mult),
        resolution=int(resolution),
    )
