"""Callbacks: the points where compression and custom training logic plug into the engine.

A callback overrides the events it needs; every event receives the running
:class:`~effnet.training.engine.Trainer`, whose public attributes (``model``, ``optimizer``,
``ema``, ``epoch``, ``global_step``, ``recipe``, ...) it may read and, where documented, change.
State a callback keeps across epochs goes in :meth:`Callback.state_dict`: it is written into the
training-state file with the epoch and given back by :meth:`Callback.load_state_dict` on
``--resume``, so a resumed run ends exactly where an uninterrupted one would.

Example, a network-slimming penalty (Liu et al., 2017, https://arxiv.org/abs/1708.06519)::

    class BatchNormL1(Callback):
        def __init__(self, strength: float) -> None:
            self.strength = strength

        def on_after_backward(self, trainer):
            for m in trainer.model.modules():
                if isinstance(m, torch.nn.BatchNorm2d) and m.weight.grad is not None:
                    m.weight.grad.add_(self.strength * torch.sign(m.weight.detach()))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from effnet.training.engine import Trainer, TrainResult

__all__ = ["Callback"]


class Callback:
    """Base class: every event does nothing; override the ones you need."""

    def on_fit_start(self, trainer: Trainer) -> None:
        """Everything is built (and resumed state loaded); no epoch has started."""

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        """Epoch ``epoch`` (1-based, as the log prints it) begins; the model is in training mode."""

    def on_after_backward(self, trainer: Trainer) -> None:
        """Gradients of one optimizer step are complete: accumulated over ``accum_steps`` micro-batches,
        unscaled (under fp16) and not yet clipped. Edit ``param.grad`` here (regularisers, masks)."""

    def on_after_step(self, trainer: Trainer) -> None:
        """The optimizer stepped, the schedule advanced and the EMA (``trainer.ema``) was updated.
        Re-apply constraints on the weights here (pruning masks, also to ``trainer.ema_model``)."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        """Epoch ``epoch`` is trained and evaluated; ``metrics`` is its row of ``metrics.jsonl``
        (add keys to log them). Runs before the epoch's checkpoint is written."""

    def on_save(self, trainer: Trainer, epoch: int, metadata: dict[str, Any]) -> None:
        """A checkpoint of epoch ``epoch`` is about to be written; add JSON-ready entries to ``metadata``."""

    def on_fit_end(self, trainer: Trainer, result: TrainResult) -> None:
        """The last epoch is done and the run's summary written."""

    def state_dict(self) -> dict[str, Any]:
        """What must survive an interruption: numbers, strings, lists, dicts and tensors only."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned, when a run resumes."""
