"""Training: the engine (:func:`fit`, :func:`train`), its tasks (classification, distillation) and callbacks,
recipes and evaluation.

Names are imported on first use, so ``effnet.training.config`` (the recipe) stays light to import.
"""

from __future__ import annotations

from effnet._lazy import lazy_exports

_WHERE = {
    "Batch": "effnet.training.tasks",
    "Callback": "effnet.training.callbacks",
    "ClassificationTask": "effnet.training.tasks",
    "DistillationTask": "effnet.training.distill",
    "NonFiniteLoss": "effnet.training.engine",
    "Task": "effnet.training.tasks",
    "TrainConfig": "effnet.training.config",
    "TrainResult": "effnet.training.engine",
    "Trainer": "effnet.training.engine",
    "fit": "effnet.training.engine",
    "train": "effnet.training.engine",
}

__all__ = sorted(_WHERE)


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
