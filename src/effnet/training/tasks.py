"""Tasks: what the engine optimises. A task owns the loss of one batch.

Classification (cross-entropy with label smoothing, and soft targets from mixup/cutmix) is the
task of ``effnet train``. Distillation is another task: it computes the teacher's logits on the
same (possibly mixed) batch and mixes a KL term into the loss, without the engine knowing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from effnet.training.engine import Trainer

__all__ = ["Batch", "ClassificationTask", "Task"]


@dataclass
class Batch:
    """One training batch as the task sees it, on the training device."""

    images: torch.Tensor  # after mixup/cutmix when those are on
    targets: torch.Tensor  # the integer labels (before mixing)
    soft_targets: torch.Tensor | None = None  # class probabilities when the batch was mixed
    indices: torch.Tensor | None = None  # each image's position in ``trainer.data.train`` (on the CPU)


class Task:
    """Computes the loss of one batch; subclasses override :meth:`loss`."""

    def setup(self, trainer: Trainer) -> None:
        """Called when a model is installed (``trainer.model``, on ``trainer.device``): once the data is
        loaded, and again after :meth:`Trainer.replace_model`. The model's optimizer is built after
        this call, so parameters the task creates here for the model can reach it (:meth:`parameters`)."""

    def parameters(self) -> list[nn.Parameter]:
        """Trainable parameters the task owns besides the model's (e.g. distillation adapters).

        The engine trains them with the model, at the head's learning rate; keep their values in
        :meth:`state_dict` so that ``resume`` restores them.
        """
        return []

    def loss(self, trainer: Trainer, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, logits)`` of ``model`` on ``batch``; runs under the recipe's autocast."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class ClassificationTask(Task):
    """Cross-entropy against the labels (or the mixed soft targets), with label smoothing.

    >>> task = ClassificationTask(label_smoothing=0.1)
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def loss(self, trainer: Trainer, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(batch.images)
        target = batch.soft_targets if batch.soft_targets is not None else batch.targets
        return self.criterion(logits.float(), target), logits
