"""Training: the engine (:func:`fit`, :func:`train`), its tasks (classification, distillation) and callbacks,
recipes and evaluation.

Names are imported on first use, so ``effnet.training.config`` (the recipe) stays light to import.
"""

from __future__ import annotations

import importlib
from typing import Any

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


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'effnet.training' has no attribute {name!r}")
