"""Reference implementations for ``effnet bench --reference``: torchvision's or timm's EfficientNet.

The reference is built with the library's own code and given *effnet's* weights, mapped tensor
by tensor through the declarative key maps in :mod:`effnet.weights.formats` (shapes checked),
so the two compute the same function and differ only in how the code runs it. Timing then
compares implementations, and accuracy on ``--data`` agrees.
"""

from __future__ import annotations

import importlib

from torch import nn

from effnet.errors import EffnetError
from effnet.models.config import MODEL_CONFIGS
from effnet.weights.formats import FORMATS, key_map

REFERENCES = ("torchvision", "timm")


def reference_name(library: str, model: nn.Module) -> str:
    """The reference library's name for ``model``'s architecture, e.g. ``tf_efficientnet_lite0`` in timm."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "padding"):
        raise EffnetError(f"--reference {library} needs an effnet EfficientNet, not {type(model).__name__}")
    if getattr(model, "features_only", False):
        raise EffnetError(f"--reference {library} needs a classifier, not a features_only backbone")
    name = config.name
    if MODEL_CONFIGS.get(name) is None or _shape_differs(config, MODEL_CONFIGS[name]):
        raise EffnetError(f"{library} has no model equal to the custom architecture {name!r}")
    if library == "timm":
        return f"tf_{name}" if config.padding == "same" else name
    if "lite" in name:
        raise EffnetError(f"torchvision has no {name}; use --reference timm")
    return name


def reference_model(library: str, model: nn.Module) -> nn.Module:
    """``model``'s architecture built by ``library`` ("torchvision" or "timm"), holding ``model``'s weights."""
    if library not in REFERENCES:
        raise EffnetError(f"unknown reference {library!r}; choose {' or '.join(REFERENCES)}")
    name = reference_name(library, model)
    config = model.config
    try:
        lib = importlib.import_module(library)
    except ImportError:
        raise EffnetError(f"--reference {library} needs {library} installed (pip install {library})") from None
    if library == "timm":
        if name not in lib.list_models(name):
            raise EffnetError(f"timm {lib.__version__} has no model {name}")
        reference = lib.create_model(name, pretrained=False, num_classes=config.num_classes, in_chans=config.in_chans)
    else:
        if config.in_chans != 3:
            raise EffnetError(f"torchvision's {name} takes 3 input channels, this model {config.in_chans}")
        reference = getattr(lib.models, name)(weights=None, num_classes=config.num_classes)
    _copy_weights(model, reference, library, name)
    return reference.eval()


def _copy_weights(model: nn.Module, reference: nn.Module, library: str, name: str) -> None:
    ours = model.state_dict()
    theirs = reference.state_dict()
    mapping = key_map(model.config, FORMATS[library], list(ours))
    for key, target in mapping.items():
        if target not in theirs or theirs[target].shape != ours[key].shape:
            found = list(theirs[target].shape) if target in theirs else "nothing"
            raise EffnetError(
                f"{library} {name} does not match effnet's layer {key} (expected {target} "
                f"{list(ours[key].shape)}, found {found})"
            )
    unmapped = set(theirs) - set(mapping.values())
    if unmapped:
        raise EffnetError(f"{library} {name} has layers effnet does not, such as {sorted(unmapped)[0]}")
    reference.load_state_dict({target: ours[key] for key, target in mapping.items()})


def _shape_differs(config: object, registered: object) -> bool:
    fields = ("width_mult", "depth_mult", "se_ratio", "fixed_stem_head", "stem_channels", "head_channels", "stages")
    return any(getattr(config, f) != getattr(registered, f) for f in fields)
