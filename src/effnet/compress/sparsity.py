"""Unstructured magnitude pruning: zero the smallest weights, keep them zero while fine-tuning.

Magnitude pruning (Han et al., 2015, "Learning both Weights and Connections for Efficient Neural
Networks", https://arxiv.org/abs/1506.02626) with the gradual schedule of Zhu & Gupta (2017,
"To prune, or not to prune", https://arxiv.org/abs/1710.01878): sparsity rises from an initial to
a final value between a begin and an end step, ``s_t = s_f + (s_i - s_f) (1 - (t - t_0) / (t_1 - t_0))^3``,
updated every ``frequency`` steps; the masks are re-applied after every optimizer step (to the EMA
copy too) by :class:`SparsityCallback`.

The network keeps its dense shapes: without sparse kernels a sparse network runs no faster
(``docs/benchmarks.md`` measures it). What shrinks is the file: ``effnet.save_model(...,
sparse=True)`` stores each mostly-zero tensor as a bit mask plus its non-zero values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from effnet.compress.base import Pass, PassConfig, PassContext, register_pass
from effnet.training.callbacks import Callback

if TYPE_CHECKING:
    from effnet.training.engine import Trainer

__all__ = [
    "PruneWeights",
    "PruneWeightsConfig",
    "SparsityCallback",
    "magnitude_masks",
    "prunable_weights",
    "scheduled_sparsity",
    "sparsity_of",
]

Scope = Literal["global", "layer"]


@dataclass(frozen=True)
class PruneWeightsConfig(PassConfig):
    """Zero the smallest-magnitude weights of convolutions and linear layers."""

    pass_name = "prune_weights"

    sparsity: float = 0.5  # fraction of the prunable weights set to zero, in (0, 1)
    scope: Scope = "global"  # one threshold on LAMP scores over all layers, or the same sparsity in each
    include_stem: bool = False  # the first convolution (few weights, all of them important)
    include_classifier: bool = False  # the final linear layer
    include_depthwise: bool = True  # depthwise filters (9-25 weights per channel)

    def validate(self) -> list[str]:
        if not 0.0 < self.sparsity < 1.0:
            return [f"sparsity must be a fraction in (0, 1), got {self.sparsity}"]
        return []


def prunable_weights(model: nn.Module, config: PruneWeightsConfig) -> dict[str, nn.Parameter]:
    """The weight tensors the config lets the pruner zero, by parameter name."""
    stem = getattr(model, "stem_name", None) or _structure_name(model, "stem")
    classifier = getattr(model, "classifier_name", None)
    chosen = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d | nn.Linear):
            continue
        if name == stem and not config.include_stem:
            continue
        if name == classifier and not config.include_classifier:
            continue
        depthwise = isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels
        if depthwise and not config.include_depthwise:
            continue
        chosen[f"{name}.weight"] = module.weight
    return chosen


def magnitude_masks(weights: dict[str, torch.Tensor], sparsity: float, scope: Scope) -> dict[str, torch.Tensor]:
    """Boolean masks (True = keep) zeroing the ``sparsity`` fraction of the weights.

    ``layer``: the smallest magnitudes of each tensor. ``global``: one threshold over all tensors
    on LAMP scores (Lee et al., 2021, "Layer-adaptive Sparsity for the Magnitude-based Pruning",
    https://arxiv.org/abs/2010.07611): a weight's square divided by the sum of the squares of the
    weights of its tensor that are at least as large. Raw magnitudes are not comparable across
    layers that a batch norm rescales: on EfficientNet-B0 trained from scratch, one threshold on
    them zeroed every depthwise filter of stages 4 and 5 at 80% sparsity (test top-1 38% after a
    recovery epoch), and folding the batch norms in moved the problem to the head instead. LAMP
    scores do not depend on a tensor's scale, and each tensor keeps its largest weight (score 1).
    """
    if sparsity <= 0.0:
        return {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}
    if scope == "layer":
        return {name: _keep_largest(w.detach().abs(), sparsity) for name, w in weights.items()}
    scores = {name: _lamp_scores(w.detach().float().cpu()) for name, w in weights.items()}
    flat = torch.cat([score.flatten() for score in scores.values()])
    drop = int(round(sparsity * flat.numel()))
    if drop == 0:
        return {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}
    threshold = flat.kthvalue(drop).values.item()
    # Ties at the threshold (e.g. weights already zero) may leave a few too many; that is harmless.
    return {name: (score > threshold).to(weights[name].device) for name, score in scores.items()}


def _lamp_scores(weight: torch.Tensor) -> torch.Tensor:
    """LAMP score of every weight: ``w_u^2 / sum of w_v^2 over the weights v with |w_v| >= |w_u|``."""
    squares = weight.flatten().double().pow(2)
    ordered, index = squares.sort()
    at_least = ordered.flip(0).cumsum(0).flip(0)  # sum over this weight and every larger one
    scores = torch.empty_like(squares)
    scores[index] = ordered / at_least.clamp_min(1e-300)
    return scores.float().reshape(weight.shape)


def _keep_largest(magnitude: torch.Tensor, sparsity: float) -> torch.Tensor:
    drop = int(round(sparsity * magnitude.numel()))
    mask = torch.ones_like(magnitude, dtype=torch.bool)
    if drop > 0:
        index = magnitude.flatten().argsort()[:drop]
        mask.view(-1)[index] = False
    return mask


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero the masked weights of ``model`` in place (names as in ``model.named_parameters()``)."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            if name in params:
                params[name].mul_(mask.to(params[name].device, params[name].dtype))


def sparsity_of(model: nn.Module, names: list[str] | None = None) -> float:
    """Fraction of zeros among the named weights (default: every convolution and linear weight)."""
    params = dict(model.named_parameters())
    if names is None:
        names = [n for n, p in params.items() if p.dim() >= 2]
    total = sum(params[n].numel() for n in names)
    zeros = sum(int((params[n] == 0).sum()) for n in names)
    return zeros / max(total, 1)


@register_pass
class PruneWeights(Pass):
    name = "prune_weights"
    config_type = PruneWeightsConfig
    description = "zero the smallest weights (unstructured); shapes stay, files shrink with sparse storage"

    def run(self, model: nn.Module, config: PassConfig, context: PassContext) -> tuple[nn.Module, dict[str, Any]]:
        assert isinstance(config, PruneWeightsConfig)
        weights = prunable_weights(model, config)
        masks = magnitude_masks(dict(weights), config.sparsity, config.scope)
        apply_masks(model, masks)
        per_layer = {name: round(1.0 - float(m.float().mean()), 4) for name, m in masks.items()}
        return model, {
            "sparsity": sparsity_of(model, list(weights)),
            "overall_sparsity": sparsity_of(model),
            "layers": per_layer,
        }


def scheduled_sparsity(step: int, initial: float, final: float, begin: int, end: int) -> float:
    """Zhu & Gupta's cubic schedule: ``initial`` before ``begin``, ``final`` from ``end`` on."""
    if step <= begin:
        return initial
    if step >= end:
        return final
    progress = (step - begin) / max(end - begin, 1)
    return final + (initial - final) * (1.0 - progress) ** 3


class SparsityCallback(Callback):
    """Keeps weights pruned while a model trains, raising sparsity on a schedule.

    ``constant``: prune to ``final`` at the start and hold it. ``polynomial``: from ``initial`` at
    step ``begin_step`` to ``final`` at ``end_step`` (default: the run's last step), updating the
    masks every ``frequency`` optimizer steps. Masks are saved with the training state, so a
    resumed run continues with the same masks. After training, :meth:`finalize` returns the
    weights with the masks applied for good.
    """

    def __init__(
        self,
        config: PruneWeightsConfig | None = None,
        schedule: Literal["constant", "polynomial"] = "constant",
        initial: float = 0.0,
        begin_step: int = 0,
        end_step: int | None = None,
        frequency: int = 100,
    ) -> None:
        from effnet.errors import EffnetError

        self.config = config or PruneWeightsConfig()
        if schedule not in ("constant", "polynomial"):
            raise EffnetError(f"schedule must be constant or polynomial, got {schedule!r}")
        if not 0.0 <= initial <= self.config.sparsity or frequency < 1 or begin_step < 0:
            raise EffnetError("need 0 <= initial <= final sparsity, frequency >= 1 and begin_step >= 0")
        self.schedule, self.initial, self.frequency = schedule, initial, frequency
        self.begin_step, self.end_step = begin_step, end_step
        self.masks: dict[str, torch.Tensor] = {}
        self.current = 0.0

    def target(self, step: int, last_step: int) -> float:
        if self.schedule == "constant":
            return self.config.sparsity
        end = self.end_step if self.end_step is not None else last_step
        return scheduled_sparsity(step, self.initial, self.config.sparsity, self.begin_step, end)

    def _update(self, trainer: Trainer) -> None:
        step, last = trainer.global_step, trainer.steps_per_epoch * trainer.recipe.epochs
        target = self.target(step, last)
        due = not self.masks or (
            self.schedule == "polynomial" and step >= self.begin_step and (step - self.begin_step) % self.frequency == 0
        )
        if due and (target != self.current or not self.masks):
            weights = prunable_weights(trainer.model, self.config)
            masks = magnitude_masks(dict(weights), target, self.config.scope)
            self.masks = {n: m.cpu() for n, m in masks.items()}
            self.current = target
        for model in (trainer.model, trainer.ema_model):
            if model is not None:
                apply_masks(model, self.masks)

    def on_fit_start(self, trainer: Trainer) -> None:
        self._update(trainer)

    def on_after_step(self, trainer: Trainer) -> None:
        self._update(trainer)

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        metrics["sparsity"] = self.current

    def finalize(self, model: nn.Module) -> nn.Module:
        """``model`` with the masks applied for good (in place; returned for chaining)."""
        apply_masks(model, self.masks)
        return model

    def state_dict(self) -> dict[str, Any]:
        return {"current": self.current, "masks": {n: m.to(torch.uint8) for n, m in self.masks.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.current = float(state.get("current", 0.0))
        self.masks = {n: m.bool() for n, m in (state.get("masks") or {}).items()}


def _structure_name(model: nn.Module, what: str) -> str | None:
    structure = getattr(model, "structure", None)
    if structure is None:
        return None
    try:
        return getattr(structure(), what)
    except Exception:  # noqa: BLE001 - a model whose graph cannot be traced simply has no known stem
        return None
