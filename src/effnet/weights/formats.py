"""Checkpoint formats: detection and declarative key maps to effnet's own names.

Each source format is a table: where its stem, head and classifier live, and how the layers of
one MBConv block are named. Conversion walks effnet's own ``state_dict`` keys, maps each to
the source's key through the table, and checks every shape, so a checkpoint of another
architecture or size is caught key by key and named. Parity of logits with each source
implementation is verified by the tests.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from effnet.errors import EffnetError
from effnet.models.config import MODEL_CONFIGS, EfficientNetConfig, Layout, get_config
from effnet.models.scaling import head_channels, resolve_layout, resolve_stages, stem_channels
from effnet.weights.io import EFFNET_FORMAT, FORMAT_VERSION, Checkpoint
from effnet.weights.specs import Preprocessing

# Parts of one MBConv block in effnet's naming, in forward order.
BLOCK_PARTS = ("expand.conv", "expand.bn", "dw.conv", "dw.bn", "se.fc1", "se.fc2", "project.conv", "project.bn")


@dataclass(frozen=True)
class BlockLayout:
    stage: int
    block: int
    flat: int  # index of the block counted over the whole network
    has_expand: bool


BlockMap = Callable[[BlockLayout, str], str]


@dataclass(frozen=True)
class SourceFormat:
    """How one implementation names EfficientNet's layers."""

    name: str
    signature: str  # a key only this format has
    stem: dict[str, str]
    head: Callable[[int], dict[str, str]]  # number of stages -> head part names
    classifier: str
    block: BlockMap  # (layout, effnet part) -> source prefix
    flavour: dict[str, Any] = field(default_factory=dict)  # arch fields its numerics need
    # For formats whose files carry their own input scaling: (checkpoint, architecture) -> the
    # Preprocessing (as a dict) that feeds the converted network what the source model saw.
    preprocessing: Callable[[Checkpoint, EfficientNetConfig], dict[str, Any] | None] | None = None


def _tv_block(layout: BlockLayout, part: str) -> str:
    present = (["expand"] if layout.has_expand else []) + ["dw", "se", "project"]
    module, sub = part.split(".")
    position = present.index(module)
    suffix = sub if module == "se" else {"conv": "0", "bn": "1"}[sub]
    return f"features.{layout.stage + 1}.{layout.block}.block.{position}.{suffix}"


_TIMM_IR = {
    "expand.conv": "conv_pw",
    "expand.bn": "bn1",
    "dw.conv": "conv_dw",
    "dw.bn": "bn2",
    "se.fc1": "se.conv_reduce",
    "se.fc2": "se.conv_expand",
    "project.conv": "conv_pwl",
    "project.bn": "bn3",
}
# timm's depthwise-separable block (stage 0, no expansion) numbers its layers differently.
_TIMM_DS = {
    "dw.conv": "conv_dw",
    "dw.bn": "bn1",
    "se.fc1": "se.conv_reduce",
    "se.fc2": "se.conv_expand",
    "project.conv": "conv_pw",
    "project.bn": "bn2",
}


def _timm_block(layout: BlockLayout, part: str) -> str:
    table = _TIMM_IR if layout.has_expand else _TIMM_DS
    return f"blocks.{layout.stage}.{layout.block}.{table[part]}"


_LUKEMELAS = {
    "expand.conv": "_expand_conv",
    "expand.bn": "_bn0",
    "dw.conv": "_depthwise_conv",
    "dw.bn": "_bn1",
    "se.fc1": "_se_reduce",
    "se.fc2": "_se_expand",
    "project.conv": "_project_conv",
    "project.bn": "_bn2",
}


def _lukemelas_block(layout: BlockLayout, part: str) -> str:
    return f"_blocks.{layout.flat}.{_LUKEMELAS[part]}"


def _effnet_block(layout: BlockLayout, part: str) -> str:
    return f"stages.{layout.stage}.{layout.block}.{part}"


# keras.applications.EfficientNet names layers block{stage}{letter}_{part} (block2a_expand_conv).
_KERAS = {
    "expand.conv": "expand_conv",
    "expand.bn": "expand_bn",
    "dw.conv": "dwconv",
    "dw.bn": "bn",
    "se.fc1": "se_reduce",
    "se.fc2": "se_expand",
    "project.conv": "project_conv",
    "project.bn": "project_bn",
}


def _keras_block(layout: BlockLayout, part: str) -> str:
    return f"block{layout.stage + 1}{chr(ord('a') + layout.block)}_{_KERAS[part]}"


def _keras_preprocessing(ckpt: Checkpoint, config: EfficientNetConfig) -> dict[str, Any] | None:
    """The Keras model's in-graph input scaling (read by :mod:`effnet.weights.keras`) as effnet preprocessing.

    The input size is the one the Keras model was built for when its file records it, else the
    variant's. Keras applications prescribe no resize or crop; this is the evaluation transform of
    the TensorFlow EfficientNet reference the Keras ImageNet weights come from: bicubic, centre
    crop of size / (size + 32).
    """
    recorded = ckpt.metadata.get("keras_input")
    if not isinstance(recorded, dict):
        return None
    size = recorded.get("input_size") or config.resolution
    mean, std = tuple(recorded["mean"]), tuple(recorded["std"])
    return Preprocessing(size, size + 32, "bicubic", mean, std).to_dict()


_TF_FLAVOUR = {"padding": "same", "bn_eps": 1e-3, "bn_momentum": 0.01}

FORMATS: dict[str, SourceFormat] = {
    f.name: f
    for f in (
        SourceFormat(
            name=EFFNET_FORMAT,
            signature="stem.conv.weight",
            stem={"stem.conv": "stem.conv", "stem.bn": "stem.bn"},
            head=lambda n: {"head.conv": "head.conv", "head.bn": "head.bn"},
            classifier="classifier",
            block=_effnet_block,
        ),
        SourceFormat(
            name="torchvision",
            signature="features.0.0.weight",
            stem={"stem.conv": "features.0.0", "stem.bn": "features.0.1"},
            head=lambda n: {"head.conv": f"features.{n + 1}.0", "head.bn": f"features.{n + 1}.1"},
            classifier="classifier.1",
            block=_tv_block,
            flavour={"padding": "symmetric"},
        ),
        SourceFormat(
            name="timm",
            signature="conv_stem.weight",
            stem={"stem.conv": "conv_stem", "stem.bn": "bn1"},
            head=lambda n: {"head.conv": "conv_head", "head.bn": "bn2"},
            classifier="classifier",
            block=_timm_block,
            flavour={"padding": "symmetric", "bn_eps": 1e-5, "bn_momentum": 0.1},
        ),
        SourceFormat(
            # lukemelas/EfficientNet-PyTorch, and the EfficientNet-Lite port built on it.
            name="efficientnet_pytorch",
            signature="_conv_stem.weight",
            stem={"stem.conv": "_conv_stem", "stem.bn": "_bn0"},
            head=lambda n: {"head.conv": "_conv_head", "head.bn": "_bn1"},
            classifier="_fc",
            block=_lukemelas_block,
            flavour=_TF_FLAVOUR,
        ),
        SourceFormat(
            # keras.applications.EfficientNetB0-B7, read by effnet.weights.keras. Keras layers use
            # TF "same" padding (explicit asymmetric zero padding before strided convs) and eps 1e-3.
            name="keras",
            signature="stem_conv.weight",
            stem={"stem.conv": "stem_conv", "stem.bn": "stem_bn"},
            head=lambda n: {"head.conv": "top_conv", "head.bn": "top_bn"},
            classifier="predictions",
            block=_keras_block,
            flavour=_TF_FLAVOUR,
            preprocessing=_keras_preprocessing,
        ),
    )
}


def detect_format(ckpt: Checkpoint) -> SourceFormat:
    """Which implementation wrote this checkpoint, from its metadata and key names."""
    if ckpt.metadata.get("format") == EFFNET_FORMAT:
        return FORMATS[EFFNET_FORMAT]
    for fmt in FORMATS.values():
        if fmt.signature in ckpt.tensors:
            return fmt
    sample = ", ".join(list(ckpt.tensors)[:4])
    raise EffnetError(
        f"{ckpt.path or 'checkpoint'} is not a recognised EfficientNet checkpoint (expected torchvision, "
        f"timm, efficientnet_pytorch, Keras or effnet layer names; its first keys are: {sample})"
    )


def flavour_for(fmt: SourceFormat, ckpt: Checkpoint) -> dict[str, Any]:
    """Architecture fields that reproduce the source's numerics (padding, batch-norm epsilon)."""
    arch = str(ckpt.metadata.get("arch", ""))
    if fmt.name == "timm" and arch.startswith("tf_"):
        return dict(_TF_FLAVOUR)  # timm's tf_* models are TensorFlow ports
    return dict(fmt.flavour)


_STAGE_KEY = re.compile(r"^stages\.(\d+)\.(\d+)\.(.+)$")


def key_map(config: EfficientNetConfig, fmt: SourceFormat, effnet_keys: list[str]) -> dict[str, str]:
    """effnet key -> source key for every tensor of a model built from ``config``."""
    layout = resolve_layout(config)
    layouts: dict[tuple[int, int], BlockLayout] = {}
    for flat, spec in enumerate(layout.blocks):
        b = sum(1 for other in layout.blocks[:flat] if other.stage == spec.stage)
        layouts[(spec.stage, b)] = BlockLayout(spec.stage, b, flat, has_expand=spec.expand)
    fixed = {**fmt.stem, **fmt.head(layout.num_stages), "classifier": fmt.classifier}
    mapping = {}
    for key in effnet_keys:
        prefix, _, param = key.rpartition(".")
        match = _STAGE_KEY.match(prefix)
        if match:
            layout = layouts[(int(match.group(1)), int(match.group(2)))]
            mapping[key] = f"{fmt.block(layout, match.group(3))}.{param}"
        else:
            mapping[key] = f"{fixed[prefix]}.{param}"
    return mapping


@functools.lru_cache(maxsize=64)
def expected_shapes(config: EfficientNetConfig) -> dict[str, torch.Size]:
    """The state-dict shapes of a model built from ``config``, computed without allocating it.

    Cached: configs are frozen, and checking a checkpoint against every registered
    architecture would otherwise rebuild each one.
    """
    from effnet.models.efficientnet import EfficientNet

    with torch.device("meta"):
        model = EfficientNet(config)
    return {k: v.shape for k, v in model.state_dict().items()}


@dataclass
class Converted:
    """A checkpoint translated to effnet's names, with what it says about the architecture."""

    state_dict: dict[str, torch.Tensor]
    source_format: str
    flavour: dict[str, Any]
    num_classes: int
    in_chans: int
    metadata: dict[str, Any]


def _head_dims(fmt: SourceFormat, ckpt: Checkpoint) -> tuple[int, int]:
    """(num_classes, in_chans) of the checkpoint, read off its classifier and stem."""
    stem_key = f"{fmt.stem['stem.conv']}.weight"
    cls_key = f"{fmt.classifier}.weight"
    stem = ckpt.tensors.get(stem_key)
    in_chans = int(stem.shape[1]) if stem is not None and stem.dim() == 4 else 3
    cls = ckpt.tensors.get(cls_key)
    num_classes = int(cls.shape[0]) if cls is not None and cls.dim() == 2 else 0
    return num_classes, in_chans


def _try_map(
    config: EfficientNetConfig, fmt: SourceFormat, ckpt: Checkpoint, headless: bool = False
) -> tuple[dict[str, str], list[str]]:
    """The key map and a list of problems (empty when the checkpoint fits ``config``).

    ``headless``: the checkpoint was saved without its classifier, so none is expected.
    """
    shapes = expected_shapes(config)
    mapping = key_map(config, fmt, [k for k in shapes if not (headless and k.startswith("classifier."))])
    problems = []
    for ours, theirs in mapping.items():
        tensor = ckpt.tensors.get(theirs)
        if tensor is None:
            if not ours.endswith("num_batches_tracked"):
                problems.append(f"missing {theirs}")
        elif tensor.shape != shapes[ours]:
            problems.append(f"{theirs} has shape {list(tensor.shape)}, expected {list(shapes[ours])}")
    extra = set(ckpt.tensors) - set(mapping.values())
    if extra:
        problems.append(f"{len(extra)} unexpected tensors such as {sorted(extra)[0]}")
    return mapping, problems


def guess_architecture(ckpt: Checkpoint, fmt: SourceFormat | None = None) -> str | None:
    """The registered model whose layer shapes this checkpoint matches exactly, if any."""
    fmt = fmt or detect_format(ckpt)
    num_classes, in_chans = _head_dims(fmt, ckpt)
    headless = num_classes == 0
    count = _count_without_bn_counters(ckpt.tensors) + (2 if headless else 0)  # a classifier's weight and bias
    for name, config in MODEL_CONFIGS.items():
        if _count_without_bn_counters(expected_shapes(config)) != count:
            continue  # cheap rejection before mapping every key
        candidate = config.replace(num_classes=max(num_classes, 1), in_chans=in_chans)
        if not _try_map(candidate, fmt, ckpt, headless)[1]:
            return name
    return None


def _count_without_bn_counters(keys: Any) -> int:
    return sum(1 for k in keys if not k.endswith("num_batches_tracked"))


def convert(
    ckpt: Checkpoint, config: EfficientNetConfig | None, allow_headless: bool = False
) -> tuple[EfficientNetConfig, Converted]:
    """Translate ``ckpt`` to effnet's names for ``config`` (or the architecture it records).

    Returns the config the weights belong to (with the source's numerical flavour, class
    count and input channels) and the converted weights. Any mismatch raises
    :class:`EffnetError` naming the first differing layer and, when it can tell, the
    architecture the checkpoint does fit. ``allow_headless`` accepts a checkpoint without a
    classifier (``Converted.num_classes`` is then 0) for a caller that puts on a new one.
    """
    fmt = detect_format(ckpt)
    recorded = ckpt.metadata.get("arch")
    version = ckpt.metadata.get("format_version", 1)
    if fmt.name == EFFNET_FORMAT and (not isinstance(version, int) or version > FORMAT_VERSION):
        raise EffnetError(
            f"{ckpt.path} was written by a newer effnet (format version {version!r}; this one reads up to "
            f"{FORMAT_VERSION}); upgrade effnet to load it"
        )
    if fmt.name == EFFNET_FORMAT and isinstance(recorded, dict):
        try:
            from_ckpt = EfficientNetConfig.from_dict(recorded)
        except EffnetError as exc:
            raise EffnetError(f"{ckpt.path} records an invalid architecture: {exc}") from None
        too_large = _larger_than_tensors(from_ckpt, ckpt)
        if too_large:
            raise EffnetError(f"{ckpt.path} records an architecture its tensors cannot hold: {too_large}")
        # The file's own layout is authoritative for its family member (a pruned efficientnet_b0
        # is still loaded by --model efficientnet_b0); another member's name is a mistake.
        if config is not None and config.name != from_ckpt.name and _shape_fields(config) != _shape_fields(from_ckpt):
            raise EffnetError(
                f"{ckpt.path} holds weights for {from_ckpt.name}, not {config.name}; "
                f"use --model {from_ckpt.name} (or model name {from_ckpt.name!r})"
            )
        config = from_ckpt
    if config is None:
        guessed = guess_architecture(ckpt, fmt)
        if guessed is None:
            raise EffnetError(f"cannot tell which EfficientNet {ckpt.path} holds; name the model explicitly")
        config = get_config(guessed)

    num_classes, in_chans = _head_dims(fmt, ckpt)
    headless = num_classes == 0
    if headless and not allow_headless:
        raise EffnetError(
            f"{ckpt.path} has no classifier weights ({fmt.classifier}.weight), e.g. a Keras model saved with "
            "include_top=False; effnet.create_model(weights=..., num_classes=N) puts a new head on it "
            "(the effnet commands need a file with its classifier)"
        )
    flavour = flavour_for(fmt, ckpt) if fmt.name != EFFNET_FORMAT else {}
    target = config.replace(num_classes=num_classes or config.num_classes, in_chans=in_chans, **flavour)
    mapping, problems = _try_map(target, fmt, ckpt, headless)
    if problems:
        guess = guess_architecture(ckpt, fmt)
        hint = f"; it looks like {guess}" if guess and guess != config.name else ""
        more = f" (and {len(problems) - 1} more differences)" if len(problems) > 1 else ""
        raise EffnetError(f"{ckpt.path} ({fmt.name} format) does not match {config.name}: {problems[0]}{more}{hint}")
    state = {}
    for ours, theirs in mapping.items():
        tensor = ckpt.tensors.get(theirs)
        state[ours] = tensor if tensor is not None else torch.zeros((), dtype=torch.long)
    metadata = dict(ckpt.metadata)
    if fmt.preprocessing is not None:
        preprocessing = fmt.preprocessing(ckpt, target)
        if preprocessing is not None:
            metadata["preprocessing"] = preprocessing
    converted = Converted(
        state_dict=state,
        source_format=fmt.name,
        flavour=flavour,
        num_classes=num_classes,
        in_chans=in_chans,
        metadata=metadata,
    )
    return target, converted


def _larger_than_tensors(config: EfficientNetConfig, ckpt: Checkpoint) -> str | None:
    """Why ``ckpt`` cannot hold ``config``, judged from sizes alone before any layer is laid out.

    An architecture record is read from the file: one claiming millions of channels or blocks
    must be refused here, not while the model's shapes are computed. Every block has tensors of
    its own and every channel count is a dimension of some tensor, so neither can exceed what
    the file holds.
    """
    if config.layout is not None:
        layout = config.layout  # its size limits were checked when it was read
        widths = [layout.stem_channels, layout.head_channels]
        widths += [c for b in layout.blocks for c in (b.hidden_channels, b.out_channels, b.kernel)]
        blocks = len(layout.blocks)
    else:
        try:
            stages = resolve_stages(config)
            widths = [stem_channels(config), head_channels(config)]
            widths += [c for s in stages for c in (s.in_channels * s.expand, s.out_channels, s.kernel)]
            blocks = sum(s.repeats for s in stages)
        except (OverflowError, ValueError):
            return "sizes beyond any number"
    largest = max((max(t.shape, default=1) for t in ckpt.tensors.values()), default=0)
    if blocks > len(ckpt.tensors):
        return f"{blocks} blocks but only {len(ckpt.tensors)} tensors"
    if max(widths) > largest:
        return f"{max(widths)} channels but no tensor dimension above {largest}"
    return None


def _shape_fields(config: EfficientNetConfig) -> Layout:
    """What decides tensor shapes (not resolution, dropout or numerics): every width, block by block."""
    return resolve_layout(config)
