"""Baseline networks for comparison: torchvision's ResNet, MobileNetV3 and ShuffleNetV2.

Users choosing a classifier compare EfficientNet against ResNet (He et al., 2016,
https://arxiv.org/abs/1512.03385) and other lightweight networks (MobileNetV3, Howard et al.,
2019, https://arxiv.org/abs/1905.02244; ShuffleNetV2, Ma et al., 2018,
https://arxiv.org/abs/1807.11164). torchvision's implementations are used as they are; effnet
adds the same interface as its own models (``classifier_name``, ``reset_classifier``,
``pretrained_meta``) so training, saving and prediction treat them alike.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from effnet.models.structure import ModelStructure


@dataclass(frozen=True)
class Baseline:
    """A torchvision network, named rather than imported, so listing the names costs no torch import."""

    builder: str  # the builder function in torchvision.models
    weights: str  # torchvision's weights enum in torchvision.models; its DEFAULT entry is effnet's "imagenet"
    classifier: str  # dotted name of the final nn.Linear
    stem: str  # dotted name of the first convolution
    resolution: int = 224

    def build(self) -> nn.Module:
        """A freshly initialised torchvision network (no weights)."""
        import torchvision

        return getattr(torchvision.models, self.builder)()

    def weights_enum(self) -> Any:
        import torchvision

        return getattr(torchvision.models, self.weights)


BASELINES: dict[str, Baseline] = {
    "resnet18": Baseline("resnet18", "ResNet18_Weights", "fc", "conv1"),
    "resnet50": Baseline("resnet50", "ResNet50_Weights", "fc", "conv1"),
    "mobilenet_v3_small": Baseline("mobilenet_v3_small", "MobileNet_V3_Small_Weights", "classifier.3", "features.0.0"),
    "mobilenet_v3_large": Baseline("mobilenet_v3_large", "MobileNet_V3_Large_Weights", "classifier.3", "features.0.0"),
    "shufflenet_v2_x1_0": Baseline("shufflenet_v2_x1_0", "ShuffleNet_V2_X1_0_Weights", "fc", "conv1.0"),
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

    def structure(self) -> ModelStructure:
        """Stem, classifier, stages and channel groups; groups are traced from the module's graph.

        A stage is a run of consecutive residual blocks with the same output stride.
        """
        import torch

        from effnet.models.structure import ModelStructure, StageInfo, trace_channel_groups

        blocks = [
            name
            for name, module in self.named_modules()  # type: ignore[attr-defined]
            if type(module).__name__ in _BLOCK_TYPES and name.count(".") <= 1
        ]
        device = next(self.parameters()).device  # type: ignore[attr-defined]
        example = torch.zeros(1, 3, 64, 64, device=device)
        strides = _output_strides(self, blocks, example)  # type: ignore[arg-type]
        stages: list[StageInfo] = []
        for name in blocks:
            stride, width = strides[name]
            if stages and stages[-1].stride == stride:
                last = stages[-1]
                stages[-1] = StageInfo(last.index, last.name, (*last.blocks, name), stride, width)
            else:
                stages.append(StageInfo(len(stages), name.rpartition(".")[0] or name, (name,), stride, width))
        counts: dict[str, int] = {}
        for name in blocks:
            counts[name.rpartition(".")[0]] = counts.get(name.rpartition(".")[0], 0) + 1
        # A stage is named by its module when it is one (ResNet's layer1), else by its first block.
        stages = [
            StageInfo(s.index, s.name if counts.get(s.name) == len(s.blocks) else s.blocks[0], *astuple(s)[2:])
            for s in stages
        ]
        return ModelStructure(
            stem=BASELINES[self.baseline_name].stem,
            classifier=self.classifier_name,
            stages=tuple(stages),
            groups=trace_channel_groups(self, example),  # type: ignore[arg-type]
        )

    def arch_dict(self) -> dict[str, Any]:
        return {"family": "torchvision", "name": self.baseline_name, "num_classes": self.num_classes}


# torchvision's residual block classes (ResNet, MobileNetV3 and ShuffleNetV2).
_BLOCK_TYPES = {"BasicBlock", "Bottleneck", "InvertedResidual"}


def _output_strides(model: nn.Module, names: list[str], example: torch.Tensor) -> dict[str, tuple[int, int]]:
    """(stride, channels) of each named module's output, from one forward pass."""
    found: dict[str, tuple[int, int]] = {}
    hooks = [
        model.get_submodule(name).register_forward_hook(
            lambda _m, _i, out, name=name: found.__setitem__(
                name, (example.shape[-1] // out.shape[-1], int(out.shape[1]))
            )
        )
        for name in names
    ]
    from effnet.models.summary import forward_once

    forward_once(model, example, hooks)
    return found


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
