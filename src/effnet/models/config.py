"""Architecture configs for the EfficientNet family, declared as data.

EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks (Tan & Le, ICML 2019,
https://arxiv.org/abs/1905.11946). EfficientNet-Lite is the TensorFlow TPU repository's
edge variant: ReLU6 instead of SiLU, no squeeze-and-excitation, and a stem and head that are
not scaled, which keeps it friendly to int8 quantization.

An :class:`EfficientNetConfig` describes the *shape* of a network only. Where a checkpoint
comes from lives in :mod:`effnet.weights`; training and compression settings live in recipes.

A config either scales the B0 stages (the family) or carries an explicit :class:`Layout`: every
block's widths written out, which is how a network whose channels were changed block by block
(a pruned one) is described, saved and rebuilt.

Besides the registered names, :func:`get_config` builds compound-scaled members by name
(section 3.3 of the paper): ``<base>_phi<φ>`` such as ``efficientnet_b0_phi-1`` or
``efficientnet_lite0_phi0.5`` uses the paper's α=1.2, β=1.1, γ=1.15, and
``<base>_phi<φ>_a<α>_b<β>_g<γ>`` names its own coefficients (what ``effnet scale-search`` finds).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from effnet.errors import EffnetError
from effnet.sizes import input_size_problem

Activation = Literal["silu", "relu6"]
Padding = Literal["symmetric", "same"]


@dataclass(frozen=True)
class StageSpec:
    """One stage of MBConv blocks in the unscaled (B0) network.

    Channels and repeats here are *before* width and depth scaling; see
    :func:`effnet.models.scaling.resolve_stages` for the scaled values.
    """

    kernel: int  # depthwise kernel size
    stride: int  # stride of the first block of the stage; the rest use 1
    expand: int  # expansion ratio of the inverted bottleneck
    out_channels: int
    repeats: int


# Table 1 of the EfficientNet paper: the B0 baseline found by neural architecture search.
B0_STAGES: tuple[StageSpec, ...] = (
    StageSpec(kernel=3, stride=1, expand=1, out_channels=16, repeats=1),
    StageSpec(kernel=3, stride=2, expand=6, out_channels=24, repeats=2),
    StageSpec(kernel=5, stride=2, expand=6, out_channels=40, repeats=2),
    StageSpec(kernel=3, stride=2, expand=6, out_channels=80, repeats=3),
    StageSpec(kernel=5, stride=1, expand=6, out_channels=112, repeats=3),
    StageSpec(kernel=5, stride=2, expand=6, out_channels=192, repeats=4),
    StageSpec(kernel=3, stride=1, expand=6, out_channels=320, repeats=1),
)


# Bounds on an explicit layout read from a file: far above any EfficientNet (B7 has 55 blocks and
# at most 3,840 channels in a layer), far below sizes that would exhaust memory while building.
MAX_BLOCKS = 1024
MAX_CHANNELS = 65536


@dataclass(frozen=True)
class BlockSpec:
    """One MBConv block exactly as built: every width explicit.

    ``expand`` says whether the 1x1 expansion convolution exists (``hidden_channels`` then may
    differ from ``in_channels``); ``se_channels == 0`` means no squeeze-and-excitation.
    """

    stage: int  # index of the stage the block belongs to
    in_channels: int
    hidden_channels: int  # width of the depthwise convolution
    out_channels: int
    se_channels: int  # squeeze width of the squeeze-and-excitation; 0 = none
    kernel: int  # depthwise kernel size
    stride: int
    expand: bool  # a 1x1 expansion convolution precedes the depthwise one
    residual: bool  # identity shortcut around the block

    def problems(self, where: str) -> list[str]:
        """What is inconsistent about this block (empty when it can be built)."""
        out = []
        widths = (self.in_channels, self.hidden_channels, self.out_channels)
        if min(widths) < 1 or max(*widths, self.se_channels) > MAX_CHANNELS or self.se_channels < 0:
            out.append(f"{where}: channel counts must be in [1, {MAX_CHANNELS}] (se_channels may be 0)")
        if not 1 <= self.kernel <= 15 or self.kernel % 2 == 0:
            out.append(f"{where}: kernel must be an odd size from 1 to 15, got {self.kernel}")
        if self.stride not in (1, 2):
            out.append(f"{where}: stride must be 1 or 2, got {self.stride}")
        if not self.expand and self.hidden_channels != self.in_channels:
            out.append(f"{where}: without an expansion convolution hidden_channels must equal in_channels")
        if self.residual and (self.stride != 1 or self.in_channels != self.out_channels):
            out.append(f"{where}: a residual block needs stride 1 and in_channels == out_channels")
        return out


@dataclass(frozen=True)
class Layout:
    """Every width of an EfficientNet: stem, blocks in order, head (the input of the pooling)."""

    stem_channels: int
    blocks: tuple[BlockSpec, ...]
    head_channels: int

    def problems(self) -> list[str]:
        """Why this layout cannot be built (empty when it can): blocks must chain, sizes be sane."""
        out = []
        if not 1 <= len(self.blocks) <= MAX_BLOCKS:
            return [f"a layout needs 1 to {MAX_BLOCKS} blocks, got {len(self.blocks)}"]
        if not (1 <= self.stem_channels <= MAX_CHANNELS and 1 <= self.head_channels <= MAX_CHANNELS):
            out.append(f"stem and head channels must be in [1, {MAX_CHANNELS}]")
        previous_out, previous_stage = self.stem_channels, 0
        for index, block in enumerate(self.blocks):
            where = f"block {index}"
            out += block.problems(where)
            if block.in_channels != previous_out:
                out.append(f"{where}: in_channels {block.in_channels} != {previous_out}, the output before it")
            if not previous_stage <= block.stage <= previous_stage + 1 or (index == 0 and block.stage != 0):
                out.append(f"{where}: stage indices must start at 0 and grow by at most 1 per block")
            previous_out, previous_stage = block.out_channels, block.stage
        return out[:5]

    @property
    def num_stages(self) -> int:
        return self.blocks[-1].stage + 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "stem_channels": self.stem_channels,
            "head_channels": self.head_channels,
            "blocks": [dataclasses.asdict(b) for b in self.blocks],
        }

    @classmethod
    def from_dict(cls, data: Any) -> Layout:
        """Rebuild from :meth:`to_dict` output, checking every value (it may come from an untrusted file)."""
        expected = {"stem_channels", "head_channels", "blocks"}
        if not isinstance(data, dict) or set(data) != expected:
            raise EffnetError("an architecture layout must be a mapping of stem_channels, head_channels and blocks")
        if not all(_is_kind(data[k], int) for k in ("stem_channels", "head_channels")):
            raise EffnetError("layout stem_channels and head_channels must be whole numbers")
        blocks = data["blocks"]
        if not isinstance(blocks, list) or not 1 <= len(blocks) <= MAX_BLOCKS:
            raise EffnetError(f"layout blocks must be a list of 1 to {MAX_BLOCKS} blocks")
        kinds = {f.name: (bool if f.type == "bool" else int) for f in dataclasses.fields(BlockSpec)}
        parsed = []
        for index, block in enumerate(blocks):
            if not isinstance(block, dict) or set(block) != set(kinds):
                raise EffnetError(f"layout block {index} must have exactly the keys {', '.join(kinds)}")
            wrong = [k for k, kind in kinds.items() if not _is_kind(block[k], kind)]
            if wrong:
                raise EffnetError(f"layout block {index}: {wrong[0]} must be {kinds[wrong[0]].__name__}")
            parsed.append(BlockSpec(**block))
        return cls(int(data["stem_channels"]), tuple(parsed), int(data["head_channels"]))


@dataclass(frozen=True)
class EfficientNetConfig:
    """The shape of one EfficientNet: the B0 stages plus the multipliers that scale them."""

    name: str
    width_mult: float = 1.0  # channel multiplier (beta ** phi)
    depth_mult: float = 1.0  # repeat multiplier (alpha ** phi)
    resolution: int = 224  # default input side (gamma ** phi times 224, or the released table)
    dropout: float = 0.2  # dropout before the classifier
    drop_path: float = 0.2  # stochastic depth rate of the last block; earlier blocks scale linearly
    activation: Activation = "silu"
    se_ratio: float = 0.25  # squeeze channels = block input channels * se_ratio; 0 disables SE
    fixed_stem_head: bool = False  # Lite: stem/head widths and first/last stage depths are not scaled
    stem_channels: int = 32
    head_channels: int = 1280
    stages: tuple[StageSpec, ...] = B0_STAGES
    divisor: int = 8  # channels are rounded to multiples of this
    # Numerical flavour. PyTorch-trained weights use symmetric padding and eps 1e-5; weights
    # ported from TensorFlow need TF "same" padding and eps 1e-3 to reproduce their logits.
    padding: Padding = "symmetric"
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    num_classes: int = 1000
    in_chans: int = 3
    # Explicit per-block widths (a pruned or hand-edited network). When set, it is what is built,
    # and width_mult, depth_mult, stages, stem/head channels and se_ratio only record the origin.
    layout: Layout | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.width_mult <= 0 or self.depth_mult <= 0:
            problems.append("width_mult and depth_mult must be positive")
        if input_size_problem(self.resolution, "resolution"):
            problems.append(input_size_problem(self.resolution, "resolution"))
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.drop_path < 1.0:
            problems.append(f"drop_path must be in [0, 1), got {self.drop_path}")
        if self.activation not in ("silu", "relu6"):
            problems.append(f"activation must be 'silu' or 'relu6', got {self.activation!r}")
        if self.padding not in ("symmetric", "same"):
            problems.append(f"padding must be 'symmetric' or 'same', got {self.padding!r}")
        if self.num_classes < 1:
            problems.append(f"num_classes must be at least 1, got {self.num_classes}")
        if self.in_chans < 1:
            problems.append(f"in_chans must be at least 1, got {self.in_chans}")
        if not self.stages:
            problems.append("a network needs at least one stage")
        if min(self.stem_channels, self.head_channels, self.divisor) < 1:
            problems.append("stem_channels, head_channels and divisor must be at least 1")
        if not 0.0 <= self.se_ratio <= 1.0:
            problems.append(f"se_ratio must be in [0, 1], got {self.se_ratio}")
        if self.layout is not None:
            problems += self.layout.problems()
        if problems:
            raise EffnetError(f"invalid config {self.name!r}: " + "; ".join(problems))

    def replace(self, **changes: Any) -> EfficientNetConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data; :meth:`from_dict` reverses it."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["stages"] = [dataclasses.asdict(s) for s in self.stages]
        data["layout"] = self.layout.to_dict() if self.layout is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EfficientNetConfig:
        """Rebuild a config from :meth:`to_dict` output, rejecting unknown keys and wrong types by name.

        The data may come from an untrusted checkpoint, so every value's type is checked.
        """
        if not isinstance(data, dict):
            raise EffnetError(f"an architecture config must be a mapping, got {type(data).__name__}")
        known = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = sorted(map(str, set(data) - set(known)))
        if unknown:
            raise EffnetError(f"unknown architecture config keys: {', '.join(map(_brief, unknown))}")
        required = [f.name for f in dataclasses.fields(cls) if f.default is f.default_factory is dataclasses.MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise EffnetError(f"architecture config lacks {', '.join(missing)}")
        values = dict(data)
        layout = values.pop("layout", None)
        for key, value in values.items():
            kind = _FIELD_KINDS.get(known[key])
            if kind is not None and not _is_kind(value, kind):
                raise EffnetError(f"architecture config {key} must be {kind.__name__}, got {_brief(value)}")
        if not (values["name"].isprintable() and 0 < len(values["name"]) <= 100):  # it appears in messages
            raise EffnetError(f"architecture config name must be a short printable text, got {_brief(values['name'])}")
        if "stages" in values:
            stages = values["stages"]
            if not isinstance(stages, list | tuple) or not all(_is_stage(s) for s in stages):
                raise EffnetError(
                    "invalid stages in architecture config: expected a list of {kernel, stride, expand, "
                    "out_channels, repeats} with whole numbers of at least 1"
                )
            values["stages"] = tuple(StageSpec(**s) for s in stages)
        if layout is not None:
            values["layout"] = Layout.from_dict(layout)
        return cls(**values)


# The types JSON can carry for each annotated field of EfficientNetConfig (annotations are strings here).
_FIELD_KINDS: dict[Any, type] = {
    "str": str,
    "float": float,
    "int": int,
    "bool": bool,
    "Activation": str,
    "Padding": str,
}


def _brief(value: Any) -> str:
    """A value from an untrusted file, fit for a one-line message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_kind(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _is_stage(data: Any) -> bool:
    fields = {f.name for f in dataclasses.fields(StageSpec)}
    return (
        isinstance(data, dict)
        and set(data) == fields
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in data.values())
    )


@dataclass(frozen=True)
class _Row:
    width: float
    depth: float
    resolution: int
    dropout: float
    extra: dict[str, Any] = field(default_factory=dict)


# The released B0-B7 use this table, not the compound-scaling formula (the paper's Table 7 and
# the reference code). B5-B7 carry TensorFlow-ported batch-norm constants, as torchvision's do.
_TF_BN = {"bn_eps": 1e-3, "bn_momentum": 0.01}
_B_ROWS: dict[str, _Row] = {
    "efficientnet_b0": _Row(1.0, 1.0, 224, 0.2),
    "efficientnet_b1": _Row(1.0, 1.1, 240, 0.2),
    "efficientnet_b2": _Row(1.1, 1.2, 260, 0.3),
    "efficientnet_b3": _Row(1.2, 1.4, 300, 0.3),
    "efficientnet_b4": _Row(1.4, 1.8, 380, 0.4),
    "efficientnet_b5": _Row(1.6, 2.2, 456, 0.4, _TF_BN),
    "efficientnet_b6": _Row(1.8, 2.6, 528, 0.5, _TF_BN),
    "efficientnet_b7": _Row(2.0, 3.1, 600, 0.5, _TF_BN),
}

# EfficientNet-Lite (tensorflow/tpu efficientnet/lite). The only public weights are TF ports,
# so the default flavour is TF's: "same" padding and eps 1e-3.
_LITE = {
    "activation": "relu6",
    "se_ratio": 0.0,
    "fixed_stem_head": True,
    "padding": "same",
    **_TF_BN,
}
_LITE_ROWS: dict[str, _Row] = {
    "efficientnet_lite0": _Row(1.0, 1.0, 224, 0.2, _LITE),
    "efficientnet_lite1": _Row(1.0, 1.1, 240, 0.2, _LITE),
    "efficientnet_lite2": _Row(1.1, 1.2, 260, 0.3, _LITE),
    "efficientnet_lite3": _Row(1.2, 1.4, 280, 0.3, _LITE),
    "efficientnet_lite4": _Row(1.4, 1.8, 300, 0.3, _LITE),
}

MODEL_CONFIGS: dict[str, EfficientNetConfig] = {
    name: EfficientNetConfig(
        name=name,
        width_mult=row.width,
        depth_mult=row.depth,
        resolution=row.resolution,
        dropout=row.dropout,
        **row.extra,
    )
    for name, row in {**_B_ROWS, **_LITE_ROWS}.items()
}


# The coefficients of the paper's grid search (section 3.3): depth alpha, width beta, resolution
# gamma, with alpha * beta**2 * gamma**2 ~= 2. Every registered base was scaled with these.
PAPER_COEFFICIENTS: tuple[float, float, float] = (1.2, 1.1, 1.15)

_NUMBER = r"[+-]?\d+(?:\.\d+)?"
_SCALED_NAME = re.compile(
    rf"^(?P<base>.+?)[_-]phi(?P<phi>{_NUMBER})"
    rf"(?:[_-]a(?P<alpha>{_NUMBER})[_-]b(?P<beta>{_NUMBER})[_-]g(?P<gamma>{_NUMBER}))?$"
)
_SCALED_FORMS = (
    "<base>_phi<φ> (e.g. efficientnet_b0_phi-1, efficientnet_lite0_phi0.5) or "
    "<base>_phi<φ>_a<α>_b<β>_g<γ> (e.g. efficientnet_b0_phi1_a1.3_b1.05_g1.2), with a base from 'effnet list'"
)


@dataclass(frozen=True)
class ScaledName:
    """A compound-scaled member named by its base, its coefficient φ and (α, β, γ)."""

    base: str  # a registered name, e.g. efficientnet_b0
    phi: float
    coefficients: tuple[float, float, float] = PAPER_COEFFICIENTS

    @property
    def name(self) -> str:
        """The canonical name; :func:`parse_scaled_name` reads it back to the same member."""
        return scaled_name(self.base, self.phi, *self.coefficients)


def _canonical_number(value: float) -> float:
    return float(f"{value:g}") + 0.0  # as the name prints it; + 0.0 turns -0.0 into 0.0


def scaled_name(base: str, phi: float, alpha: float, beta: float, gamma: float) -> str:
    """The name of a compound-scaled member: the coefficients appear only when they are not the paper's.

    >>> scaled_name("efficientnet_b0", -1.0, 1.2, 1.1, 1.15)
    'efficientnet_b0_phi-1'
    >>> scaled_name("efficientnet_b0", 1.0, 1.3, 1.05, 1.2)
    'efficientnet_b0_phi1_a1.3_b1.05_g1.2'
    """
    name = f"{base}_phi{_canonical_number(phi):g}"
    coefficients = tuple(_canonical_number(c) for c in (alpha, beta, gamma))
    if coefficients != PAPER_COEFFICIENTS:
        name += "_a{:g}_b{:g}_g{:g}".format(*coefficients)
    return name


def is_scaled_name(name: str) -> bool:
    """Whether ``name`` is meant as a compound-scaled member (``_phi`` after the base), well-formed or not.

    Lets a caller tell ``efficientnet_b0_phi0.5`` from a file name with a ``.5`` suffix.

    >>> is_scaled_name("efficientnet_b0_phi0.5"), is_scaled_name("model.safetensors")
    (True, False)
    """
    return re.search(r"[_-]phi", name.strip().lower()) is not None


def parse_scaled_name(name: str) -> ScaledName | None:
    """Read ``<base>_phi<φ>[_a<α>_b<β>_g<γ>]``; None for a name without ``_phi``.

    A malformed φ or coefficient, or a base that is not registered, is one :class:`EffnetError`
    naming the valid forms.

    >>> parse_scaled_name("EfficientNet-B0-phi-1")
    ScaledName(base='efficientnet_b0', phi=-1.0, coefficients=(1.2, 1.1, 1.15))
    >>> parse_scaled_name("efficientnet_b0") is None
    True
    """
    if not is_scaled_name(name):
        return None
    match = _SCALED_NAME.match(name.strip().lower())
    if match is None:
        raise EffnetError(f"malformed compound-scaled model name {name!r}; use {_SCALED_FORMS}")
    base = _normalize_registered(match["base"])
    if base not in MODEL_CONFIGS:
        raise EffnetError(f"unknown base model {match['base']!r} in {name!r}; use {_SCALED_FORMS}")
    coefficients = PAPER_COEFFICIENTS
    if match["alpha"] is not None:
        coefficients = tuple(_canonical_number(float(match[k])) for k in ("alpha", "beta", "gamma"))
    return ScaledName(base, _canonical_number(float(match["phi"])), coefficients)


def _normalize_registered(name: str) -> str:
    key = name.strip().lower().replace("-", "_")
    if key and not key.startswith("efficientnet") and f"efficientnet_{key}" in MODEL_CONFIGS:
        key = f"efficientnet_{key}"
    return key


def normalize_name(name: str) -> str:
    """``EfficientNet-B0``, ``efficientnet-b0`` and ``b0`` all mean ``efficientnet_b0``.

    A compound-scaled name is written canonically: ``b0-phi-1`` means ``efficientnet_b0_phi-1``.
    """
    try:
        scaled = parse_scaled_name(name)
    except EffnetError:
        scaled = None  # get_config explains what is wrong with it
    return scaled.name if scaled is not None else _normalize_registered(name)


def get_config(name: str) -> EfficientNetConfig:
    """The config for a model name: a registered one, or a compound-scaled ``<base>_phi<φ>`` member.

    ``<base>_phi<φ>`` scales a registered base by the paper's formula (depth α**φ, width β**φ,
    resolution γ**φ with α=1.2, β=1.1, γ=1.15; see :func:`effnet.models.scaling.scaled_config`);
    φ may be negative or fractional, and ``_a<α>_b<β>_g<γ>`` after it gives other coefficients.
    Unknown names get a suggestion.

    >>> get_config("efficientnet_b3").resolution
    300
    >>> cfg = get_config("efficientnet_b0_phi-1")
    >>> (cfg.name, round(cfg.width_mult, 3), round(cfg.depth_mult, 3), cfg.resolution)
    ('efficientnet_b0_phi-1', 0.909, 0.833, 192)
    """
    scaled = parse_scaled_name(name)
    if scaled is not None:
        from effnet.models.scaling import scaled_config  # scaling builds on this module

        return scaled_config(scaled.phi, *scaled.coefficients, base=scaled.base)
    key = normalize_name(name)
    if key in MODEL_CONFIGS:
        return MODEL_CONFIGS[key]
    close = difflib.get_close_matches(key, MODEL_CONFIGS, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise EffnetError(f"unknown model {name!r}; {hint}run 'effnet list' or effnet.list_models() for the names")
