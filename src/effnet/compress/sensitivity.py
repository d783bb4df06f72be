"""Pruning sensitivity: top-1 on held-out data after pruning one part of the network at a time.

Each *unit* (one stage's expansion widths, a stage's residual width, the stem, the head, or a
single channel group) is pruned alone at each ratio, choosing the channels exactly as
:func:`~effnet.compress.prune.plan_channels` does for ``PruneChannelsConfig(scope="local",
ratios={unit: ratio, "*": 0})``; the smaller network is rebuilt and evaluated. The accuracy lost
per unit says where channels can go and where they cannot (the per-layer sensitivity analysis of
Li et al., 2017, "Pruning Filters for Efficient ConvNets", https://arxiv.org/abs/1608.08710).
:func:`suggest_ratios` turns the curves into a ``ratios`` mapping that
:class:`~effnet.compress.prune.PruneChannelsConfig` takes as it is, for a largest drop per unit;
:func:`ratios_for_target` does it for a FLOPs, parameter or channel budget instead
(``effnet prune --sensitivity``).

The pruned copies are evaluated as pruning leaves them, batch-norm statistics included, and
without fine-tuning: the numbers rank units, they do not predict accuracy after retraining.

Example::

    result = prune_sensitivity(model, val_loader, ratios=(0.25, 0.5, 0.75))
    print(result.to_table())
    result.save("sensitivity.json")  # effnet report sensitivity.json plots it
    config = PruneChannelsConfig(scope="local", ratios=suggest_ratios(result, max_drop=1.0))

>>> import effnet
>>> units = sensitivity_units(effnet.create_model("efficientnet_lite0"))
>>> [u.name for u in units[:4]], units[2].groups
(['stem', 'stages.0.0.out', 'stages.1.*.hidden', 'stages.1.0.out'], ('stages.1.0.hidden', 'stages.1.1.hidden'))
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from effnet.compress.base import PassContext
from effnet.compress.prune import (
    PruneChannels,
    PruneChannelsConfig,
    _local_counts,
    _strongest,
    channel_scores,
    prunable_groups,
)
from effnet.errors import EffnetError
from effnet.models.surgery import keep_channels
from effnet.schemas import CompressionReport, PruneSensitivity

__all__ = [
    "SensitivityResult",
    "SensitivityUnit",
    "prune_sensitivity",
    "ratios_for_target",
    "sensitivity_units",
    "suggest_ratios",
]

Granularity = Literal["stage", "group"]
IMPORTANCES = ("l1", "l2", "bn_scale")  # taylor would recompute gradients for every unit and ratio
_KIND_ORDER = {"hidden": 0, "squeeze": 1, "stage": 2}
_TIE_SLOPE = 1e-3  # top-1 points per unit of ratio, see ratios_for_target


@dataclass
class SensitivityUnit:
    """Channel groups pruned together, and top-1 after pruning them (alone) at each ratio."""

    name: str  # also the group-name pattern that selects them, e.g. "stages.3.*.hidden" or "stages.3.0.out"
    groups: tuple[str, ...]  # the channel groups it stands for
    channels: int  # their total width
    top1: list[float] = field(default_factory=list)  # percent, one per ratio of the result
    removed: list[int] = field(default_factory=list)  # channels actually removed per ratio (after rounding)


@dataclass
class SensitivityResult:
    """Top-1 of the unpruned model and of each unit pruned alone at each ratio."""

    model: str
    baseline_top1: float  # percent, the unpruned model on the same images (statistics re-estimated like the copies')
    ratios: list[float]  # fractions of each unit's channels asked to go, ascending
    units: list[SensitivityUnit]
    granularity: str = "stage"
    importance: str = "l2"
    round_to: int = 8
    images: int = 0  # images each top-1 is over
    seconds: float = 0.0
    recalibrated_bn_batches: int = 0  # 0: batch-norm statistics as pruning left them
    data: str | None = None  # what the images were, for the report
    given_top1: float | None = None  # the unpruned model with its own statistics, when the reference re-estimated them

    def drops(self, unit: SensitivityUnit) -> list[float]:
        """Top-1 points lost against the unpruned model, one per ratio."""
        return [self.baseline_top1 - t for t in unit.top1]

    def ranked(self) -> list[SensitivityUnit]:
        """Units from the most sensitive (largest drop at the largest ratio, then the next ratio down) to the least."""
        return sorted(self.units, key=lambda u: self.drops(u)[::-1], reverse=True)

    def to_records(self) -> list[PruneSensitivity]:
        """One ``PruneSensitivity`` per unit, starting at ratio 0 with the unpruned top-1."""
        head = [] if self.ratios and self.ratios[0] == 0.0 else [(0.0, self.baseline_top1)]
        return [
            PruneSensitivity(
                layer=u.name,
                ratios=[r for r, _ in head] + list(self.ratios),
                top1=[t for _, t in head] + list(u.top1),
            )
            for u in self.units
        ]

    def to_report(self) -> CompressionReport:
        """The compression report (schema ``effnet.compression``) that ``effnet report`` plots."""
        return CompressionReport(model=self.model, prune_sensitivity=self.to_records(), data=self.data)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_report` as JSON to ``path``; returns the path."""
        path = Path(path)
        path.write_text(json.dumps(self.to_report().to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    def to_table(self) -> str:
        """A plain-text table: a row per unit, top-1 and its drop at each ratio.

        A ``*`` marks a ratio that removed nothing from the unit (its widths rounded back up to
        multiples of ``round_to``), so its top-1 is the unpruned one by construction.
        """
        name_width = max([len("unit"), *(len(u.name) for u in self.units)])
        header = f"{'unit':<{name_width}}  {'channels':>8}" + "".join(
            f"  {f'top-1@{r:g}':>10} {'drop':>6}" for r in self.ratios
        )
        unpruned = f"top-1 {self.baseline_top1:.2f}% unpruned"
        if self.given_top1 is not None:
            unpruned += f" ({self.given_top1:.2f}% before re-estimating its statistics)"
        lines = [
            f"{self.model}: {unpruned}, {self.images} images, {self.importance} importance, {self._bn_words()}",
            header,
            "-" * len(header),
        ]
        unchanged = False
        for unit in self.units:
            cells = []
            for top1, drop, removed in zip(unit.top1, self.drops(unit), unit.removed, strict=True):
                mark = "*" if removed == 0 else " "
                unchanged |= removed == 0
                cells.append(f"  {top1:>9.2f}{mark} {drop:>6.2f}")
            lines.append(f"{unit.name:<{name_width}}  {unit.channels:>8}" + "".join(cells))
        if unchanged:
            lines.append(f"* the ratio removed no channel: widths are rounded up to multiples of {self.round_to}")
        return "\n".join(lines)

    def _bn_words(self) -> str:
        if self.recalibrated_bn_batches:
            return f"batch-norm statistics re-estimated on {self.recalibrated_bn_batches} batches"
        return "batch-norm statistics as pruned (not recalibrated)"


def sensitivity_units(model: nn.Module, granularity: Granularity = "stage", round_to: int = 8) -> list[SensitivityUnit]:
    """The units :func:`prune_sensitivity` prunes one at a time, in network order (no accuracies yet).

    Both granularities split the same channel groups (every group the pruner may narrow:
    stem, head, hidden, squeeze and stage widths wider than ``round_to``) exactly once.
    ``"group"``: each group alone, named by the group. ``"stage"``: a stage's hidden widths
    together (``stages.K.*.hidden``), its squeeze widths together (``stages.K.*.squeeze``), each
    residual width (``stages.K.0.out``), the stem and the head.
    """
    _check_model(model)
    if granularity not in ("stage", "group"):
        raise EffnetError(f"granularity must be 'stage' or 'group', got {granularity!r}")
    groups = prunable_groups(model, _config({}, "l2", round_to))  # type: ignore[arg-type]
    units: dict[str, list[Any]] = {}
    for g in sorted(groups, key=_network_order):
        name = g.name
        if granularity == "stage" and g.kind in ("hidden", "squeeze"):
            name = f"stages.{_stage_of(g.name)}.*.{g.kind}"
        units.setdefault(name, []).append(g)
    return [
        SensitivityUnit(name, tuple(g.name for g in members), sum(g.channels for g in members))
        for name, members in units.items()
    ]


def prune_sensitivity(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    ratios: Sequence[float] = (0.25, 0.5, 0.75),
    granularity: Granularity = "stage",
    importance: str = "l2",
    classes: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    max_batches: int | None = None,
    progress: Callable[[str], None] | None = None,
    round_to: int = 8,
    recalibrate_bn_batches: int = 0,
    bn_loader: Iterable[tuple[torch.Tensor, Any]] | None = None,
    data: str | None = None,
) -> SensitivityResult:
    """Top-1 on ``loader`` after pruning each unit alone at each ratio; the input model is untouched.

    Args:
        model: an EfficientNet (not features_only, before folding or freezing passes).
        loader: batches of ``(images, labels)``, e.g. a validation DataLoader.
        ratios: fractions of each unit's channels to remove, each in [0, 1).
        granularity: ``"stage"`` or ``"group"`` (see :func:`sensitivity_units`).
        importance: which channels go, as in :class:`PruneChannelsConfig`: ``l1``, ``l2`` or ``bn_scale``.
        classes: class names (only their number matters here); default: the model's outputs.
        max_batches: evaluate on the first this many batches only.
        progress: called with one line after each evaluation.
        round_to: kept widths are multiples of this, as in :class:`PruneChannelsConfig`.
        recalibrate_bn_batches: re-estimate every batch-norm's statistics of each pruned copy, and
            of the unpruned reference, on the first this many batches of ``bn_loader`` (training
            images, the same batches for every copy) before evaluating it. 0 (the default)
            evaluates the copies as pruning leaves them. Worth it for a network whose statistics
            were learnt along with its weights; not for one fine-tuned with frozen statistics
            (``effnet train``'s default when fine-tuning), whose weights expect the old ones.
        data: a description of the images, recorded in the report.
    """
    _check_model(model)
    ratios = _check_ratios(ratios)
    if importance not in IMPORTANCES:
        raise EffnetError(f"importance must be one of {', '.join(IMPORTANCES)} for sensitivity, got {importance!r}")
    if max_batches is not None and (isinstance(max_batches, bool) or not isinstance(max_batches, int)):
        raise EffnetError(f"max_batches must be a whole number, got {max_batches!r}")
    if max_batches is not None and max_batches < 1:
        raise EffnetError(f"max_batches must be at least 1, got {max_batches}")
    if isinstance(recalibrate_bn_batches, bool) or not isinstance(recalibrate_bn_batches, int):
        raise EffnetError(f"recalibrate_bn_batches must be a whole number, got {recalibrate_bn_batches!r}")
    if recalibrate_bn_batches < 0:
        raise EffnetError(f"recalibrate_bn_batches must be 0 or more, got {recalibrate_bn_batches}")
    if recalibrate_bn_batches and bn_loader is None:
        raise EffnetError("recalibrate_bn_batches needs bn_loader: batches of training images")
    units = sensitivity_units(model, granularity, round_to)
    num_classes = model.structure().group("classes").channels
    names = list(classes) if classes is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise EffnetError(f"the model has {num_classes} outputs but {len(names)} class names were given")
    dev = torch.device(device)
    started = time.monotonic()
    work = model if _device_of(model) == dev else copy.deepcopy(model).to(dev)
    images = _FirstBatches(loader, max_batches)

    bn_batches = []
    if recalibrate_bn_batches:
        for batch in itertools.islice(bn_loader, recalibrate_bn_batches):  # type: ignore[arg-type]
            bn_batches.append(batch[0] if isinstance(batch, list | tuple) else batch)
        if not bn_batches:
            raise EffnetError("bn_loader gave no batch to re-estimate batch-norm statistics on")

    baseline = _top1(work, images, names, dev)
    if baseline.n == 0:
        raise EffnetError("the loader gave no images to evaluate; give a non-empty validation loader")
    given_top1 = None
    if bn_batches:  # the reference is treated like the copies, so drops measure the pruning alone
        reference = copy.deepcopy(work)
        _recalibrate_batchnorm(reference, bn_batches, dev)
        given_top1, baseline = baseline.top1, _top1(reference, images, names, dev)
        del reference
    structure = work.structure()
    total, done = len(units) * len(ratios), 0
    for unit in units:
        groups = [structure.group(name) for name in unit.groups]
        # Scored once per unit rather than once per ratio: plan_channels would score every group each time.
        scores = {g.name: _normalised(channel_scores(work, g, importance)) for g in groups}  # type: ignore[arg-type]
        for ratio in ratios:
            keep = _unit_keep(scores, {g.name: g.channels for g in groups}, ratio, round_to)
            removed = sum(structure.group(name).channels - len(kept) for name, kept in keep.items())
            if keep:
                pruned = keep_channels(work, keep)  # type: ignore[arg-type]
                if bn_batches:
                    _recalibrate_batchnorm(pruned, bn_batches, dev)
                top1 = _top1(pruned, images, names, dev).top1
                del pruned
            else:  # rounding kept every channel: the network is the unpruned reference
                top1 = baseline.top1
            unit.top1.append(top1)
            unit.removed.append(removed)
            done += 1
            if progress is not None:
                progress(f"[{done}/{total}] {unit.name} at {ratio:g}: top-1 {top1:.2f}% (-{removed} channels)")
    return SensitivityResult(
        model=_model_name(model),
        baseline_top1=baseline.top1,
        ratios=ratios,
        units=units,
        granularity=granularity,
        importance=importance,
        round_to=round_to,
        images=baseline.n,
        seconds=time.monotonic() - started,
        recalibrated_bn_batches=len(bn_batches),
        data=data,
        given_top1=given_top1,
    )


def suggest_ratios(
    result: SensitivityResult | CompressionReport, max_drop: float = 1.0, others: float | None = 0.0
) -> dict[str, float]:
    """Per unit, the largest tested ratio that cost at most ``max_drop`` top-1 points, as a ``ratios`` mapping.

    A ratio counts only if it and every smaller tested ratio stayed within ``max_drop`` (accuracy
    is noisy: a unit that lost too much at 0.25 is not trusted at 0.5); a unit with none gets 0.
    The keys are the units' names, which are group-name patterns, so the mapping goes straight
    into ``PruneChannelsConfig(scope="local", ratios=...)``. ``others`` adds a last ``"*"`` entry
    for the groups no unit covers (0 keeps them whole; None leaves them to the config's
    ``target``). Each unit was measured alone: pruning all of them at once loses more, roughly
    the sum of the drops, so fine-tune afterwards.

    ``result`` may also be a compression report read back from the JSON
    (``CompressionReport.from_dict``); its records must start at ratio 0 with the unpruned top-1.
    """
    if isinstance(max_drop, bool) or not isinstance(max_drop, int | float) or not max_drop >= 0:
        raise EffnetError(f"max_drop must be a number of top-1 points, 0 or more, got {max_drop!r}")
    if others is not None and (isinstance(others, bool) or not isinstance(others, int | float) or not 0 <= others < 1):
        raise EffnetError(f"others must be a fraction in [0, 1) or None, got {others!r}")
    if isinstance(result, SensitivityResult):
        records = result.to_records()
    elif isinstance(result, CompressionReport):
        records = result.prune_sensitivity
    else:
        raise EffnetError(
            f"suggest_ratios needs a SensitivityResult or a CompressionReport, not {type(result).__name__}"
        )
    if not records:
        raise EffnetError("the sensitivity result has no units to suggest ratios for")
    suggestion: dict[str, float] = {}
    for record in records:
        measured = sorted(zip(record.ratios, record.top1, strict=True))
        if not measured or measured[0][0] != 0.0:
            raise EffnetError(f"{record.layer}: the records must include ratio 0 (the unpruned top-1) to measure drops")
        baseline = measured[0][1]
        chosen = 0.0
        for ratio, top1 in measured[1:]:
            if baseline - top1 > max_drop:
                break
            chosen = ratio
        suggestion[record.layer] = chosen
    if others is not None:
        suggestion["*"] = float(others)  # last: patterns match in order, so the units come first
    return suggestion


# ---------------------------------------------------------------------------------------------


def _config(ratios: dict[str, float], importance: str, round_to: int) -> PruneChannelsConfig:
    """Prune the given patterns at their ratios and nothing else (``"*"`` last: 0 for every other group)."""
    return PruneChannelsConfig(
        scope="local",
        ratios={**ratios, "*": 0.0},
        importance=importance,  # type: ignore[arg-type]
        round_to=round_to,
        include_stem=True,
        include_head=True,
        include_squeeze=True,
    )


def _check_model(model: nn.Module) -> None:
    reason = PruneChannels().unsupported(model)
    if reason:
        raise EffnetError(f"pruning sensitivity cannot handle this model: {reason}")


def _check_ratios(ratios: Any) -> list[float]:
    if isinstance(ratios, str | bytes) or not isinstance(ratios, Iterable):
        raise EffnetError(f"ratios must be a list of fractions in [0, 1), got {ratios!r}")
    values = list(ratios)
    if not values:
        raise EffnetError("ratios is empty; give fractions in [0, 1) such as 0.25 0.5 0.75")
    for r in values:
        if isinstance(r, bool) or not isinstance(r, int | float) or not 0.0 <= r < 1.0 or math.isnan(r):
            raise EffnetError(f"ratios must be fractions in [0, 1), got {r!r}")
    if len(set(values)) != len(values):
        raise EffnetError(f"ratios must be distinct, got {values}")
    return sorted(float(r) for r in values)


def _stage_of(group_name: str) -> int:
    match = re.match(r"stages\.(\d+)\.", group_name)
    assert match, group_name
    return int(match.group(1))


def _network_order(group: Any) -> tuple[float, ...]:
    if group.kind == "stem":
        return (-1.0,)
    if group.kind == "head":
        return (math.inf,)
    stage, block = (int(n) for n in group.name.split(".")[1:3])
    return (float(stage), float(_KIND_ORDER.get(group.kind, 3)), float(block))


def _normalised(scores: torch.Tensor) -> torch.Tensor:
    return scores / scores.mean().clamp_min(1e-12)  # as plan_channels does, so ties break the same way


def _unit_keep(
    scores: dict[str, torch.Tensor], sizes: dict[str, int], ratio: float, round_to: int
) -> dict[str, list[int]]:
    """The channels :func:`plan_channels` keeps when the unit's groups are pruned at ``ratio`` in local
    scope and every other group at 0 (the tests check it against plan_channels)."""
    return _strongest(scores, _local_counts(sizes, dict.fromkeys(sizes, ratio), round_to), sizes)


def _model_name(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return str(getattr(config, "name", None) or type(model).__name__)


def _device_of(model: nn.Module) -> torch.device:
    return next(itertools.chain(model.parameters(), model.buffers()), torch.zeros(())).device


class _FirstBatches:
    """The first ``limit`` batches of ``loader`` (all of them when ``limit`` is None), each time it is iterated."""

    def __init__(self, loader: Iterable[Any], limit: int | None) -> None:
        self.loader, self.limit = loader, limit

    def __iter__(self) -> Iterator[Any]:
        return iter(self.loader) if self.limit is None else itertools.islice(self.loader, self.limit)


def _top1(model: nn.Module, images: _FirstBatches, classes: list[str], device: torch.device) -> Any:
    from effnet.training.evaluate import evaluate

    try:
        return evaluate(model, images, classes, device)  # type: ignore[arg-type]
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise EffnetError(
            f"evaluating on the loader failed ({first}); it must yield (images, labels) batches with labels "
            f"below {len(classes)}"
        ) from None


@torch.no_grad()
def _recalibrate_batchnorm(model: nn.Module, batches: Sequence[torch.Tensor], device: torch.device) -> None:
    """Replace every batch norm's running statistics by their average over ``batches`` of images.

    The rest of the network stays in eval mode (no dropout, no stochastic depth), so only the
    statistics change.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches, not an exponential one
        m.train()
    try:
        for images in batches:
            model(images.to(device))
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.eval()


def ratios_for_target(
    result: SensitivityResult | CompressionReport,
    model: nn.Module,
    target: float,
    target_kind: Literal["channels", "params", "flops"] = "flops",
    img_size: int | None = None,
    **config: Any,
) -> tuple[dict[str, float], float]:
    """Per-unit ratios that remove ``target`` of ``target_kind``, spending accuracy where it is cheapest.

    Every unit gets the largest ratio whose measured drop (interpolated linearly between the
    tested ratios, never beyond the largest) stays under one shared threshold; the threshold is
    the smallest that meets the target. Units whose drops tie (typically several that lost
    nothing) are pruned by the same ratio. The cheap units therefore lose most of their channels and
    the sensitive ones few (the per-layer ratios of Li et al., 2017, chosen for a budget instead
    of a fixed drop). Returns the ``ratios`` mapping for ``PruneChannelsConfig(scope="local")``
    (``config`` gives its other fields) and the threshold in top-1 points.
    """
    from effnet.compress.prune import plan_channels

    if isinstance(result, SensitivityResult):
        records = result.to_records()
    else:
        records = result.prune_sensitivity
    if not records:
        raise EffnetError("the sensitivity result has no units to choose ratios from")
    if not 0.0 < target < 1.0:
        raise EffnetError(f"target must be a fraction in (0, 1), got {target}")
    curves = {}
    for record in records:
        measured = sorted(zip(record.ratios, record.top1, strict=True))
        if not measured or measured[0][0] != 0.0:
            raise EffnetError(f"{record.layer}: the records must include ratio 0 (the unpruned top-1)")
        base, worst, points = measured[0][1], 0.0, []
        for ratio, top1 in measured:
            worst = max(worst, base - top1)  # a drop curve that never falls: noise is not a free lunch
            # A slight slope shares the budget evenly among units that lost nothing measurable,
            # rather than cutting every one of them to the largest ratio at once.
            points.append((ratio, worst + _TIE_SLOPE * ratio))
        curves[record.layer] = points

    def at(threshold: float) -> dict[str, float]:
        ratios = {}
        for layer, points in curves.items():
            chosen = 0.0
            for (r0, d0), (r1, d1) in itertools.pairwise(points):
                if d1 <= threshold:
                    chosen = r1
                    continue
                if d0 <= threshold:
                    chosen = r0 + (r1 - r0) * (threshold - d0) / (d1 - d0)
                break
            ratios[layer] = round(min(chosen, 0.99), 4)
        return {**ratios, "*": 0.0}

    def removed(threshold: float) -> float:
        prune_config = PruneChannelsConfig(
            target=target, target_kind=target_kind, scope="local", ratios=at(threshold), **config
        )
        _, details = plan_channels(model, prune_config, PassContext(img_size=img_size))  # type: ignore[arg-type]
        return float(details["removed_fraction"])

    highest = max(d for points in curves.values() for _, d in points)
    if removed(highest) < target:
        raise EffnetError(
            f"pruning every unit up to the largest tested ratio removes only {removed(highest):.0%} of the "
            f"{target_kind}, short of the target {target:.0%}; test larger ratios or lower the target"
        )
    low, high = 0.0, highest
    for _ in range(40):
        mid = (low + high) / 2
        if removed(mid) >= target:
            high = mid
        else:
            low = mid
    return at(high), high
