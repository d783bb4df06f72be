"""The pass interface: every compression technique is a config dataclass plus a transform.

A pass takes a model and returns a *new* model and a report; the input is never modified
(:func:`apply_pass` hands the transform a private copy). Configs are validated dataclasses
that round-trip through JSON/YAML with unknown keys refused by name. Reports are plain data.

A pass that changes the network's structure in a way the architecture config cannot express
(batch norms folded away, padding frozen to constants) also says how to *rebuild* that
structure on a freshly built network; the saved model records the passes it went through, so
``create_model(weights=...)`` reloads it from safetensors alone, with no pickled modules.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from effnet.configs import checked_fields, plain
from effnet.errors import EffnetError
from effnet.schemas import ModelStats, PassReport

__all__ = [
    "Pass",
    "PassConfig",
    "PassContext",
    "PassReport",
    "ModelStats",
    "apply_pass",
    "model_stats",
    "get_pass",
    "list_passes",
    "pass_config_from_dict",
    "rebuild_structure",
    "register_pass",
]


@dataclass(frozen=True)
class PassConfig:
    """Base class of pass configs. Subclasses add typed fields with defaults and check them in
    :meth:`validate`; ``pass_name`` ties the config to its pass in the registry."""

    pass_name: ClassVar[str] = ""
    version: ClassVar[int] = 1  # bump when a field's meaning changes

    def __post_init__(self) -> None:
        problems = self.validate()
        if problems:
            raise EffnetError(f"invalid {self.pass_name} settings: " + "; ".join(problems))

    def validate(self) -> list[str]:
        """What is wrong with these settings (empty when they are usable)."""
        return []

    def to_dict(self) -> dict[str, Any]:
        """``{"pass": name, "version": n, **fields}``: what recipes and saved models record."""
        return {"pass": self.pass_name, "version": self.version, **plain(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "recipe") -> PassConfig:
        """The inverse of :meth:`to_dict`; ``pass`` and ``version`` may be omitted."""
        values = dict(data)
        name = values.pop("pass", cls.pass_name)
        version = values.pop("version", cls.version)
        if name != cls.pass_name:
            raise EffnetError(f"{source}: settings for pass {name!r} given to {cls.pass_name!r}")
        if not isinstance(version, int) or isinstance(version, bool) or version > cls.version:
            raise EffnetError(
                f"{source}: {cls.pass_name} settings of version {version!r} are newer than this effnet "
                f"understands (up to {cls.version}); upgrade effnet"
            )
        return cls(**checked_fields(cls, values, f"{source}: {cls.pass_name}"))


@dataclass
class PassContext:
    """What a pass may need beyond the model: the input size, a device, data for calibration."""

    img_size: int | None = None  # default: the model's preprocessing input size
    in_chans: int = 3
    device: str | torch.device = "cpu"
    data: Any = None  # e.g. a DataLoader of calibration images, for passes that need one

    def example_input(self, model: nn.Module) -> torch.Tensor:
        size = self.img_size or _input_size(model)
        return torch.zeros(1, self.in_chans, size, size, device=_device_of(model))


def model_stats(model: nn.Module) -> ModelStats:
    """Parameters, non-zero parameters and tensor bytes of ``model``."""
    if callable(getattr(model, "compression_stats", None)):  # a model that is not PyTorch tensors (a quantized file)
        return model.compression_stats()
    state = model.state_dict()
    return ModelStats(
        params=sum(p.numel() for p in model.parameters()),
        nonzero_params=sum(int(torch.count_nonzero(p)) for p in model.parameters()),
        size_bytes=sum(t.numel() * t.element_size() for t in state.values()),
    )


class Pass:
    """A compression technique. Subclasses set ``name``, ``config_type`` and implement :meth:`run`;
    structural passes also implement :meth:`rebuild`."""

    name: ClassVar[str] = ""
    config_type: ClassVar[type[PassConfig]] = PassConfig
    description: ClassVar[str] = ""
    # True when the output's structure is not described by its architecture config and must be
    # rebuilt by :meth:`rebuild` when a saved model is loaded.
    structural: ClassVar[bool] = False

    def unsupported(self, model: nn.Module) -> str | None:
        """Why this pass cannot handle ``model`` (None when it can); checked before anything runs."""
        return None

    def resolve(self, model: nn.Module, config: PassConfig, context: PassContext) -> PassConfig:
        """The config with its defaults made explicit for this model (what the report and the
        saved model record, so a rebuild does not depend on the context)."""
        return config

    def run(self, model: nn.Module, config: PassConfig, context: PassContext) -> tuple[nn.Module, dict[str, Any]]:
        """Transform ``model`` (a private copy: changing it in place is fine); return it and details."""
        raise NotImplementedError

    def rebuild(self, model: nn.Module, config: PassConfig) -> nn.Module:
        """Give a freshly built network the structure :meth:`run` leaves (weights do not matter)."""
        return model


_REGISTRY: dict[str, Pass] = {}


def register_pass(cls: type[Pass]) -> type[Pass]:
    """Class decorator: make a :class:`Pass` available by its name."""
    if not cls.name or cls.config_type.pass_name != cls.name:
        raise TypeError(f"{cls.__name__}: name and config_type.pass_name must be set and equal")
    if cls.name in _REGISTRY:
        raise TypeError(f"a pass named {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls()
    return cls


def list_passes() -> list[str]:
    """Names of the registered passes."""
    return sorted(_REGISTRY)


def get_pass(name: str) -> Pass:
    if name not in _REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise EffnetError(f"unknown pass {name!r}; {hint}known passes: {', '.join(list_passes())}")
    return _REGISTRY[name]


def pass_config_from_dict(data: dict[str, Any], source: str = "recipe") -> PassConfig:
    """The config a ``{"pass": name, ...}`` mapping describes (e.g. one step of a YAML recipe)."""
    if not isinstance(data, dict) or not isinstance(data.get("pass"), str):
        raise EffnetError(f"{source}: a pass is a mapping with a 'pass' name, got {data!r:.80}")
    return get_pass(data["pass"]).config_type.from_dict(data, source)


def apply_pass(
    model: nn.Module,
    config: PassConfig | str | dict[str, Any],
    context: PassContext | None = None,
    **settings: Any,
) -> tuple[nn.Module, PassReport]:
    """Run one pass on ``model``; returns ``(new_model, report)`` and leaves ``model`` untouched.

    ``config`` is a pass config, a pass name (then ``settings`` are its fields) or a
    ``{"pass": name, ...}`` mapping.

    >>> import effnet
    >>> folded, report = apply_pass(effnet.create_model("efficientnet_lite0"), "fold_batchnorm")
    >>> report.details["folded"]
    49
    """
    if isinstance(config, str):
        config = get_pass(config).config_type(**settings)
    elif isinstance(config, dict):
        config = pass_config_from_dict({**config, **settings})
    elif settings:
        config = dataclasses.replace(config, **settings)
    transform = get_pass(config.pass_name)
    reason = transform.unsupported(model)
    if reason:
        raise EffnetError(f"{config.pass_name} cannot handle this model: {reason}")
    context = context or PassContext()
    config = transform.resolve(model, config, context)
    started = time.monotonic()
    before = model_stats(model)
    work = copy.deepcopy(model)
    result, details = transform.run(work, config, context)
    history = list(getattr(model, "effnet_passes", []))
    if transform.structural:
        history.append(config.to_dict())
    result.effnet_passes = history
    report = PassReport(
        name=config.pass_name,
        config=config.to_dict(),
        before=before,
        after=model_stats(result),
        seconds=time.monotonic() - started,
        details=plain(details),
    )
    return result, report


def rebuild_structure(model: nn.Module, passes: list[dict[str, Any]], source: str = "checkpoint") -> nn.Module:
    """Re-apply the structural passes a saved model records, on a freshly built network."""
    for data in passes:
        config = pass_config_from_dict(data, source)
        model = get_pass(config.pass_name).rebuild(model, config)
    model.effnet_passes = list(passes)
    return model


def _input_size(model: nn.Module) -> int:
    from effnet.sizes import resolve_input_size

    return resolve_input_size(model)


def _device_of(model: nn.Module) -> torch.device:
    first: Callable[[], Any] = lambda: next(model.parameters()).device  # noqa: E731
    try:
        return first()
    except StopIteration:
        return torch.device("cpu")
