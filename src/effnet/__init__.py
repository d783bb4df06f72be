"""effnet: EfficientNet from architecture to a compressed, measured, deployable classifier.

>>> import effnet
>>> model = effnet.create_model("efficientnet_b0", num_classes=10)
"""

from effnet.errors import EffnetError
from effnet.factory import create_model, list_models, save_model
from effnet.models.config import EfficientNetConfig, StageSpec, get_config
from effnet.models.efficientnet import EfficientNet
from effnet.models.scaling import custom_config, resolve_stages, scaled_config
from effnet.weights.specs import Preprocessing, WeightSpec, list_weights

__version__ = "0.1.0"

_LAZY = {
    "fit": ("effnet.training.engine", "fit"),
    "train": ("effnet.training.engine", "train"),
    "Callback": ("effnet.training.callbacks", "Callback"),
    "Task": ("effnet.training.tasks", "Task"),
    "Trainer": ("effnet.training.engine", "Trainer"),
    "TrainConfig": ("effnet.training.config", "TrainConfig"),
    "TrainResult": ("effnet.training.engine", "TrainResult"),
    "evaluate_checkpoint": ("effnet.training.eval_checkpoint", "evaluate_checkpoint"),
}


def __getattr__(name: str):  # noqa: ANN202 - lazy imports keep `import effnet` light
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'effnet' has no attribute {name!r}")


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
