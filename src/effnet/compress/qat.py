"""Quantization-aware training: fine-tune with int8 rounding simulated, then convert for ONNX Runtime.

Fake quantization (Jacob et al., 2018, "Quantization and Training of Neural Networks for
Efficient Integer-Arithmetic-Only Inference", https://arxiv.org/abs/1712.05877, §3): every
convolution and linear layer computes with its weights and its input rounded to the grid the
int8 model will use, and gradients pass the rounding unchanged (the straight-through estimator),
so the weights learn to sit where rounding costs little. The grids are those of
:mod:`effnet.compress.quantize`'s static int8 files:

- weights: per output channel, symmetric int8 in [-127, 127], ``scale = max|w| / 127``; or,
  with ``per_channel=False``, one such scale for the whole tensor;
- inputs: per tensor, asymmetric uint8 in [0, 255] over ``[min(lo, 0), max(hi, 0)]``, with
  ``lo``/``hi`` exponential moving averages of each training batch's minimum and maximum.

The ONNX export folds each batch norm into the convolution before it, ``W' = W * g`` with one
factor ``g`` per output channel. Per-channel symmetric rounding commutes with that scaling
(``q(W * g) = q(W) * g``), so fake-quantizing the unfolded weight trains exactly the rounding the
folded file gets, *provided the batch-norm statistics do not move*: :class:`FakeQuantCallback`
keeps every batch norm in eval mode while it trains (Krishnamoorthi, 2018, "Quantizing deep
convolutional networks for efficient inference: A whitepaper", https://arxiv.org/abs/1806.08342,
recommends freezing the statistics when fine-tuning with simulated quantization). One scale per
tensor does not commute with the folding, so per-tensor weights are rounded folded, ``q(W * g) / g``,
with ``g`` from the frozen statistics of the batch norm that follows the layer (the pairs
:func:`effnet.export.fuse.fuse_for_inference` folds).

The layers are changed without renaming anything: parameters, ``state_dict`` and checkpoints
stay those of the plain float network, and the observers' state lives in the callback (saved
with the training state for ``resume``). :func:`remove_fake_quant` restores the plain layers.
Converting is static quantization of the fine-tuned float model (``QuantizeConfig(mode="qat")``).

>>> import effnet, torch
>>> model = effnet.create_model("efficientnet_lite0", num_classes=3)
>>> observers = insert_fake_quant(model)
>>> logits = model.train()(torch.randn(2, 3, 32, 32))
>>> len(observers), observers["classifier"].ready
(50, True)
>>> remove_fake_quant(model) is model and not has_fake_quant(model)
True
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from effnet.errors import EffnetError
from effnet.export.fuse import foldable_norms
from effnet.models.summary import forward_once
from effnet.training.callbacks import Callback

if TYPE_CHECKING:
    from effnet.training.engine import Trainer, TrainResult

__all__ = [
    "ActivationObserver",
    "FakeQuantCallback",
    "fake_quantize_weight",
    "has_fake_quant",
    "insert_fake_quant",
    "remove_fake_quant",
    "weight_scales",
]

WEIGHT_QMAX = 127  # symmetric int8: [-127, 127], as ONNX Runtime quantizes symmetric weights
ACTIVATION_QMIN, ACTIVATION_QMAX = 0, 255  # uint8 activations
_ATTRIBUTE = "_effnet_fake_quant"  # the observer an instrumented layer carries (not a parameter or buffer)
_PER_TENSOR = "_effnet_per_tensor"  # set on layers whose weights take one scale: (their folded batch norm,)


def weight_scales(weight: torch.Tensor, per_channel: bool = True) -> torch.Tensor:
    """One scale per output channel (dim 0), ``max|w| / 127``, or one for the whole tensor (shape ``[1]``);
    1 where the weights are all zero, as ONNX Runtime."""
    flat = weight.detach().abs().flatten(1).float()
    absmax = flat.amax(dim=1) if per_channel else flat.amax().reshape(1)
    scale = absmax / WEIGHT_QMAX
    return torch.where(scale < torch.finfo(torch.float32).tiny, torch.ones_like(scale), scale)


def fake_quantize_weight(
    weight: torch.Tensor, per_channel: bool = True, fold: torch.Tensor | None = None
) -> torch.Tensor:
    """``weight`` rounded to its symmetric int8 grid; the gradient passes straight through.

    Per output channel by default; with ``per_channel=False`` one scale for the tensor, taken
    after scaling output channel ``c`` by ``fold[c]`` (the batch-norm factor the export folds in)
    and divided out again, so the grid is the folded file's.

    >>> w = torch.tensor([[0.5, -1.0, 0.26], [2.0, 0.01, -0.02]])
    >>> q = fake_quantize_weight(w)
    >>> bool(((q / weight_scales(w)[:, None]) % 1 == 0).all()), q[0, 1].item()
    (True, -1.0)
    >>> (fake_quantize_weight(w, per_channel=False) * 127 / 2).tolist()  # one step, 2/127, for both rows
    [[32.0, -64.0, 17.0], [127.0, 1.0, -1.0]]
    """
    if per_channel:
        scale = weight_scales(weight)
        zero = torch.zeros_like(scale, dtype=torch.int32)
        quantized = torch.fake_quantize_per_channel_affine(
            weight.float(), scale, zero, 0, -WEIGHT_QMAX, WEIGHT_QMAX
        )  # fmt: skip
        return quantized.to(weight.dtype)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    factor = None
    if fold is not None:  # a zero factor (a dead channel) is left out of the scaling
        factor = torch.where(fold.abs() < torch.finfo(torch.float32).tiny, torch.ones_like(fold), fold)
        factor = factor.float().reshape(shape)
    scaled = weight.float() if factor is None else weight.float() * factor
    scale = weight_scales(scaled, per_channel=False)
    quantized = torch.fake_quantize_per_tensor_affine(
        scaled, scale, torch.zeros(1, dtype=torch.int32, device=scale.device), -WEIGHT_QMAX, WEIGHT_QMAX
    )
    return (quantized if factor is None else quantized / factor).to(weight.dtype)


def _fold_factor(norm: nn.Module | None) -> torch.Tensor | None:
    """The per-channel factor ``gamma / sqrt(var + eps)`` that folding ``norm`` multiplies the weights by."""
    if norm is None:
        return None
    gamma = norm.weight if norm.weight is not None else torch.ones_like(norm.running_var)
    return gamma / torch.sqrt(norm.running_var + norm.eps)


class ActivationObserver:
    """Running min/max of a layer's input and the uint8 grid they give.

    ``momentum`` weighs each new training batch: ``lo <- (1 - m) lo + m min(batch)`` (the first
    batch sets the range).
    """

    def __init__(self, momentum: float = 0.01) -> None:
        if not 0.0 < momentum <= 1.0:
            raise EffnetError(f"observer momentum must be in (0, 1], got {momentum}")
        self.momentum = momentum
        self.range: torch.Tensor | None = None  # [lo, hi], float32

    @property
    def ready(self) -> bool:
        return self.range is not None

    def observe(self, x: torch.Tensor) -> None:
        lo, hi = x.detach().float().aminmax()
        batch = torch.stack([lo, hi])
        if self.range is None:
            self.range = batch
        else:
            self.range = torch.lerp(self.range.to(batch.device), batch, self.momentum)

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scale, zero_point)`` as ONNX Runtime computes them for a uint8 tensor of this range."""
        if self.range is None:
            raise EffnetError("the observer has seen no data yet")
        lo = torch.clamp(self.range[:1], max=0.0)
        hi = torch.clamp(self.range[1:], min=0.0)
        scale = (hi - lo) / (ACTIVATION_QMAX - ACTIVATION_QMIN)
        empty = scale < torch.finfo(torch.float32).tiny  # an all-zero input: scale 1, zero point 0
        scale = torch.where(empty, torch.ones_like(scale), scale)
        zero = torch.round(ACTIVATION_QMIN - lo / scale).clamp(ACTIVATION_QMIN, ACTIVATION_QMAX)
        return scale, torch.where(empty, torch.zeros_like(zero), zero).to(torch.int32)

    def fake_quantize(self, x: torch.Tensor, update: bool) -> torch.Tensor:
        """``x`` rounded to the uint8 grid (after observing it when ``update`` or before the first batch)."""
        if update or self.range is None:
            self.observe(x)
        scale, zero = self.qparams()
        quantized = torch.fake_quantize_per_tensor_affine(x.float(), scale, zero, ACTIVATION_QMIN, ACTIVATION_QMAX)
        return quantized.to(x.dtype)

    def state_dict(self) -> dict[str, Any]:
        return {"momentum": self.momentum, "range": None if self.range is None else self.range.detach().cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.momentum = float(state.get("momentum", self.momentum))
        value = state.get("range")
        self.range = None if value is None else torch.as_tensor(value, dtype=torch.float32).clone()


def _fake_quant_conv_forward(
    self: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    # Called by Conv2d.forward (and subclasses, after their own padding) in place of the class's method.
    observer: ActivationObserver = self.__dict__[_ATTRIBUTE]
    x = observer.fake_quantize(x, update=self.training)
    return type(self)._conv_forward(self, x, _rounded_weight(self, weight), bias)


def _fake_quant_linear_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    observer: ActivationObserver = self.__dict__[_ATTRIBUTE]
    x = observer.fake_quantize(x, update=self.training)
    return F.linear(x, _rounded_weight(self, self.weight), self.bias)


def _rounded_weight(module: nn.Module, weight: torch.Tensor) -> torch.Tensor:
    per_tensor = module.__dict__.get(_PER_TENSOR)  # None: per channel; else (the batch norm after it or None,)
    if per_tensor is None:
        return fake_quantize_weight(weight)
    return fake_quantize_weight(weight, per_channel=False, fold=_fold_factor(per_tensor[0]))


def _quantizable(model: nn.Module, skip: Sequence[str] = ()) -> dict[str, nn.Module]:
    kinds = nn.Conv2d | nn.Linear
    return {name: m for name, m in model.named_modules() if isinstance(m, kinds) and name not in skip}


def input_layers(model: nn.Module, img_size: int, in_chans: int = 3) -> list[str]:
    """Names of the convolutions that read the image directly (the stem), found by running ``model``
    once on a blank image: what ``QuantizeConfig.float_stem`` leaves in float in the int8 file."""
    found: list[str] = []
    image = torch.zeros(1, in_chans, img_size, img_size)

    def watch(name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            if args and args[0] is image:
                found.append(name)

        return hook

    convolutions = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    forward_once(model, image, [module.register_forward_pre_hook(watch(name)) for name, module in convolutions])
    return found


def insert_fake_quant(
    model: nn.Module,
    momentum: float = 0.01,
    observers: dict[str, ActivationObserver] | None = None,
    skip: Sequence[str] = (),
    per_channel: bool = True,
) -> dict[str, ActivationObserver]:
    """Make every Conv2d and Linear of ``model`` (in place) compute with fake-quantized weights and inputs.

    Returns the input observers by layer name; pass ``observers`` to share existing ones (an EMA
    copy of the network uses the training copy's ranges). Layers named in ``skip`` stay float.
    ``per_channel=False`` rounds each layer's weights with one scale, as ``QuantizeConfig(per_channel=False)``
    files store them. Names, parameters and ``state_dict`` are unchanged.
    """
    layers = _quantizable(model, skip)
    if not layers:
        raise EffnetError(f"{type(model).__name__} has no convolution or linear layer to quantize")
    if has_fake_quant(model):
        raise EffnetError("the model already computes with fake quantization")
    observers = {} if observers is None else observers
    norms = {} if per_channel else foldable_norms(model)
    for name, module in layers.items():
        observer = observers.setdefault(name, ActivationObserver(momentum))
        module.__dict__[_ATTRIBUTE] = observer
        if not per_channel:
            module.__dict__[_PER_TENSOR] = (norms.get(name),)
        if isinstance(module, nn.Conv2d):
            module.__dict__["_conv_forward"] = types.MethodType(_fake_quant_conv_forward, module)
        else:
            module.__dict__["forward"] = types.MethodType(_fake_quant_linear_forward, module)
    return observers


def remove_fake_quant(model: nn.Module) -> nn.Module:
    """``model`` (in place) with plain float layers again; returned for chaining."""
    for module in model.modules():
        if _ATTRIBUTE in module.__dict__:
            for attribute in (_ATTRIBUTE, _PER_TENSOR, "_conv_forward", "forward"):
                module.__dict__.pop(attribute, None)
    return model


def has_fake_quant(model: nn.Module) -> bool:
    """Whether any layer of ``model`` computes with fake quantization."""
    return any(_ATTRIBUTE in m.__dict__ for m in model.modules())


def _freeze_batchnorm_hook(model: nn.Module, args: Any) -> None:
    # The engine puts the whole model in training mode at every epoch start, after the callbacks'
    # on_epoch_start; re-freezing before each forward keeps the statistics fixed regardless.
    if model.training:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


class FakeQuantCallback(Callback):
    """Quantization-aware fine-tuning through :func:`effnet.fit`.

    On fit start every convolution and linear layer of the trained model (and of its EMA copy)
    gets fake-quantized weights and inputs (:func:`insert_fake_quant`) and the batch norms are
    frozen; on fit end the plain layers come back, so ``result.model`` and every checkpoint the
    run writes are ordinary float networks. The input observers are saved with the training
    state and restored on ``resume``. Validation during the run measures the fake-quantized
    network, a close estimate of the int8 model's accuracy. A run that stops with an exception
    (Ctrl-C) leaves the layers fake-quantized; :meth:`detach` restores them.

    Example::

        callback = FakeQuantCallback()
        result = effnet.fit(model, "photos/", {"out": "runs/qat", "epochs": 1, "lr": 1e-4},
                            callbacks=[callback])
        quantize_model(result.model, "model.onnx", QuantizeConfig(mode="qat"), calibration)
    """

    def __init__(
        self, momentum: float = 0.01, freeze_bn: bool = True, skip: Sequence[str] = (), per_channel: bool = True
    ) -> None:
        if not 0.0 < momentum <= 1.0:
            raise EffnetError(f"observer momentum must be in (0, 1], got {momentum}")
        self.momentum = momentum
        self.freeze_bn = freeze_bn
        self.skip = tuple(skip)  # layers the int8 file keeps in float, e.g. input_layers(model, size)
        self.per_channel = per_channel  # False: one weight scale per layer (QuantizeConfig.per_channel)
        self.observers: dict[str, ActivationObserver] = {}
        self._saved: dict[str, Any] = {}  # observer state loaded on resume, applied on fit start
        self._models: list[nn.Module] = []
        self._hooks: list[Any] = []

    def on_fit_start(self, trainer: Trainer) -> None:
        self.attach(trainer.model, trainer.ema_model)

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        metrics["fake_quant_layers"] = len(self.observers)

    def on_fit_end(self, trainer: Trainer, result: TrainResult) -> None:
        self.detach()

    def attach(self, model: nn.Module, *copies: nn.Module | None) -> None:
        """Fake-quantize ``model`` (and ``copies`` of it, sharing its observers); freeze batch norms."""
        self.detach()
        self.observers = {}
        for target in (model, *copies):
            if target is None:
                continue
            insert_fake_quant(target, self.momentum, self.observers, self.skip, self.per_channel)
            self._models.append(target)
            if self.freeze_bn:
                self._hooks.append(target.register_forward_pre_hook(_freeze_batchnorm_hook))
        for name, state in self._saved.items():
            if name in self.skip:
                continue  # saved by a run that still rounded this layer
            if name not in self.observers:
                raise EffnetError(f"the saved fake-quantization state names layer {name!r}, which the model lacks")
            self.observers[name].load_state_dict(state)
        self._saved = {}

    def detach(self) -> None:
        """Plain float layers again, batch norms no longer held frozen."""
        for hook in self._hooks:
            hook.remove()
        for model in self._models:
            remove_fake_quant(model)
        self._hooks, self._models = [], []

    def state_dict(self) -> dict[str, Any]:
        observers = {name: o.state_dict() for name, o in self.observers.items() if o.ready} or self._saved
        return {"momentum": self.momentum, "per_channel": self.per_channel, "observers": observers} if observers else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("per_channel", True)  # states saved before the option were per channel
        if saved != self.per_channel:
            was, flag = ("per output channel", "without") if saved else ("per tensor (--per-tensor)", "with")
            raise EffnetError(f"the fine-tune being resumed rounded weights {was}; resume it {flag} --per-tensor")
        self.momentum = float(state.get("momentum", self.momentum))
        self._saved = dict(state.get("observers") or {})
        if self.observers:  # already attached: apply at once
            for name, observer_state in self._saved.items():
                self.observers[name].load_state_dict(observer_state)
            self._saved = {}
