"""Reading Keras EfficientNet files without Keras: ``.keras`` archives, ``.weights.h5`` and legacy HDF5.

Users of ``keras.applications.EfficientNetB0`` ... ``B7`` (Keras 3, or ``tf.keras`` in
TensorFlow 2) hold their weights in one of three containers:

- ``model.keras`` (``model.save``): a zip archive of ``config.json`` (the architecture as JSON)
  and ``model.weights.h5``, whose layers sit at ``layers/<class>_<n>/vars/<i>``;
- ``x.weights.h5`` (``model.save_weights``): that weights file on its own;
- ``x.h5``: Keras 2's HDF5 layout (``model.save`` or ``model.save_weights``; Keras 3 still writes
  it for ``model.save("x.h5")``): one group per layer, listing its ``weight_names``.

Nothing in the file is deserialised as a Keras object or run: the architecture is read as plain
JSON and the weights as numeric HDF5 datasets, following hard links only and refusing datasets
that live in other files or need an HDF5 filter plugin (a shared library HDF5 would load).

Keras's tensor layouts become PyTorch's here, so the tensors come out named
``<keras layer>.<torch parameter>`` and :mod:`effnet.weights.formats` maps those names to
effnet's like any other format's.

Keras EfficientNets take 0-255 pixels and normalise them inside the model:
``Rescaling(1/255)``, then a ``Normalization`` layer computing ``(x - mean) / sqrt(variance)``
with mean and variance stored as weights, then (only in models built with ``weights="imagenet"``
by Keras releases that fixed tensorflow/tensorflow#49930, Keras 3 included) ``Rescaling`` by
``1/sqrt(std)``. The published ImageNet weights store the ImageNet standard deviations as the
Normalization's *variance*, so without that last layer the model divides by ``sqrt(std)``
(about 0.48) instead of ``std`` (about 0.23). The reader composes whatever chain the file holds
into effnet's mean/std in 0-1 units, so effnet feeds the converted network what the Keras model
fed its first convolution.
"""

from __future__ import annotations

import io
import json
import math
import re
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from effnet.errors import EffnetError
from effnet.weights.io import Checkpoint

KERAS_FORMAT = "keras"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
# EfficientNet-B7 in float32 is about 270 MB; anything far larger is not one of these models.
_MAX_WEIGHTS_BYTES = 4 << 30
_MAX_CONFIG_BYTES = 64 << 20
_MAX_VALUES = 1 << 28  # per dataset; B7's largest layer has 2.6 million
# HDF5's own filters and h5py's built-in LZF; any other filter id makes HDF5 load a plugin library.
_BUILTIN_FILTERS = frozenset({1, 2, 3, 4, 5, 6, 32000})
_IMAGENET_STD = (0.229, 0.224, 0.225)
_RESCALING = re.compile(r"rescaling(_\d+)?")  # Keras's automatic names for Rescaling layers
_NORM_EPSILON = 1e-7  # Keras's backend epsilon: Normalization divides by max(sqrt(var), eps)

# Keras 3 names each layer's weight group after its class (snake case, numbered per class).
_CLASS_OF_GROUP = {
    "conv2d": "Conv2D",
    "depthwise_conv2d": "DepthwiseConv2D",
    "batch_normalization": "BatchNormalization",
    "dense": "Dense",
    "normalization": "Normalization",
    "rescaling": "Rescaling",
}

# Each weighted layer class: its variables in the order Keras saves them, as
# (Keras variable names, PyTorch parameter name).
_VARIABLES: dict[str, tuple[tuple[tuple[str, ...], str], ...]] = {
    "Conv2D": ((("kernel",), "weight"), (("bias",), "bias")),
    "DepthwiseConv2D": ((("kernel", "depthwise_kernel"), "weight"), (("bias",), "bias")),
    "Dense": ((("kernel",), "weight"), (("bias",), "bias")),
    "BatchNormalization": (
        (("gamma",), "weight"),
        (("beta",), "bias"),
        (("moving_mean",), "running_mean"),
        (("moving_variance",), "running_var"),
    ),
    "Normalization": ((("mean",), "mean"), (("variance",), "variance"), (("count",), "count")),
}

# Keras kernel layouts -> PyTorch's.
_LAYOUTS: dict[str, tuple[int, Callable[[torch.Tensor], torch.Tensor]]] = {
    # (kh, kw, in, out) -> (out, in, kh, kw)
    "Conv2D": (4, lambda t: t.permute(3, 2, 0, 1)),
    # (kh, kw, channels, multiplier) -> (channels * multiplier, 1, kh, kw); output c*m + j in both
    "DepthwiseConv2D": (4, lambda t: t.permute(2, 3, 0, 1).reshape(-1, 1, t.shape[0], t.shape[1])),
    # (in, out) -> (out, in)
    "Dense": (2, lambda t: t.t()),
}

# Layers before the stem that leave pixels unchanged at inference (so do Keras's Random* augmentation
# layers, which act only in training).
_PASSIVE_INPUT_LAYERS = ("InputLayer", "ZeroPadding2D")


@dataclass
class _Layer:
    """One Keras layer's weights as the file stores them."""

    name: str
    kind: str  # the Keras class name ("" when the file does not say)
    variables: list[tuple[str, np.ndarray]] = field(default_factory=list)  # (Keras name or position, value)


def is_keras_file(path: Path) -> bool:
    """Whether ``path`` is (or claims by its suffix to be) a Keras ``.keras`` or HDF5 file."""
    if path.suffix.lower() in _KERAS_SUFFIXES:
        return True
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head == _HDF5_MAGIC:
        return True
    if head[:4] == b"PK\x03\x04":  # PyTorch's own files are zip archives too; tell them apart by content
        try:
            with zipfile.ZipFile(path) as zf:
                names = set(zf.namelist())
        except (zipfile.BadZipFile, OSError, NotImplementedError, ValueError):  # damaged: not Keras's
            return False
        return "config.json" in names and "model.weights.h5" in names
    return False


def read_keras(path: str | Path) -> Checkpoint:
    """The weights of a Keras EfficientNet file as PyTorch-laid-out tensors named ``<layer>.<param>``.

    The checkpoint's ``keras_input`` metadata holds the model's own input scaling as effnet
    mean/std (0-1 pixels) and, when the file records one, its square input size.
    """
    p = Path(path)
    h5py = _import_h5py(p)
    config: dict[str, Any] | None = None
    try:
        if p.suffix.lower() == ".keras" or _starts_with(p, b"PK\x03\x04"):
            config, weights_bytes = _open_archive(p)
            source: Any = io.BytesIO(weights_bytes)
        elif _starts_with(p, _HDF5_MAGIC):
            source = str(p)
        else:
            raise EffnetError(
                f"{p} is neither a .keras archive nor an HDF5 file; it may be truncated or not a Keras file"
            )
        with h5py.File(source, "r") as fh:
            if "layers" in fh or "_layer_checkpoint_dependencies" in fh:
                layers, groups = _keras3_layers(h5py, fh, p)
            else:
                root, legacy_config = _legacy_root(h5py, fh, p)
                config = config or legacy_config
                layers, groups = _legacy_layers(h5py, root, p), None
    except EffnetError:
        raise
    except (OSError, ValueError, KeyError, IndexError, RuntimeError, TypeError, EOFError, zlib.error) as exc:
        # h5py and zipfile meet damaged bytes with any of these
        raise EffnetError(f"Keras file {p} is corrupt or truncated ({_short(exc)}); save or copy it again") from None
    return _to_checkpoint(layers, groups, config, p)


def _import_h5py(p: Path) -> Any:
    try:
        import h5py
    except ImportError:
        raise EffnetError(f"reading the Keras file {p} needs the h5py package: pip install h5py") from None
    return h5py


def _starts_with(p: Path, magic: bytes) -> bool:
    with open(p, "rb") as fh:
        return fh.read(len(magic)) == magic


def _open_archive(p: Path) -> tuple[dict[str, Any] | None, bytes]:
    """``config.json`` (parsed as plain JSON) and the bytes of ``model.weights.h5`` from a ``.keras`` zip."""
    try:
        with zipfile.ZipFile(p) as zf:
            names = set(zf.namelist())
            if "model.weights.h5" not in names:
                sharded = any(n.endswith(".weights.json") for n in names)
                what = "sharded weights, which effnet does not read" if sharded else "no model.weights.h5"
                raise EffnetError(f"{p} is a zip archive but holds {what}; save the model with model.save('x.keras')")
            config = None
            if "config.json" in names:
                info = zf.getinfo("config.json")
                if info.file_size > _MAX_CONFIG_BYTES:
                    raise EffnetError(f"{p}: its config.json is {info.file_size} bytes, far more than a model's")
                config = _parse_json(zf.read(info), p)
            info = zf.getinfo("model.weights.h5")
            if info.file_size > _MAX_WEIGHTS_BYTES:
                raise EffnetError(
                    f"{p}: its model.weights.h5 unpacks to {info.file_size} bytes, more than any EfficientNet"
                )
            return config, zf.read(info)
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise EffnetError(f"Keras file {p} is corrupt or truncated ({_short(exc)}); save or copy it again") from None


def _parse_json(raw: bytes | str, p: Path) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise EffnetError(f"{p} has an unreadable model config ({_short(exc)})") from None
    if not isinstance(data, dict):
        raise EffnetError(f"{p} has a model config that is not a JSON object")
    return data


# ---- HDF5, read defensively ----


def _child(h5py: Any, group: Any, name: str, p: Path) -> Any:
    """``group[name]``, following only a hard link inside this file."""
    if not isinstance(group, h5py.Group):
        raise EffnetError(f"{p}: {group.name!r} is not a group; the file does not have the layout Keras writes")
    link = group.get(name, getlink=True)
    if link is None:
        raise KeyError(name)
    if not isinstance(link, h5py.HardLink):
        raise EffnetError(f"{p} links {name!r} to another place or file; effnet reads only self-contained files")
    return group[name]


def _dataset(h5py: Any, group: Any, path: str, p: Path) -> np.ndarray:
    """The numbers at ``path`` below ``group``: numeric, inside this file, no plugin filters, sized sanely."""
    node = group
    for part in path.split("/"):
        if part:
            node = _child(h5py, node, part, p)
    if not isinstance(node, h5py.Dataset):
        raise EffnetError(f"{p}: {path!r} is not a dataset")
    if node.is_virtual or node.external:
        raise EffnetError(
            f"{p}: dataset {path!r} stores its data in other files; effnet reads only self-contained files"
        )
    plist = node.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        code = plist.get_filter(i)[0]
        if code not in _BUILTIN_FILTERS:
            raise EffnetError(f"{p}: dataset {path!r} needs HDF5 filter plugin {code}; effnet loads no plugins")
    if node.size > _MAX_VALUES:
        raise EffnetError(f"{p}: dataset {path!r} claims {node.size} values, far more than any EfficientNet layer")
    if node.dtype.kind not in "fiu":
        raise EffnetError(f"{p}: dataset {path!r} holds {node.dtype} values, not numbers")
    value = np.asarray(node[()])
    return np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("="))


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _text_list(attrs: Any, key: str) -> list[str]:
    value = attrs.get(key)
    if value is None:
        return []
    return [_text(v) for v in np.atleast_1d(value).tolist()] if np.size(value) else []


def _keras3_layers(h5py: Any, fh: Any, p: Path) -> tuple[list[_Layer], dict[str, int]]:
    """Weighted layers of Keras 3's layout, and how many layer groups of each class the file has."""
    if "layers" not in fh:
        raise EffnetError(
            f"{p} uses the weights layout of tf.keras 2.13-2.15, which effnet does not read; "
            "re-save it in the legacy HDF5 format with model.save('x.h5')"
        )
    group = _child(h5py, fh, "layers", p)
    entries: list[tuple[str, int, _Layer]] = []
    groups: dict[str, int] = {}
    nested = []
    for key in group:
        match = re.fullmatch(r"(.+?)(?:_(\d+))?", key)
        snake, index = match.group(1), int(match.group(2) or 0)
        groups[snake] = groups.get(snake, 0) + 1
        layer_group = _child(h5py, group, key, p)
        if "layers" in layer_group:
            nested.append(key)
        if "vars" not in layer_group:
            continue
        vars_group = _child(h5py, layer_group, "vars", p)
        positions = sorted(vars_group, key=lambda k: int(k) if k.isdigit() else -1)
        if any(not k.isdigit() for k in positions):
            raise EffnetError(f"{p}: layer group {key!r} has variables {positions[:3]}, not numbered ones")
        variables = [(k, _dataset(h5py, vars_group, k, p)) for k in positions]
        name = _text(vars_group.attrs.get("name", ""))  # recorded by recent Keras 3 releases only
        entries.append((snake, index, _Layer(name=name, kind=_CLASS_OF_GROUP.get(snake, ""), variables=variables)))
    entries.sort(key=lambda e: (e[0], e[1]))
    layers = [layer for _, _, layer in entries]
    if nested and not any(layer.name == "stem_conv" for layer in layers):
        raise _nested_error(p, nested[0])
    if any(layer.variables and not layer.name for layer in layers):
        _name_by_order(layers, p)
    return layers, groups


def _nested_error(p: Path, inner: str) -> EffnetError:
    return EffnetError(
        f"{p} holds a model nested inside another ({inner}); effnet imports a Keras EfficientNet saved on its "
        "own: save the inner model (model.get_layer(NAME).save('x.keras'))"
    )


def _legacy_root(h5py: Any, fh: Any, p: Path) -> tuple[Any, dict[str, Any] | None]:
    """The group listing layer names (the file itself, or ``model_weights`` of a saved model) and its config."""
    config = None
    raw = fh.attrs.get("model_config")
    if raw is not None:
        config = _parse_json(_text(raw), p)
    root = _child(h5py, fh, "model_weights", p) if "model_weights" in fh else fh
    if "layer_names" not in root.attrs:
        raise EffnetError(f"{p} is an HDF5 file but not one Keras wrote (no layer list); it is not a Keras model")
    return root, config


def _legacy_layers(h5py: Any, root: Any, p: Path) -> list[_Layer]:
    layers = []
    for name in _text_list(root.attrs, "layer_names"):
        group = _child(h5py, root, name, p)
        variables = []
        for weight_name in _text_list(group.attrs, "weight_names"):
            # Keras 2 writes "stem_conv/kernel:0", Keras 3 "stem_conv/kernel"; the last part names the variable.
            owner, _, short = weight_name.rpartition("/")
            if owner.split("/")[0] == "stem_conv" and name != "stem_conv":
                raise _nested_error(p, name)
            variables.append((short.split(":", 1)[0], _dataset(h5py, group, weight_name, p)))
        layers.append(_Layer(name=name, kind=_legacy_kind(name, variables), variables=variables))
    return layers


def _legacy_kind(name: str, variables: list[tuple[str, np.ndarray]]) -> str:
    """A legacy layer's class, from its variable names (Keras 2 and 3 both call a depthwise kernel
    differently, so Keras's EfficientNet layer names settle that case)."""
    names = {n for n, _ in variables}
    if not names:
        return ""
    if "depthwise_kernel" in names or (name.endswith("dwconv") and "kernel" in names):
        return "DepthwiseConv2D"
    if "moving_mean" in names:
        return "BatchNormalization"
    if {"mean", "variance"} <= names:
        return "Normalization"
    if "kernel" in names:
        kernel = dict(variables)["kernel"]
        return "Dense" if kernel.ndim == 2 else "Conv2D"
    return ""


def _name_by_order(layers: list[_Layer], p: Path) -> None:
    """Name layers of a Keras 3 weights file that records no names (older Keras 3 releases).

    Keras numbers each class's groups in model order, and a Keras EfficientNet's layers of each
    class come in a fixed order, so the names follow from the counts. Which of B0-B7 it is (B1
    and B2 share one order) is left to the shape check.
    """
    from effnet.models.config import get_config
    from effnet.weights.formats import FORMATS, expected_shapes, key_map

    counts: dict[str, int] = {}
    for layer in layers:
        if layer.kind in ("Conv2D", "DepthwiseConv2D", "BatchNormalization", "Dense"):
            counts[layer.kind] = counts.get(layer.kind, 0) + 1
    for index in range(8):
        config = get_config(f"efficientnet_b{index}")
        order: dict[str, list[str]] = {}
        for ours, theirs in key_map(config, FORMATS[KERAS_FORMAT], list(expected_shapes(config))).items():
            prefix = ours.rpartition(".")[0]
            kind = (
                "Dense"
                if prefix == "classifier"
                else "BatchNormalization"
                if prefix.endswith("bn")
                else "DepthwiseConv2D"
                if prefix.endswith("dw.conv")
                else "Conv2D"
            )
            name = theirs.rpartition(".")[0]
            if name not in order.setdefault(kind, []):
                order[kind].append(name)
        if counts.get("Dense", 0) == 0:
            order.pop("Dense")  # saved without its top
        if {k: len(v) for k, v in order.items()} == counts:
            queues = {k: iter(v) for k, v in order.items()}
            for layer in layers:
                if layer.kind in queues:
                    layer.name = next(queues[layer.kind])
            return
    raise EffnetError(
        f"{p} does not name its layers and its layer counts ({counts}) match no Keras EfficientNet B0-B7; "
        "it is not a Keras EfficientNet"
    )


# ---- Keras layers -> PyTorch tensors and effnet preprocessing ----


def _to_checkpoint(
    layers: list[_Layer], groups: dict[str, int] | None, config: dict[str, Any] | None, p: Path
) -> Checkpoint:
    by_name = {layer.name: layer for layer in layers if layer.name}
    if "stem_conv" not in by_name:
        names = [layer.name for layer in layers if layer.variables][:4]
        have = f"its weighted layers start {', '.join(names)}" if names else "it has no weights"
        raise EffnetError(
            f"{p} is a Keras file but not a Keras EfficientNet (no stem_conv layer; {have}); effnet imports "
            "keras.applications.EfficientNetB0-B7"
        )
    if "block1a_dwconv" not in by_name:
        raise EffnetError(
            f"{p} looks like a Keras EfficientNetV2 (no block1a_dwconv layer); effnet implements EfficientNet B0-B7"
        )
    tensors: dict[str, torch.Tensor] = {}
    for layer in layers:
        if layer.kind in ("Normalization", "Rescaling") or not layer.variables:
            continue
        for torch_name, tensor in _layer_tensors(layer, p):
            tensors[f"{layer.name}.{torch_name}"] = tensor
    chain = _input_chain(layers, groups, config, p)
    mean, std = _compose(chain, p)
    metadata: dict[str, Any] = {"keras_input": {"mean": mean, "std": std, "input_size": _input_size(config)}}
    return Checkpoint(tensors=tensors, metadata=metadata, path=str(p))


def _layer_tensors(layer: _Layer, p: Path) -> list[tuple[str, torch.Tensor]]:
    table = _VARIABLES.get(layer.kind)
    if table is None:
        # A layer class no Keras EfficientNet has: keep its weights so the shape check names it.
        return [(name, torch.from_numpy(value)) for name, value in layer.variables]
    out = []
    for position, (name, value) in enumerate(layer.variables):
        if name.isdigit():  # Keras 3 stores variables by position
            if position >= len(table):
                raise EffnetError(f"{p}: layer {layer.name} has more variables than a {layer.kind} layer")
            torch_name = table[position][1]
        else:
            torch_name = next((t for keras_names, t in table if name in keras_names), "")
            if not torch_name:
                raise EffnetError(f"{p}: layer {layer.name} has an unexpected variable {name!r}")
        tensor = torch.from_numpy(value)
        if torch_name == "weight" and layer.kind in _LAYOUTS:
            ndim, to_torch = _LAYOUTS[layer.kind]
            if tensor.dim() != ndim:
                raise EffnetError(
                    f"{p}: layer {layer.name} has a {tensor.dim()}-D kernel; a {layer.kind} kernel is {ndim}-D"
                )
            tensor = to_torch(tensor).contiguous()
        out.append((torch_name, tensor))
    return out


@dataclass(frozen=True)
class _Step:
    """One input layer before the stem: ``x * scale + offset`` per channel."""

    scale: tuple[float, ...]
    offset: tuple[float, ...]


def _input_chain(
    layers: list[_Layer], groups: dict[str, int] | None, config: dict[str, Any] | None, p: Path
) -> list[_Step]:
    """The scaling applied to 0-255 pixels before ``stem_conv``, as the file describes it."""
    norms = [layer for layer in layers if layer.kind == "Normalization"]
    if config is not None:
        return _chain_from_config(config, norms, p)
    # Weights only: Keras's EfficientNet graph is Rescaling(1/255), Normalization, and the
    # 1/sqrt(std) correction when the model was built with weights="imagenet".
    if len(norms) != 1:
        raise EffnetError(f"{p} has {len(norms)} Normalization layers; a Keras EfficientNet has one")
    mean, variance = _norm_stats(norms[0], None, p)
    steps = [_Step((1 / 255.0,), (0.0,)), _normalization_step(mean, variance)]
    if _has_correction(layers, groups, norms[0], variance):
        steps.append(_Step(tuple(1 / math.sqrt(s) for s in _IMAGENET_STD), (0.0,)))
    return steps


def _has_correction(
    layers: list[_Layer], groups: dict[str, int] | None, norm: _Layer, variance: tuple[float, ...]
) -> bool:
    """Whether a weights-only file's model had Keras's second Rescaling after its Normalization."""
    if groups is None:  # legacy HDF5 lists every layer, weighted or not, in model order
        names = [layer.name for layer in layers]
        return any(_RESCALING.fullmatch(n) for n in names[names.index(norm.name) + 1 :])
    if groups.get("rescaling") or groups.get("activation"):  # Keras 3 lists weightless layers by class
        return groups.get("rescaling", 0) >= 2
    # Older Keras 3 releases list no weightless layers. Every Keras 3 model built with
    # weights="imagenet" has the correction, and only such models hold the published statistics.
    return all(abs(v - s) < 1e-6 for v, s in zip(variance, _IMAGENET_STD, strict=True))


def _chain_from_config(config: dict[str, Any], norms: list[_Layer], p: Path) -> list[_Step]:
    inner = config.get("config")
    entries = inner.get("layers") if isinstance(inner, dict) else None
    if not isinstance(entries, list):
        raise EffnetError(f"{p}: its model config lists no layers; it is not a Keras functional model")
    steps = []
    norm_index = 0
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        kind = str(entry.get("class_name", ""))
        cfg = entry.get("config") if isinstance(entry.get("config"), dict) else {}
        name = str(cfg.get("name", entry.get("name", "")))
        if name == "stem_conv_pad" or name == "stem_conv":
            return steps
        if kind == "Rescaling":
            steps.append(_Step(_numbers(cfg.get("scale", 1.0), name, p), _numbers(cfg.get("offset", 0.0), name, p)))
        elif kind == "Normalization":
            if cfg.get("invert"):
                raise EffnetError(f"{p}: its input layer {name} inverts a normalization; effnet cannot reproduce it")
            by_name = next((n for n in norms if n.name == name), None)
            layer = by_name or (norms[norm_index] if norm_index < len(norms) else None)
            norm_index += 1
            steps.append(_normalization_step(*_norm_stats(layer, cfg, p)))
        elif kind not in _PASSIVE_INPUT_LAYERS and not kind.startswith("Random"):
            raise EffnetError(
                f"{p} has a {kind} layer ({name}) before its stem; effnet reproduces only Rescaling and "
                "Normalization input layers"
            )
    raise EffnetError(f"{p}: its model config has no stem_conv layer; it is not a Keras EfficientNet")


def _norm_stats(layer: _Layer | None, cfg: dict[str, Any] | None, p: Path) -> tuple[tuple[float, ...], ...]:
    """(mean, variance) of a Normalization layer: from its config when given there, else its weights."""
    if cfg and cfg.get("mean") is not None and cfg.get("variance") is not None:
        return _numbers(cfg["mean"], "normalization", p), _numbers(cfg["variance"], "normalization", p)
    if layer is None:
        raise EffnetError(f"{p}: its Normalization layer has no stored mean and variance")
    order = [torch_name for _, torch_name in _VARIABLES["Normalization"]]
    values = {}
    for position, (name, value) in enumerate(layer.variables):
        values[order[position] if name.isdigit() and position < len(order) else name] = value
    if "mean" not in values or "variance" not in values:
        raise EffnetError(f"{p}: its Normalization layer {layer.name} has no stored mean and variance")
    return _channels(values["mean"], layer.name, p), _channels(values["variance"], layer.name, p)


def _normalization_step(mean: tuple[float, ...], variance: tuple[float, ...]) -> _Step:
    divisor = [max(math.sqrt(v), _NORM_EPSILON) if v >= 0 else math.nan for v in variance]
    return _Step(tuple(1 / d for d in divisor), tuple(-m / d for m, d in zip(mean, divisor, strict=True)))


def _compose(chain: list[_Step], p: Path) -> tuple[list[float], list[float]]:
    """effnet's (mean, std) for 0-1 pixels that reproduce ``chain`` applied to 0-255 pixels."""
    scale, offset = [1.0] * 3, [0.0] * 3
    for step in chain:
        s, o = _broadcast(step.scale, p), _broadcast(step.offset, p)
        scale = [a * b for a, b in zip(scale, s, strict=True)]
        offset = [a * b + c for a, b, c in zip(offset, s, o, strict=True)]
    # x01 = pixel / 255 and the chain gives pixel * scale + offset = (x01 - mean) / std.
    std = [1 / (255.0 * s) if s else math.inf for s in scale]
    mean = [-o * d for o, d in zip(offset, std, strict=True)]
    return [_tidy(v) for v in mean], [_tidy(v) for v in std]


def _tidy(value: float) -> float:
    """Round to float32's precision, which the Keras model stores and computes in (0.2290000021 -> 0.229)."""
    return float(f"{value:.7g}") if math.isfinite(value) else value


def _broadcast(values: tuple[float, ...], p: Path) -> tuple[float, ...]:
    if len(values) == 1:
        return values * 3
    if len(values) != 3:
        raise EffnetError(f"{p}: its input scaling has {len(values)} channels; effnet reads RGB models")
    return values


def _numbers(value: Any, name: str, p: Path) -> tuple[float, ...]:
    """A scalar or per-channel list from a layer config (Keras may wrap arrays as {"config": {"value": ...}})."""
    if isinstance(value, dict):
        value = (value.get("config") or {}).get("value") if isinstance(value.get("config"), dict) else None
    try:
        flat = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        flat = np.empty(0)
    if flat.size == 0:
        raise EffnetError(f"{p}: cannot read the numbers of input layer {name} from its config")
    return tuple(float(v) for v in flat)


def _channels(value: np.ndarray, name: str, p: Path) -> tuple[float, ...]:
    flat = np.asarray(value, dtype=np.float64).reshape(-1)
    if flat.size not in (1, 3):
        raise EffnetError(f"{p}: Normalization layer {name} has {flat.size} channels; effnet reads RGB models")
    return tuple(float(v) for v in flat)


def _input_size(config: dict[str, Any] | None) -> int | None:
    """The square input side the model was built for, when its config records one."""
    if config is None:
        return None
    inner = config.get("config")
    entries = inner.get("layers") if isinstance(inner, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and entry.get("class_name") == "InputLayer":
            cfg = entry.get("config") if isinstance(entry.get("config"), dict) else {}
            shape = cfg.get("batch_shape", cfg.get("batch_input_shape"))
            if not isinstance(shape, list) or len(shape) != 4:
                return None
            sides = shape[1:3] if shape[3] in (1, 3) else shape[2:4]
            if sides[0] == sides[1] and isinstance(sides[0], int) and not isinstance(sides[0], bool) and sides[0] > 0:
                return sides[0]
            return None
    return None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]
