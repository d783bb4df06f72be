"""``create_model`` and ``list_models``: the front door of the model zoo.

This module sits above both :mod:`effnet.models` (architectures) and :mod:`effnet.weights`
(checkpoints and their formats): it joins the two, so neither package imports the other's
callers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effnet.errors import EffnetError
from effnet.models.baselines import BASELINES, build_baseline, is_baseline
from effnet.models.config import MODEL_CONFIGS, EfficientNetConfig, get_config, is_scaled_name, normalize_name
from effnet.models.efficientnet import EfficientNet
from effnet.weights.formats import Converted, convert
from effnet.weights.io import EFFNET_FORMAT, read_checkpoint, read_metadata
from effnet.weights.specs import (
    BASELINE_WEIGHT_TAG,
    Preprocessing,
    baseline_weight_spec,
    find_weight_spec,
    get_weight_spec,
    imagenet_categories,
    recorded_classes_and_preprocessing,
)

__all__ = ["adapt_input_channels", "create_model", "list_models", "load_model", "save_model", "split_model_argument"]


def list_models(pattern: str | None = None, baselines: bool = False) -> list[str]:
    """Registered model names, optionally filtered by a substring or ``fnmatch`` pattern.

    ``baselines=True`` adds the torchvision comparison networks (resnet18, resnet50, ...).

    >>> list_models("lite")[:2]
    ['efficientnet_lite0', 'efficientnet_lite1']
    """
    import fnmatch

    names = list(MODEL_CONFIGS) + (list(BASELINES) if baselines else [])
    if not pattern:
        return names
    if any(ch in pattern for ch in "*?["):
        return [n for n in names if fnmatch.fnmatch(n, pattern)]
    return [n for n in names if pattern in n]


def create_model(
    name: str | EfficientNetConfig | None = None,
    weights: str | os.PathLike[str] | None = None,
    num_classes: int | None = None,
    in_chans: int = 3,
    drop_rate: float | None = None,
    drop_path_rate: float | None = None,
    features_only: bool = False,
) -> torch.nn.Module:
    """Build an EfficientNet (or a baseline such as ``resnet18``), optionally with pretrained or saved weights.

    Args:
        name: a registered name (``efficientnet_b0`` ... ``efficientnet_lite4``) or a config
            from :func:`effnet.scaled_config`; may be None when ``weights`` is an effnet
            checkpoint or the architecture can be read off the checkpoint.
        weights: ``"imagenet"`` (the default weights of ``name``), a tag such as ``"tf_in1k"``,
            or a path to a torchvision, timm, efficientnet_pytorch, Keras (``.keras``,
            ``.weights.h5``, ``.h5``) or effnet checkpoint; the format is detected.
        num_classes: a new class count; with weights of another count, the classifier is
            replaced (freshly initialised) and everything else is kept. Required (or
            ``features_only``) for weights saved without a classifier.
        in_chans: input channels; pretrained RGB stem weights are adapted.
        drop_rate, drop_path_rate: dropout before the classifier and stochastic depth.
        features_only: return the feature maps at strides 2, 4, 8, 16, 32 instead of logits.

    >>> model = create_model("efficientnet_b0", num_classes=10)
    >>> model(torch.zeros(2, 3, 224, 224)).shape
    torch.Size([2, 10])
    """
    if num_classes is not None and num_classes < 1:
        raise EffnetError(f"num_classes must be at least 1, got {num_classes}")
    if in_chans < 1:
        raise EffnetError(f"in_chans must be at least 1, got {in_chans}")
    recorded_meta = read_metadata(weights) if weights is not None else {}
    if recorded_meta.get("passes"):
        return _load_transformed(name, weights, recorded_meta, num_classes, in_chans, features_only)
    if name is None and weights is not None:
        recorded = recorded_meta.get("arch")
        if isinstance(recorded, dict) and recorded.get("family") == "torchvision":
            name = str(recorded.get("name"))
    if isinstance(name, str) and is_baseline(name):
        if in_chans != 3 or features_only or drop_path_rate:
            raise EffnetError(
                f"{name} is a torchvision baseline: in_chans, features_only and drop_path are not supported"
            )
        return _create_baseline(name.strip().lower(), weights, num_classes, drop_rate)
    config = name if isinstance(name, EfficientNetConfig) else (get_config(name) if name else None)

    converted: Converted | None = None
    meta: dict[str, Any] = {}
    if weights is not None:
        config, converted, meta = _resolve_weights(
            config, weights, allow_headless=num_classes is not None or features_only
        )
    elif config is None:
        raise EffnetError("create_model needs a model name, a config, or weights to read the architecture from")

    overrides: dict[str, Any] = {"in_chans": in_chans}
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    if drop_rate is not None:
        overrides["dropout"] = drop_rate
    if drop_path_rate is not None:
        overrides["drop_path"] = drop_path_rate
    config = config.replace(**overrides)
    model = EfficientNet(config, features_only=features_only)

    if converted is not None:
        state = dict(converted.state_dict)
        if converted.in_chans != in_chans:
            state["stem.conv.weight"] = adapt_input_channels(state["stem.conv.weight"], in_chans)
        new_head = converted.num_classes != config.num_classes
        if new_head or features_only:
            state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        if features_only:
            state = {k: v for k, v in state.items() if not k.startswith("head.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        allowed_missing = {"classifier.weight", "classifier.bias"} if new_head else set()
        if unexpected or set(missing) - allowed_missing:
            raise EffnetError(f"weights do not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
        if new_head:
            meta["classes"] = None  # the old class names no longer apply
    model.pretrained_meta = _finish_meta(meta, config)
    return model


def _create_baseline(
    name: str,
    weights: str | os.PathLike[str] | None = None,
    num_classes: int | None = None,
    drop_rate: float | None = None,
) -> nn.Module:
    """A torchvision baseline with effnet's interface; ``weights`` is ``imagenet`` or a path."""
    from effnet.weights.hub import fetch

    spec = BASELINES[name]
    model = build_baseline(name)
    meta: dict[str, Any] = {"preprocessing": Preprocessing.default_for(spec.resolution).to_dict()}
    if weights is not None:
        text = os.fspath(weights)
        if text in ("imagenet", "default", "pretrained", BASELINE_WEIGHT_TAG):
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


def _resolve_weights(
    config: EfficientNetConfig | None, weights: str | os.PathLike[str], allow_headless: bool = False
) -> tuple[EfficientNetConfig, Converted, dict[str, Any]]:
    """Turn ``weights`` (a tag or a path) into converted tensors and their metadata."""
    text = os.fspath(weights)
    spec = find_weight_spec(config.name, text) if config is not None else None
    meta: dict[str, Any] = {}
    if spec is not None:
        from effnet.weights.hub import fetch

        path = fetch(spec)
        meta = {"weights": spec.name, "preprocessing": spec.preprocessing.to_dict(), "top1": spec.top1}
        if spec.categories == "imagenet-1k":
            meta["classes"] = list(imagenet_categories())
    elif Path(text).exists():
        path = Path(text)
    elif _looks_like_path(text):
        raise EffnetError(f"weights file {text} does not exist")
    elif config is not None:
        spec = get_weight_spec(config.name, text)  # raises, listing the tags that exist
        raise EffnetError(f"weights {spec.name} could not be resolved")
    else:
        raise EffnetError(f"weights={text!r} names registered weights; give the model name as well")
    ckpt = read_checkpoint(path)
    new_config, converted = convert(ckpt, config, allow_headless)
    if not meta:
        meta = {"weights": str(path)}
        meta.update(recorded_classes_and_preprocessing(converted.metadata, path))
        if "classes" not in meta and converted.num_classes == 1000:
            meta["classes"] = list(imagenet_categories())
    meta["source_format"] = converted.source_format
    return new_config, converted, meta


def _load_transformed(
    name: str | EfficientNetConfig | None,
    weights: str | os.PathLike[str],
    meta: dict[str, Any],
    num_classes: int | None,
    in_chans: int,
    features_only: bool,
) -> nn.Module:
    """A model saved after structural passes (batch norms folded, padding frozen): rebuild, then load.

    The architecture is built from the file's record, the passes it lists are re-applied to give it
    the saved structure, and the tensors must then fit exactly.
    """
    from effnet.compress import rebuild_structure

    path = Path(os.fspath(weights))
    arch = meta.get("arch")
    if isinstance(arch, dict) and arch.get("family") == "torchvision":  # a baseline
        if not is_baseline(arch.get("name")) or not isinstance(arch.get("num_classes"), int):
            raise EffnetError(f"{path} records an unknown baseline {arch.get('name')!r}")
        with torch.device("meta"):
            model = build_baseline(str(arch["name"]))
            if model.num_classes != arch["num_classes"]:
                model.reset_classifier(max(1, arch["num_classes"]))
        recorded_name, recorded_classes = str(arch["name"]), model.num_classes
        recorded_in_chans, resolution = 3, BASELINES[recorded_name].resolution
    else:
        try:
            config = EfficientNetConfig.from_dict(arch)
        except EffnetError as exc:
            raise EffnetError(f"{path} records an invalid architecture: {exc}") from None
        with torch.device("meta"):
            model = EfficientNet(config)
        recorded_name, recorded_classes = config.name, config.num_classes
        recorded_in_chans, resolution = config.in_chans, config.resolution
    if isinstance(name, str) and name.strip().lower() != recorded_name and normalize_name(name) != recorded_name:
        raise EffnetError(f"{path} holds weights for {recorded_name}, not {name}")
    if num_classes not in (None, recorded_classes) or in_chans != recorded_in_chans or features_only:
        passes = ", ".join(str(p.get("pass")) for p in meta["passes"] if isinstance(p, dict))
        raise EffnetError(
            f"{path} went through {passes}; it loads only as saved (no new head, input channels or features_only)"
        )
    ckpt = read_checkpoint(path)
    model = rebuild_structure(model, meta["passes"], source=str(path)).to_empty(device="cpu")
    try:
        model.load_state_dict(ckpt.tensors, strict=True, assign=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[1:2] or [str(exc)[:120]]
        raise EffnetError(f"{path} does not match the structure it records: {first[0].strip()}") from None
    model.eval()
    record = {"weights": str(path), "source_format": EFFNET_FORMAT}
    record.update(recorded_classes_and_preprocessing(ckpt.metadata, path))
    record.setdefault("preprocessing", Preprocessing.default_for(resolution).to_dict())
    classes = record.get("classes")
    if not classes or len(classes) != recorded_classes:
        record["classes"] = [str(i) for i in range(recorded_classes)]
    record["arch"] = recorded_name
    model.pretrained_meta = record
    return model


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "." in Path(text).name


def _finish_meta(meta: dict[str, Any], config: EfficientNetConfig) -> dict[str, Any]:
    out = dict(meta)
    if "preprocessing" not in out:
        out["preprocessing"] = Preprocessing.default_for(config.resolution).to_dict()
    classes = out.get("classes")
    if not classes or len(classes) != config.num_classes:
        out["classes"] = [str(i) for i in range(config.num_classes)]
    out["arch"] = config.name
    return out


def adapt_input_channels(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Adapt RGB stem weights to ``in_chans`` inputs, keeping the response to gray images.

    One channel sums the RGB filters (a gray image then gives the same activations as its RGB
    copy); more channels tile RGB and rescale so activations keep their magnitude.
    """
    if in_chans == weight.shape[1]:
        return weight
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_chans // weight.shape[1])
    tiled = weight.repeat(1, repeats, 1, 1)[:, :in_chans]
    return tiled * (weight.shape[1] / in_chans)


def save_model(
    model: nn.Module, path: str | os.PathLike[str], metadata: dict[str, Any] | None = None, sparse: bool = False
) -> Path:
    """Write ``model`` as an effnet checkpoint (safetensors + JSON metadata) that rebuilds itself.

    The metadata records the architecture block by block, the class names and preprocessing
    the model carries (``model.pretrained_meta``), plus ``metadata``; ``create_model(weights=path)``
    and every command that takes ``--weights`` load it back. No Python objects are pickled.
    ``sparse=True`` stores mostly-zero tensors (an unstructured-pruned model) as a bit mask plus
    their non-zero values, so the file shrinks with the sparsity.

    >>> import tempfile, effnet
    >>> model = effnet.create_model("efficientnet_lite0", num_classes=3)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = save_model(model, folder + "/lite0.safetensors")
    ...     effnet.create_model(weights=path).num_classes
    3
    """
    from effnet.weights.io import write_checkpoint

    if not hasattr(model, "arch_dict"):
        raise EffnetError(f"{type(model).__name__} is not an effnet model (create it with effnet.create_model)")
    meta = dict(getattr(model, "pretrained_meta", None) or {})
    record: dict[str, Any] = {"arch": model.arch_dict()}
    if getattr(model, "effnet_passes", None):
        record["passes"] = list(model.effnet_passes)  # structural passes, re-applied when it is loaded
    for key in ("classes", "preprocessing"):
        if meta.get(key) is not None:
            record[key] = meta[key]
    record.update(metadata or {})
    module = getattr(model, "_orig_mod", model)  # a torch.compile wrapper saves its module's names
    return write_checkpoint(path, module.state_dict(), record, sparse=sparse)


_NAMED_WEIGHTS_DEFAULT = ("imagenet", "default", "pretrained")


def split_model_argument(model: str | None, weights: str | os.PathLike[str] | None) -> tuple[str | None, str | None]:
    """The ``(name, weights)`` a command's model arguments mean; every command reads them this way.

    ``model`` is a model name, ``NAME:WEIGHTS`` (``efficientnet_b0:imagenet``) or a checkpoint path;
    ``weights`` is a weight tag or a checkpoint path. A name of None means "read the architecture
    from the checkpoint".

    >>> split_model_argument("efficientnet_b0:imagenet", None)
    ('efficientnet_b0', 'imagenet')
    >>> split_model_argument(None, "runs/x/best.safetensors")
    (None, 'runs/x/best.safetensors')
    """
    given = os.fspath(weights) if weights is not None else None
    text = (model or "").strip()
    if model is not None and not text:
        raise EffnetError("empty model argument; give a model name, NAME:WEIGHTS or a checkpoint path")
    if not text:
        return None, given
    path = Path(text)
    if path.is_file():  # a checkpoint given where a model name was expected
        if given is not None and given not in _NAMED_WEIGHTS_DEFAULT:
            raise EffnetError(f"{text} is a checkpoint and --weights {given} names other weights; give one of them")
        return None, text
    if path.is_dir():
        raise EffnetError(f"{text} is a directory, not a model name or checkpoint file")
    name, colon, tag = text.partition(":")
    if colon:
        if not (name and tag):
            raise EffnetError(f"{text!r}: expected NAME:WEIGHTS, e.g. efficientnet_b0:imagenet")
        if given is not None and given != tag:
            raise EffnetError(f"{text} already names its weights; drop --weights {given} (or the :{tag})")
        return name, tag
    if os.sep in text or "/" in text or (path.suffix and not is_scaled_name(text)):
        raise EffnetError(f"{text}: no such file (and not a model name; run 'effnet list' for the names)")
    return text, given


def load_model(model: str | None = None, weights: str | os.PathLike[str] | None = None) -> nn.Module:
    """The model a command's ``--model``/``--weights`` (or positional ``NAME[:WEIGHTS]``/path) names.

    An ONNX file is refused by :func:`effnet.weights.io.read_checkpoint` with the checkpoint it was
    exported from (``effnet predict`` and ``effnet bench`` run ONNX files themselves).

    >>> load_model("efficientnet_lite0").config.name
    'efficientnet_lite0'
    """
    name, resolved = split_model_argument(model, weights)
    if name is None and resolved is None:
        raise EffnetError("give a model name, NAME:WEIGHTS or a checkpoint path")
    return create_model(name, weights=resolved)
