"""effnet: EfficientNet from architecture to a compressed, measured, deployable classifier.

>>> import effnet
>>> model = effnet.create_model("efficientnet_b0", num_classes=10)
"""

from effnet.errors import EffnetError
from effnet.factory import create_model, list_models
from effnet.models.config import EfficientNetConfig, StageSpec, get_config
from effnet.models.efficientnet import EfficientNet
from effnet.models.scaling import custom_config, resolve_stages, scaled_config
from effnet.weights.specs import Preprocessing, WeightSpec, list_weights

__version__ = "0.1.0"

_LAZY = {
    "train": ("effnet.training.engine", "train"),
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
    "EffnetError",
    "EfficientNet",
    "EfficientNetConfig",
    "Preprocessing",
    "StageSpec",
    "TrainConfig",
    "TrainResult",
    "WeightSpec",
    "__version__",
    "create_model",
    "custom_config",
    "evaluate_checkpoint",
    "get_config",
    "list_models",
    "list_weights",
    "resolve_stages",
    "scaled_config",
    "train",
]
