"""Baseline networks for comparison: torchvision's ResNet, MobileNetV3 and ShuffleNetV2.

Users choosing a classifier compare EfficientNet against ResNet (He et al., 2016,
https://arxiv.org/abs/1512.03385) and other lightweight networks (MobileNetV3, Howard et al.,
2019, https://arxiv.org/abs/1905.02244; ShuffleNetV2, Ma et al., 2018,
https://arxiv.org/abs/1807.11164). torchvision's implementations are used as they are; effnet
adds the same interface as its own models (``classifier_name``, ``reset_classifier``,
``pretrained_meta``) so training, saving and prediction treat them alike.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torchvision
from torch import nn

from effnet.errors import EffnetError
from effnet.weights.specs import Preprocessing, WeightSpec, imagenet_categories, recorded_classes_and_preprocessing


@dataclass(frozen=True)
class Baseline:
    builder: Callable[..., nn.Module]
    weights_enum: Any  # torchvision's weights enum; its DEFAULT entry is effnet's "imagenet"
    classifier: str  # dotted name of the final nn.Linear
    resolution: int = 224


BASELINES: dict[str, Baseline] = {
    "resnet18": Baseline(torchvision.models.resnet18, torchvision.models.ResNet18_Weights, "fc"),
    "resnet50": Baseline(torchvision.models.resnet50, torchvision.models.ResNet50_Weights, "fc"),
    "mobilenet_v3_small": Baseline(
        torchvision.models.mobilenet_v3_small, torchvision.models.MobileNet_V3_Small_Weights, "classifier.3"
    ),
    "mobilenet_v3_large": Baseline(
        torchvision.models.mobilenet_v3_large, torchvision.models.MobileNet_V3_Large_Weights, "classifier.3"
    ),
    "shufflenet_v2_x1_0": Baseline(
        torchvision.models.shufflenet_v2_x1_0, torchvision.models.ShuffleNet_V2_X1_0_Weights, "fc"
    ),
}


def baseline_weight_spec(name: str) -> WeightSpec:
    """effnet's view of torchvision's default ImageNet weights for a baseline (from its public metadata)."""
    entry = BASELINES[name].weights_enum.DEFAULT
    transform = entry.transforms()
    file_name = entry.url.rsplit("/", 1)[-1]
    return WeightSpec(
        arch=name,
        tag="tv_in1k",
        source_format="torchvision",
        preprocessing=Preprocessing(
            input_size=int(transform.crop_size[0]),
            resize_size=int(transform.resize_size[0]),
            interpolation=str(transform.interpolation.value),
            mean=tuple(transform.mean),
            std=tuple(transform.std),
        ),
        url=entry.url,
        sha256=file_name.rsplit("-", 1)[-1].split(".")[0],
        file_name=file_name,
        top1=entry.meta["_metrics"]["ImageNet-1K"]["acc@1"],
        top1_source="torchvision model documentation",
    )


class _BaselineMixin:
    """What effnet's engine expects of every model, grafted onto a torchvision network."""

    classifier_name: str
    baseline_name: str

    @property
    def num_classes(self) -> int:
        return self.get_submodule(self.classifier_name).out_features  # type: ignore[attr-defined]

    def reset_classifier(self, num_classes: int) -> None:
        old = self.get_submodule(self.classifier_name)  # type: ignore[attr-defined]
        parent_name, _, leaf = self.classifier_name.rpartition(".")
        parent = self.get_submodule(parent_name) if parent_name else self  # type: ignore[attr-defined]
        setattr(parent, leaf, nn.Linear(old.in_features, num_classes))

    def arch_dict(self) -> dict[str, Any]:
        return {"family": "torchvision", "name": self.baseline_name, "num_classes": self.num_classes}


def create_baseline(
    name: str,
    weights: str | os.PathLike[str] | None = None,
    num_classes: int | None = None,
    drop_rate: float | None = None,
) -> nn.Module:
    """A torchvision baseline with effnet's interface; ``weights`` is ``imagenet`` or a path."""
    from effnet.weights.hub import fetch
    from effnet.weights.io import read_checkpoint

    spec = BASELINES[name]
    model = spec.builder()
    model.__class__ = type(f"Effnet{type(model).__name__}", (_BaselineMixin, type(model)), {})
    model.classifier_name = spec.classifier
    model.baseline_name = name
    meta: dict[str, Any] = {"preprocessing": Preprocessing.default_for(spec.resolution).to_dict()}
    if weights is not None:
        text = os.fspath(weights)
        if text in ("imagenet", "default", "pretrained", "tv_in1k"):
            wspec = baseline_weight_spec(name)
            ckpt = read_checkpoint(fetch(wspec))
            meta = {
                "weights": wspec.name,
                "preprocessing": wspec.preprocessing.to_dict(),
                "classes": list(imagenet_categories()),
            }
        else:
            ckpt = read_checkpoint(text)
            meta.update(recorded_classes_and_preprocessing(ckpt.metadata, text))
            meta["weights"] = text
            arch = ckpt.metadata.get("arch")
            if isinstance(arch, dict) and arch.get("name") not in (None, name):
                raise EffnetError(f"{text} holds weights for {arch.get('name')}, not {name}")
        tensors = ckpt.tensors
        head = f"{spec.classifier}.weight"
        if head not in tensors or tensors[head].dim() != 2:
            raise EffnetError(f"{ckpt.path} is not a {name} checkpoint (no {head} matrix)")
        if tensors[head].shape[0] != model.num_classes:
            model.reset_classifier(int(tensors[head].shape[0]))
        try:
            model.load_state_dict(tensors)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[1:2] or [str(exc)[:120]]
            raise EffnetError(f"{ckpt.path} does not match {name}: {first[0].strip()}") from None
    if drop_rate is not None:
        for module in model.modules():
            if isinstance(module, nn.Dropout):
                module.p = drop_rate
    if num_classes is not None and num_classes != model.num_classes:
        model.reset_classifier(num_classes)
        meta.pop("classes", None)
    classes = meta.get("classes")
    if not classes or len(classes) != model.num_classes:
        meta["classes"] = [str(i) for i in range(model.num_classes)]
    meta["arch"] = name
    model.pretrained_meta = meta
    return model


def is_baseline(name: str | None) -> bool:
    return isinstance(name, str) and name.strip().lower() in BASELINES
