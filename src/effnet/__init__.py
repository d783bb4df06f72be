"""effnet: EfficientNet from architecture to a compressed, measured, deployable classifier.

>>> import effnet
>>> model = effnet.create_model("efficientnet_b0", num_classes=10)
"""

from effnet.errors import EffnetError
from effnet.models.config import EfficientNetConfig, StageSpec, get_config
from effnet.models.efficientnet import EfficientNet
from effnet.models.factory import create_model, list_models
from effnet.models.scaling import custom_config, resolve_stages, scaled_config
from effnet.weights.specs import Preprocessing, WeightSpec, list_weights

__version__ = "0.1.0"

__all__ = [
    "EffnetError",
    "EfficientNet",
    "EfficientNetConfig",
    "Preprocessing",
    "StageSpec",
    "WeightSpec",
    "__version__",
    "create_model",
    "custom_config",
    "get_config",
    "list_models",
    "list_weights",
    "resolve_stages",
    "scaled_config",
]
