"""effnet: EfficientNet from architecture to a compressed, measured, deployable classifier.

>>> import effnet
>>> model = effnet.create_model("efficientnet_b0", num_classes=10)
"""

from effnet.errors import EffnetError

__version__ = "0.1.0"

# Everything else is imported on first use: most of it imports PyTorch (seconds), which
# `effnet --help`, `effnet list` and `import effnet` alone should not pay for.
_LAZY = {
    "Callback": "effnet.training.callbacks",
    "EfficientNet": "effnet.models.efficientnet",
    "EfficientNetConfig": "effnet.models.config",
    "Preprocessing": "effnet.weights.specs",
    "StageSpec": "effnet.models.config",
    "Task": "effnet.training.tasks",
    "TrainConfig": "effnet.training.config",
    "TrainResult": "effnet.training.engine",
    "Trainer": "effnet.training.engine",
    "WeightSpec": "effnet.weights.specs",
    "create_model": "effnet.factory",
    "custom_config": "effnet.models.scaling",
    "evaluate_checkpoint": "effnet.training.eval_checkpoint",
    "fit": "effnet.training.engine",
    "get_config": "effnet.models.config",
    "list_models": "effnet.factory",
    "list_weights": "effnet.weights.specs",
    "resolve_stages": "effnet.models.scaling",
    "save_model": "effnet.factory",
    "scaled_config": "effnet.models.scaling",
    "train": "effnet.training.engine",
}


def __getattr__(name: str):  # noqa: ANN202 - module-level lazy attributes (PEP 562)
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'effnet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Callback",
    "EffnetError",
    "EfficientNet",
    "EfficientNetConfig",
    "Preprocessing",
    "StageSpec",
    "TrainConfig",
    "Task",
    "TrainResult",
    "Trainer",
    "WeightSpec",
    "__version__",
    "create_model",
    "custom_config",
    "evaluate_checkpoint",
    "fit",
    "get_config",
    "list_models",
    "list_weights",
    "save_model",
    "resolve_stages",
    "scaled_config",
    "train",
]
