"""Baseline networks for comparison: torchvision's ResNet, MobileNetV3 and ShuffleNetV2.

Users choosing a classifier compare EfficientNet against ResNet (He et al., 2016,
https://arxiv.org/abs/1512.03385) and other lightweight networks (MobileNetV3, Howard et al.,
2019, https://arxiv.org/abs/1905.02244; ShuffleNetV2, Ma et al., 2018,
https://arxiv.org/abs/1807.11164). torchvision's implementations are used as they are; effnet
adds the same interface as its own models (``classifier_name``, ``reset_classifier``,
``pretrained_meta``) so training, saving and prediction treat them alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class Baseline:
    """A torchvision network, named rather than imported, so listing the names costs no torch import."""

    builder: str  # the builder function in torchvision.models
    weights: str  # torchvision's weights enum in torchvision.models; its DEFAULT entry is effnet's "imagenet"
    classifier: str  # dotted name of the final nn.Linear
    resolution: int = 224

    def build(self) -> nn.Module:
        """A freshly initialised torchvision network (no weights)."""
        import torchvision

        return getattr(torchvision.models, self.builder)()

    def weights_enum(self) -> Any:
        import torchvision

        return getattr(torchvision.models, self.weights)


BASELINES: dict[str, Baseline] = {
    "resnet18": Baseline("resnet18", "ResNet18_Weights", "fc"),
    "resnet50": Baseline("resnet50", "ResNet50_Weights", "fc"),
    "mobilenet_v3_small": Baseline("mobilenet_v3_small", "MobileNet_V3_Small_Weights", "classifier.3"),
    "mobilenet_v3_large": Baseline("mobilenet_v3_large", "MobileNet_V3_Large_Weights", "classifier.3"),
    "shufflenet_v2_x1_0": Baseline("shufflenet_v2_x1_0", "ShuffleNet_V2_X1_0_Weights", "fc"),
}


class _BaselineMixin:
    """What effnet's engine expects of every model, grafted onto a torchvision network."""

    classifier_name: str
    baseline_name: str

    @property
    def num_classes(self) -> int:
        return self.get_submodule(self.classifier_name).out_features  # type: ignore[attr-defined]

    def reset_classifier(self, num_classes: int) -> None:
        from torch import nn

        old = self.get_submodule(self.classifier_name)  # type: ignore[attr-defined]
        parent_name, _, leaf = self.classifier_name.rpartition(".")
        parent = self.get_submodule(parent_name) if parent_name else self  # type: ignore[attr-defined]
        setattr(parent, leaf, nn.Linear(old.in_features, num_classes))

    def arch_dict(self) -> dict[str, Any]:
        return {"family": "torchvision", "name": self.baseline_name, "num_classes": self.num_classes}


def build_baseline(name: str) -> nn.Module:
    """A freshly initialised torchvision baseline with effnet's model interface (no weights)."""
    spec = BASELINES[name]
    model = spec.build()
    model.__class__ = type(f"Effnet{type(model).__name__}", (_BaselineMixin, type(model)), {})
    model.classifier_name = spec.classifier
    model.baseline_name = name
    return model


def is_baseline(name: str | None) -> bool:
    return isinstance(name, str) and name.strip().lower() in BASELINES
