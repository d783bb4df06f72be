"""Structured channel pruning of EfficientNet on the published channel groups.

Channels are ranked within each coupled group (a block's hidden width, its squeeze width, a
stage's residual chain) by the magnitude of every weight slice they index: L1 or L2 norm
(Li et al., 2017, "Pruning Filters for Efficient ConvNets", https://arxiv.org/abs/1608.08710),
the batch-norm scale |gamma| (Liu et al., 2017, "Network Slimming",
https://arxiv.org/abs/1708.06519), or the first-order Taylor estimate |sum w * dL/dw|
(Molchanov et al., 2019, https://arxiv.org/abs/1906.10771) on a few batches of data. Scores are
normalised by each group's mean, so a *global* threshold compares groups of different sizes;
*local* scope removes the same fraction from every group. Kept widths are rounded up to a
multiple of ``round_to``: 8 by default, since vectorised CPU kernels and tensor cores work on
multiples of 8; :func:`channel_multiple` gives the multiple the deployment runtime computes in
(16 for ONNX Runtime on an AVX-512 CPU, whose blocked-layout kernels pad other widths up to the
next 16, so a width of 24 costs as much as 32). The network is then rebuilt physically smaller by
:func:`~effnet.models.surgery.keep_channels`, so it is an ordinary EfficientNet whose
checkpoint records every width.

This is effnet's own pruner rather than Torch-Pruning's: the groups are exact by construction
(the tests check them against the traced graph), the result saves as safetensors plus the block
list instead of a pickled module, and parameter/FLOP targets are met by a search over an
analytic cost model that takes microseconds per candidate.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from effnet.compress.base import Pass, PassConfig, PassContext, register_pass
from effnet.errors import EffnetError
from effnet.models.efficientnet import EfficientNet
from effnet.models.structure import ChannelGroup
from effnet.models.summary import layout_cost
from effnet.models.surgery import keep_channels
from effnet.training.callbacks import Callback

if TYPE_CHECKING:
    from effnet.training.engine import Trainer

__all__ = [
    "BatchNormL1",
    "PruneChannels",
    "PruneChannelsConfig",
    "channel_multiple",
    "channel_scores",
    "measure_latency_scale",
    "plan_channels",
]

Importance = Literal["l1", "l2", "bn_scale", "taylor"]
TargetKind = Literal["channels", "params", "flops"]


@dataclass(frozen=True)
class PruneChannelsConfig(PassConfig):
    """Remove whole channels until ``target`` of the chosen quantity is gone."""

    pass_name = "prune_channels"

    target: float = 0.5  # fraction of target_kind to remove, in (0, 1)
    target_kind: TargetKind = "channels"  # prunable channels, parameters or FLOPs
    importance: Importance = "l2"
    scope: Literal["global", "local"] = "global"  # one threshold for all groups, or the same fraction in each
    round_to: int = 8  # kept widths are multiples of this (a group narrower than it is left alone)
    include_stem: bool = False  # the stem's output channels (and the first block, which works on them)
    include_head: bool = False  # the head convolution's outputs (the classifier's inputs)
    include_squeeze: bool = True  # squeeze-and-excitation widths
    ratios: dict[str, float] = field(default_factory=dict)  # group-name patterns -> fraction to remove (local)
    taylor_batches: int = 4  # batches of context data for the taylor importance
    score_scale: dict[str, float] = field(default_factory=dict)  # group name -> multiplier on its scores (global)
    max_ratio: float = 1.0  # global: no group loses more than this fraction of its channels

    def validate(self) -> list[str]:
        problems = []
        if not 0.0 < self.target < 1.0:
            problems.append(f"target must be a fraction in (0, 1), got {self.target}")
        if not 1 <= self.round_to <= 256:
            problems.append(f"round_to must be between 1 and 256, got {self.round_to}")
        for pattern, ratio in self.ratios.items():
            if not isinstance(ratio, int | float) or not 0.0 <= ratio < 1.0:
                problems.append(f"ratios[{pattern!r}] must be a fraction in [0, 1), got {ratio!r}")
        for name, value in self.score_scale.items():
            if not isinstance(value, int | float) or not value > 0:
                problems.append(f"score_scale[{name!r}] must be a positive number, got {value!r}")
        if not 0.0 < self.max_ratio <= 1.0:
            problems.append(f"max_ratio must be a fraction in (0, 1], got {self.max_ratio}")
        if self.taylor_batches < 1:
            problems.append(f"taylor_batches must be at least 1, got {self.taylor_batches}")
        return problems


def channel_multiple(device: str = "cpu") -> int:
    """The channel multiple pruned widths should keep for the runtime on ``device``.

    ONNX Runtime's CPU convolutions run in a blocked channel layout (NCHWc) whose block is the
    vector width: 16 floats with AVX-512, 8 with AVX2, and widths are padded up to a whole block.
    Measured on an AVX-512 guest (Lite0, 224 px, half the FLOPs removed, ``docs/pruning.md``):
    multiples of 16 ran at 0.53x the parent's CPU time, multiples of 8 at 0.56-0.62x. CUDA
    tensor cores work on multiples of 8.
    """
    if device.startswith("cuda"):
        return 8
    return 16 if torch.backends.cpu.get_cpu_capability().startswith("AVX512") else 8


def prunable_groups(model: EfficientNet, config: PruneChannelsConfig) -> list[ChannelGroup]:
    """The groups this config lets the pruner narrow."""
    wanted = {"hidden", "stage"} | ({"squeeze"} if config.include_squeeze else set())
    wanted |= {"stem"} if config.include_stem else set()
    wanted |= {"head"} if config.include_head else set()
    return [g for g in model.structure().groups if g.prunable and g.kind in wanted and g.channels > config.round_to]


def channel_scores(
    model: nn.Module, group: ChannelGroup, importance: Importance, gradients: dict[str, torch.Tensor] | None = None
) -> torch.Tensor:
    """One score per channel of ``group``: how much the network relies on it (higher keeps it)."""
    state = dict(model.named_parameters())
    scores = torch.zeros(group.channels, dtype=torch.float64)
    for key, dim in group.members:
        tensor = state.get(key)
        if tensor is None:  # running statistics are buffers, not evidence of importance
            continue
        if importance == "bn_scale" and not key.endswith(".bn.weight"):
            continue
        if importance in ("l1", "l2") and tensor.dim() < 2:
            continue  # filter magnitudes only: batch-norm scales are what "bn_scale" measures
        w = tensor.detach().double().movedim(dim, 0).reshape(group.channels, -1)
        if importance == "l1":
            scores += w.abs().sum(1)
        elif importance == "l2":
            scores += w.pow(2).sum(1)
        elif importance == "bn_scale":
            scores += w.abs().sum(1)
        elif importance == "taylor":
            if gradients is None or key not in gradients:
                raise EffnetError("taylor importance needs calibration data (give the pass context data)")
            g = gradients[key].double().movedim(dim, 0).reshape(group.channels, -1)
            scores += (w * g).sum(1).abs()
    if importance == "l2":
        scores = scores.sqrt()
    return scores


def _gradients(model: nn.Module, context: PassContext, batches: int) -> dict[str, torch.Tensor]:
    """Gradients of the cross-entropy summed over a few batches of ``context.data``."""
    if context.data is None:
        raise EffnetError("taylor importance needs calibration data (give the pass context data)")
    sums: dict[str, torch.Tensor] = {}
    was_training = model.training
    model.eval()  # batch-norm statistics stay as trained; gradients still flow
    device = next(model.parameters()).device
    try:
        for index, (images, labels) in enumerate(context.data):
            if index >= batches:
                break
            model.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(images.to(device)), labels.to(device))
            loss.backward()
            for name, p in model.named_parameters():
                if p.grad is not None:
                    sums[name] = sums.get(name, 0) + p.grad.detach()
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    if not sums:
        raise EffnetError("the calibration data gave no batch; taylor importance needs at least one")
    return sums


def _round_up(count: int, multiple: int, limit: int) -> int:
    return min(limit, max(multiple, math.ceil(count / multiple) * multiple))


def _keep_counts(
    scores: dict[str, torch.Tensor], sizes: dict[str, int], threshold: float, round_to: int, max_ratio: float = 1.0
) -> dict[str, int]:
    return {
        name: _round_up(
            max(int((s > threshold).sum()), math.ceil(sizes[name] * (1.0 - max_ratio))), round_to, sizes[name]
        )
        for name, s in scores.items()
    }


def _strongest(scores: dict[str, torch.Tensor], counts: dict[str, int], sizes: dict[str, int]) -> dict[str, list[int]]:
    """The ``counts[name]`` highest-scoring channels of every group that loses any, in order."""
    return {
        name: sorted(torch.topk(scores[name], counts[name]).indices.tolist())
        for name in sizes
        if counts[name] < sizes[name]
    }


def _local_counts(sizes: dict[str, int], ratios: dict[str, float], round_to: int) -> dict[str, int]:
    return {name: _round_up(math.ceil(sizes[name] * (1.0 - ratios[name])), round_to, sizes[name]) for name in sizes}


def plan_channels(
    model: EfficientNet, config: PruneChannelsConfig, context: PassContext | None = None
) -> tuple[dict[str, list[int]], dict[str, Any]]:
    """Which channels of which group to keep for ``config``, and the numbers behind the choice."""
    reason = PruneChannels().unsupported(model)
    if reason:
        raise EffnetError(f"prune_channels cannot handle this model: {reason}")
    context = context or PassContext()
    groups = prunable_groups(model, config)
    if not groups:
        raise EffnetError("no channel group is wide enough to prune with this round_to")
    gradients = _gradients(model, context, config.taylor_batches) if config.importance == "taylor" else None
    raw = {g.name: channel_scores(model, g, config.importance, gradients) for g in groups}
    # Normalise by each group's mean so one threshold compares groups of different sizes and depths.
    scores = {name: s / s.mean().clamp_min(1e-12) * config.score_scale.get(name, 1.0) for name, s in raw.items()}
    sizes = {g.name: g.channels for g in groups}
    img_size = context.img_size or model.config.resolution

    def cost(counts: dict[str, int]) -> float:
        if config.target_kind == "channels":
            return sum(counts.values())
        pruned = _layout_with(model, counts)
        params, macs = layout_cost(pruned, img_size)
        return params if config.target_kind == "params" else macs

    full = cost(sizes)
    goal = full * (1.0 - config.target)
    if config.scope == "global" and not config.ratios:
        # The smallest threshold whose rounded widths meet the goal (costs fall as it rises).
        values = torch.cat(list(scores.values())).unique().sort().values.tolist()
        low, high = 0, len(values) - 1
        while low < high:
            mid = (low + high) // 2
            if cost(_keep_counts(scores, sizes, values[mid], config.round_to, config.max_ratio)) <= goal:
                high = mid
            else:
                low = mid + 1
        counts = _keep_counts(scores, sizes, values[low], config.round_to, config.max_ratio)
        chosen: dict[str, Any] = {"threshold": values[low]}
    else:
        explicit = {
            name: next((r for p, r in config.ratios.items() if fnmatch.fnmatchcase(name, p)), None) for name in sizes
        }

        def ratios_for(uniform: float) -> dict[str, float]:
            return {n: (explicit[n] if explicit[n] is not None else uniform) for n in sizes}

        low_r, high_r = 0.0, 0.999
        for _ in range(40):  # bisection on the uniform fraction of the groups without an explicit ratio
            mid_r = (low_r + high_r) / 2
            if cost(_local_counts(sizes, ratios_for(mid_r), config.round_to)) <= goal:
                high_r = mid_r
            else:
                low_r = mid_r
        counts = _local_counts(sizes, ratios_for(high_r), config.round_to)
        chosen = {"uniform_ratio": high_r}
    reached = cost(counts)
    keep = _strongest(scores, counts, sizes)
    details = {
        **chosen,
        "target_kind": config.target_kind,
        "removed_fraction": 1.0 - reached / full,
        "met": reached <= goal + 1e-9,
        "groups": {name: [sizes[name], counts[name]] for name in sizes},
    }
    return keep, details


_NOISE = 0.02  # time and FLOPs shares added to both sides of a unit's ratio (see measure_latency_scale)


def measure_latency_scale(
    model: EfficientNet,
    config: PruneChannelsConfig | None = None,
    img_size: int | None = None,
    *,
    fraction: float = 0.5,
    threads: int | None = None,
    repeats: int = 50,
    say: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """How much latency each group saves per FLOP it saves, relative to the whole network, measured.

    The groups are timed by stage, as :func:`~effnet.compress.sensitivity.sensitivity_units` splits
    them (a stage's expansion widths together, each residual width alone; squeeze widths carry
    almost no FLOPs and are left out): each unit is narrowed alone by ``fraction`` and the variants
    run round-robin with the parent in ONNX Runtime at batch 1, measuring time instead of
    counting it as NetAdapt does (Yang et al., 2018, https://arxiv.org/abs/1804.03230). A single
    group's saving is within timing noise; a stage's is not. A value of 2 means the unit's FLOPs
    cost twice the network's average time per FLOP (on B0 at 224 px: the early, high-resolution
    depthwise stages). Every group of a unit gets the unit's value, ``(dt + 0.02) / (df + 0.02)`` for
    its shares ``dt`` of the time and ``df`` of the FLOPs, so that a unit with few FLOPs (whose
    ``dt`` is mostly timing noise, about 1% here) stays near 1, clamped to [1/4, 4].
    """
    from effnet.bench import benchmark
    from effnet.compress.sensitivity import _unit_keep, sensitivity_units

    config = config or PruneChannelsConfig()
    size = img_size or model.config.resolution
    full = layout_cost(model.config, size)[1]
    groups = {g.name: g for g in prunable_groups(model, config) if g.kind != "squeeze"}
    variants: list[tuple[str, nn.Module]] = [("parent", model)]
    saved: dict[str, float] = {}
    members: dict[str, list[str]] = {}
    for unit in sensitivity_units(model, "stage", config.round_to):
        names = [name for name in unit.groups if name in groups]
        scores = {n: channel_scores(model, groups[n], config.importance) for n in names}
        keep = _unit_keep(scores, {n: groups[n].channels for n in names}, fraction, config.round_to)
        if not keep:
            continue
        counts = {n: len(channels) for n, channels in keep.items()}
        saved[unit.name] = 1.0 - layout_cost(_layout_with(model, counts), size)[1] / full
        members[unit.name] = names
        variants.append((unit.name, keep_channels(model, keep)))
    if say:
        say(f"timing {len(variants) - 1} one-stage variants against the parent at {size} px (ONNX Runtime) ...")
    result = benchmark(
        variants,
        runtimes=("onnxruntime",),
        img_size=size,
        threads=threads,
        repeats=repeats,
        warmup=3,
        measure_memory=False,
    )
    times = {r.model: r.latency_ms_median for r in result.results if r.latency_ms_median}
    if "parent" not in times:
        raise EffnetError("ONNX Runtime could not time the model; install onnxruntime to weigh groups by latency")
    scale: dict[str, float] = {}
    for unit, _ in variants[1:]:
        if unit in times:
            value = (1.0 - times[unit] / times["parent"] + _NOISE) / (saved[unit] + _NOISE)
            value = min(4.0, max(0.25, value))  # a slower narrower variant is noise, not a negative cost
            scale.update(dict.fromkeys(members[unit], value))
    return scale


def _layout_with(model: EfficientNet, counts: dict[str, int]):  # noqa: ANN202 - an EfficientNetConfig
    """The config of ``model`` with the given group widths (only the widths; no weights involved)."""
    layout = model.layout
    blocks = list(layout.blocks)
    stem, head = layout.stem_channels, layout.head_channels
    position: dict[int, int] = {}
    paths = []
    for spec in blocks:
        i = position[spec.stage] = position.get(spec.stage, -1) + 1
        paths.append(f"stages.{spec.stage}.{i}")
    # The group a block's input belongs to: the stem's, or the last non-residual output before it.
    carrier, carrier_width = "stem", counts.get("stem", stem)
    stem = carrier_width
    for index, (spec, path) in enumerate(zip(blocks, paths, strict=True)):
        in_width = carrier_width
        if not spec.residual:
            carrier = f"{path}.out"
            out_width = counts.get(carrier, spec.out_channels)
        else:
            out_width = in_width
        hidden = counts.get(f"{path}.hidden", spec.hidden_channels) if spec.expand else in_width
        squeeze = counts.get(f"{path}.squeeze", spec.se_channels) if spec.se_channels else 0
        blocks[index] = replace(
            spec, in_channels=in_width, hidden_channels=hidden, out_channels=out_width, se_channels=squeeze
        )
        carrier_width = out_width
    head = counts.get("head", head)
    new_layout = replace(layout, stem_channels=stem, blocks=tuple(blocks), head_channels=head)
    return model.config.replace(layout=new_layout)


@register_pass
class PruneChannels(Pass):
    name = "prune_channels"
    config_type = PruneChannelsConfig
    description = "remove whole channels of EfficientNet's coupled groups (physically smaller network)"

    def unsupported(self, model: nn.Module) -> str | None:
        if not isinstance(model, EfficientNet):
            return f"structured pruning rebuilds EfficientNets from their layout; {_name(model)} is not one"
        if model.features_only:
            return "a features_only network has no classifier to keep consistent"
        if getattr(model, "effnet_passes", None):
            return "prune before folding batch norms or freezing padding"
        return None

    def run(self, model: nn.Module, config: PassConfig, context: PassContext) -> tuple[nn.Module, dict[str, Any]]:
        assert isinstance(config, PruneChannelsConfig)
        keep, details = plan_channels(model, config, context)  # type: ignore[arg-type]
        pruned = keep_channels(model, keep)  # type: ignore[arg-type]
        pruned.effnet_passes = list(getattr(model, "effnet_passes", []))
        img_size = context.img_size or model.config.resolution  # type: ignore[union-attr]
        for label, m in (("before", model), ("after", pruned)):
            params, macs = layout_cost(m.config, img_size)  # type: ignore[union-attr]
            details[f"flops_{label}"] = 2 * macs
        details["img_size"] = img_size
        return pruned, details


def _name(model: nn.Module) -> str:
    return str(getattr(model, "baseline_name", None) or type(model).__name__)


class BatchNormL1(Callback):
    """Network slimming's sparsity regulariser (Liu et al., 2017): ``loss + strength * sum |gamma|``.

    Added as its gradient, ``strength * sign(gamma)``, to every batch norm's scale after backward,
    which drives the scales of unneeded channels towards zero so ``importance="bn_scale"`` can
    prune them. ``effnet train --bn-l1 STRENGTH`` turns it on (1e-4 to 1e-5 are usual).
    """

    def __init__(self, strength: float = 1e-4) -> None:
        if not strength > 0:
            raise EffnetError(f"the batch-norm L1 strength must be positive, got {strength}")
        self.strength = strength

    def on_after_backward(self, trainer: Trainer) -> None:
        for module in trainer.model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.weight is not None:
                if module.weight.grad is not None:
                    module.weight.grad.add_(torch.sign(module.weight.detach()), alpha=self.strength)

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        scales = [m.weight.detach().abs() for m in trainer.model.modules() if isinstance(m, nn.BatchNorm2d)]
        metrics["bn_l1"] = float(sum(s.sum() for s in scales))
