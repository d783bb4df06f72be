"""Compound scaling: the one place where widths, depths and resolutions are computed.

Tan & Le (2019), section 3.3: depth d = alpha ** phi, width w = beta ** phi, resolution
r = gamma ** phi, with alpha * beta**2 * gamma**2 ~= 2 so that FLOPs grow by about 2 ** phi.
The released B1-B7 use a hand-tuned table instead (see :mod:`effnet.models.config`); both
end up here, where channels are rounded to multiples of 8 (never more than 10% down) and
repeats are rounded up. A negative phi shrinks the network by the same formula; every such
member is also reachable by name (``efficientnet_b0_phi-1``, see :func:`effnet.get_config`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from effnet.errors import EffnetError
from effnet.models.config import (
    MODEL_CONFIGS,
    PAPER_COEFFICIENTS,
    BlockSpec,
    EfficientNetConfig,
    Layout,
    get_config,
    scaled_name,
)
from effnet.sizes import MAX_INPUT_SIZE

# The smallest default input side of a compound-scaled member: the network's total stride, at
# which its last feature map is already a single pixel.
MIN_SCALED_RESOLUTION = 32


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
    phi: float,
    alpha: float = PAPER_COEFFICIENTS[0],
    beta: float = PAPER_COEFFICIENTS[1],
    gamma: float = PAPER_COEFFICIENTS[2],
) -> tuple[float, float, float]:
    """(depth, width, resolution) multipliers for compound coefficient ``phi``.

    >>> [round(m, 4) for m in compound_coefficients(-1.0)]
    [0.8333, 0.9091, 0.8696]
    """
    return alpha**phi, beta**phi, gamma**phi


def scaled_config(
    phi: float,
    alpha: float = PAPER_COEFFICIENTS[0],
    beta: float = PAPER_COEFFICIENTS[1],
    gamma: float = PAPER_COEFFICIENTS[2],
    base: str = "efficientnet_b0",
    name: str | None = None,
) -> EfficientNetConfig:
    """A custom family member by the compound-scaling formula of the paper (Tan & Le 2019, section 3.3).

    Depth and width multiply the base's by ``alpha ** phi`` and ``beta ** phi``; the resolution
    is ``base.resolution * gamma ** phi`` rounded to a multiple of 8. ``phi < 0`` shrinks the
    network (multipliers stay positive; stages keep at least one block and 8 channels); a
    resolution below 32 px is refused. The default name, ``<base>_phi<φ>`` plus
    ``_a<α>_b<β>_g<γ>`` when the coefficients are not the paper's, gives this config back
    through :func:`effnet.get_config`, ``create_model`` and every ``--model``.

    >>> cfg = scaled_config(1.0)
    >>> (cfg.name, round(cfg.width_mult, 3), round(cfg.depth_mult, 3), cfg.resolution)
    ('efficientnet_b0_phi1', 1.1, 1.2, 256)
    >>> scaled_config(-1.0, base="efficientnet_lite0").resolution
    192
    """
    if not all(math.isfinite(v) for v in (phi, alpha, beta, gamma)):
        raise EffnetError(f"phi, alpha, beta and gamma must be finite numbers, got {phi}, {alpha}, {beta}, {gamma}")
    if min(alpha, beta, gamma) < 1.0:
        raise EffnetError("alpha, beta and gamma must each be at least 1 (they grow the network)")
    depth, width, res = compound_coefficients(phi, alpha, beta, gamma)
    base_cfg = get_config(base)
    if base_cfg.name not in MODEL_CONFIGS:  # a scaled member's name would not read back
        raise EffnetError(f"the base of compound scaling must be a registered model (see 'effnet list'), got {base!r}")
    resolution = int(round(base_cfg.resolution * res / 8.0)) * 8
    if resolution < MIN_SCALED_RESOLUTION:
        # round(x / 8) * 8 >= 32 exactly when x >= 28
        lowest = math.ceil(math.log(28 / base_cfg.resolution) / math.log(gamma) * 100) / 100
        raise EffnetError(
            f"phi={phi:g} shrinks {base_cfg.name} to {resolution} px; compound-scaled members need at least "
            f"{MIN_SCALED_RESOLUTION} px (phi >= {lowest:g} with gamma={gamma:g})"
        )
    if resolution > MAX_INPUT_SIZE:
        raise EffnetError(
            f"phi={phi:g} grows {base_cfg.name} to {resolution} px, above effnet's {MAX_INPUT_SIZE} px limit"
        )
    return custom_config(
        width_mult=base_cfg.width_mult * width,
        depth_mult=base_cfg.depth_mult * depth,
        resolution=resolution,
        base=base,
        name=name or scaled_name(base_cfg.name, phi, alpha, beta, gamma),
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
