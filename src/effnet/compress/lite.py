"""The EfficientNet-Lite swap: ReLU6 for SiLU, no squeeze-and-excitation, then a short recovery.

EfficientNet-Lite (the TensorFlow TPU repository's edge models, 2020) removed squeeze-and-
excitation and replaced swish with ReLU6 because both quantize badly and run slowly on integer
hardware: SiLU needs a sigmoid and a multiply per element, and the excitation gate a per-channel
multiply, each one more quantize/dequantize pair in an int8 graph (on ONNX Runtime a B0 keeps
65 ``QLinearSigmoid`` and 65 ``QLinearMul``, and its int8 file runs no faster than float). ReLU6
folds into the convolution before it, and a network without the gates is a plain chain of
convolutions that int8 kernels run end to end.

The swap itself (:class:`LiteSwap`) keeps every convolution and batch norm weight and drops the
excitation layers. Given a few batches of training images it also repairs what it can without
training: each excitation's average gate, per channel, is folded into the projecting convolution
that followed it (the gate is a per-channel scale of that convolution's input), and every batch
norm's running statistics are re-estimated on the swapped network, since ReLU6 feeds each layer
inputs with other statistics than SiLU did. On a B0 trained on Fashion-MNIST that took the swapped
network from 21% to 89% top-1 with no training (the parent: 89.5%; ``docs/quantization.md``). A
short fine-tune with the unswapped model as teacher (Hinton et al., 2015) then recovers the rest;
:func:`swap_and_recover` does both through the training engine. The result is an ordinary
EfficientNet whose config says ``activation="relu6"`` and ``se_channels=0`` per block, so it
saves and reloads like any other.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effnet.compress.base import Pass, PassConfig, PassContext, apply_pass, register_pass
from effnet.compress.prune import _name
from effnet.errors import EffnetError
from effnet.models.efficientnet import EfficientNet

__all__ = ["LiteSwapConfig", "LiteSwap", "swap_and_recover"]


@dataclass(frozen=True)
class LiteSwapConfig(PassConfig):
    """Which of EfficientNet-Lite's two changes to make (both by default)."""

    pass_name = "lite_swap"

    relu6: bool = True  # ReLU6 for SiLU everywhere (stem, blocks, excitation, head)
    remove_se: bool = True  # drop every squeeze-and-excitation layer
    calibration_batches: int = 16  # batches of context data for gate folding and batch-norm statistics
    fold_gates: bool = True  # with data: fold each excitation's average gate into the next convolution
    reestimate_batchnorm: bool = True  # with data: batch-norm statistics measured on the swapped network

    def validate(self) -> list[str]:
        switches = ("relu6", "remove_se", "fold_gates", "reestimate_batchnorm")
        problems = [f"{name} must be true or false" for name in switches if not isinstance(getattr(self, name), bool)]
        if not problems and not (self.relu6 or self.remove_se):
            problems.append("relu6 and remove_se are both off: nothing would change")
        if (
            isinstance(self.calibration_batches, bool)
            or not isinstance(self.calibration_batches, int)
            or (self.calibration_batches < 1)
        ):
            problems.append(
                f"calibration_batches must be a whole number of at least 1, got {self.calibration_batches!r}"
            )
        return problems


@register_pass
class LiteSwap(Pass):
    name = "lite_swap"
    config_type = LiteSwapConfig
    description = "EfficientNet-Lite's changes: ReLU6 for SiLU and no squeeze-excitation (fine-tune afterwards)"

    def unsupported(self, model: nn.Module) -> str | None:
        if not isinstance(model, EfficientNet):
            return f"the swap rebuilds EfficientNets from their config; {_name(model)} is not one"
        if getattr(model, "effnet_passes", None):
            return "swap before folding batch norms or freezing padding"
        if model.config.activation == "relu6" and not any(b.se_channels for b in model.layout.blocks):
            return "it already has ReLU6 and no squeeze-excitation (an EfficientNet-Lite): nothing to swap"
        return None

    def run(self, model: nn.Module, config: PassConfig, context: PassContext) -> tuple[nn.Module, dict[str, Any]]:
        assert isinstance(config, LiteSwapConfig) and isinstance(model, EfficientNet)
        layout = model.layout
        removed = sum(1 for b in layout.blocks if b.se_channels) if config.remove_se else 0
        activation = "relu6" if config.relu6 else model.config.activation
        if activation == model.config.activation and not removed:
            what = "already has ReLU6" if config.relu6 else "has no squeeze-excitation"
            raise EffnetError(f"lite_swap: the model {what}, the only change asked for; nothing to swap")
        blocks = layout.blocks
        if config.remove_se:
            blocks = tuple(dataclasses.replace(b, se_channels=0) for b in blocks)
        new_config = model.config.replace(
            activation=activation,
            layout=dataclasses.replace(layout, blocks=blocks),
            se_ratio=0.0 if config.remove_se else model.config.se_ratio,
        )
        batches = _batches(context.data, config.calibration_batches)
        state = {k: v for k, v in model.state_dict().items() if not (config.remove_se and ".se." in k)}
        folded = 0
        if removed and batches and config.fold_gates:
            for block, gate in _mean_gates(model, batches).items():
                key = f"{block}.project.conv.weight"
                state[key] = state[key] * gate.to(state[key].dtype).view(1, -1, 1, 1)
                folded += 1
        swapped = EfficientNet(new_config, features_only=model.features_only)
        swapped.load_state_dict(state, strict=True)
        if batches and config.reestimate_batchnorm:
            _reestimate_batchnorm(swapped, batches)
        swapped.train(model.training)
        if hasattr(model, "pretrained_meta"):
            swapped.pretrained_meta = copy.deepcopy(model.pretrained_meta)
        details = {
            "activation": f"{model.config.activation} -> {activation}",
            "se_removed": removed,
            "se_params_removed": sum(v.numel() for k, v in model.state_dict().items() if ".se." in k) if removed else 0,
            "gates_folded": folded,
            "batchnorm_images": sum(len(b) for b in batches) if config.reestimate_batchnorm else 0,
        }
        return swapped, details


def _batches(data: Any, limit: int) -> list[torch.Tensor]:
    """Up to ``limit`` image batches from context data (image tensors or ``(images, labels)`` pairs)."""
    batches: list[torch.Tensor] = []
    for item in data if data is not None else ():
        if len(batches) >= limit:
            break
        images = item[0] if isinstance(item, list | tuple) else item
        if len(images) > 1:  # batch norm cannot estimate a variance from one image at 1x1 positions
            batches.append(images)
    return batches


@torch.no_grad()
def _mean_gates(model: EfficientNet, batches: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each squeeze-excitation's gate averaged over the images and positions, per channel, by block path."""
    sums: dict[str, torch.Tensor] = {}
    hooks = []
    for name, module in model.named_modules():
        if name.endswith(".se") and hasattr(module, "scale_activation"):

            def record(_: nn.Module, __: Any, gate: torch.Tensor, block: str = name[: -len(".se")]) -> None:
                sums[block] = sums.get(block, 0) + gate.double().mean((2, 3)).sum(0)

            hooks.append(module.scale_activation.register_forward_hook(record))
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        count = 0
        for images in batches:
            model(images.to(device))
            count += len(images)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return {block: (total / count).float() for block, total in sums.items()}


@torch.no_grad()
def _reestimate_batchnorm(model: nn.Module, batches: list[torch.Tensor]) -> None:
    """Running statistics of every batch norm as the plain average over ``batches`` (the rest in eval mode)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    model.eval()  # dropout and stochastic depth off: the statistics are those of inference
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches
        norm.train()
    device = next(model.parameters()).device
    for images in batches:
        model(images.to(device))
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.eval()


def swap_and_recover(
    weights: str | os.PathLike[str],
    data: str,
    out: str | os.PathLike[str],
    *,
    teacher: str | os.PathLike[str] | None = None,
    config: LiteSwapConfig | None = None,
    epochs: int = 2,
    alpha: float = 0.7,
    temperature: float | None = None,
    **overrides: Any,
) -> Path:
    """Swap the checkpoint ``weights`` and fine-tune it on ``data`` into ``out``; returns the best checkpoint.

    With ``alpha > 0`` the fine-tune distils from ``teacher`` (default: ``weights`` itself, the
    unswapped model). The fine-tune repeats the recipe the checkpoint records (optimizer, learning
    rate, augmentation, crops, regularisation); ``overrides`` replace single training settings
    (``lr``, ``batch_size``, ``img_size``, ``workers``, ``device``, ...). An interrupted run
    continues where it stopped when called again with the same ``out``.
    """
    import effnet
    from effnet.compress.auto import _FAMILY_INHERITED
    from effnet.compress.runner import _INHERITED, _parent_training
    from effnet.factory import load_model, save_model
    from effnet.training.distill import distill

    out = Path(out)
    best = out / "best.safetensors"
    if (out / "summary.json").exists() and best.exists():
        return best
    swapped_path = out / "swapped.safetensors"
    if not swapped_path.exists():
        parent = load_model(None, weights).eval()
        config = config or LiteSwapConfig()
        images = _training_images(parent, data, config.calibration_batches, overrides)
        swapped, report = apply_pass(parent, config, PassContext(data=images))
        details = report.details
        print(f"effnet: lite swap: {details['activation']}, {details['se_removed']} squeeze-excitations removed "
              f"({details['se_params_removed']:,} parameters, {details['gates_folded']} average gates folded into "
              f"the next convolution), batch-norm statistics re-estimated on {details['batchnorm_images']} training "
              f"images; fine-tuning for {epochs} epoch(s)", file=sys.stderr, flush=True)  # fmt: skip
        out.mkdir(parents=True, exist_ok=True)
        save_model(swapped, swapped_path)
    recipe = {
        **_parent_training(weights, _INHERITED + _FAMILY_INHERITED),
        "data": data,
        "out": str(out),
        "epochs": epochs,
        "resume": (out / "config.yaml").exists(),
        "tensorboard": False,
        **{k: v for k, v in overrides.items() if v is not None},
    }
    if alpha:
        distill(teacher or weights, str(swapped_path), recipe=recipe, alpha=alpha, temperature=temperature)
    else:
        effnet.train({"weights": str(swapped_path), **recipe})
    return best


def _training_images(model: nn.Module, data: str, batches: int, settings: dict[str, Any]) -> Any:
    """Shuffled training images prepared as at inference, at the fine-tune's input size: the swap's calibration."""
    from torch.utils.data import DataLoader

    from effnet.data.datasets import load_data
    from effnet.data.images import eval_transform
    from effnet.training.transforms import resized
    from effnet.weights.specs import Preprocessing

    meta = getattr(model, "pretrained_meta", None) or {}
    if "preprocessing" not in meta:
        raise EffnetError("the checkpoint records no preprocessing; swap a checkpoint written by effnet")
    transform = eval_transform(resized(Preprocessing.from_dict(meta["preprocessing"]), settings.get("img_size")))
    seed = settings.get("seed") or 0
    splits = load_data(data, data_dir=settings.get("data_dir"), seed=seed, train_transform=transform,
                       eval_transform=transform, subset=settings.get("subset"))  # fmt: skip
    if list(splits.classes) != list(meta.get("classes") or []):
        raise EffnetError(
            f"the data's classes differ from the checkpoint's ({len(splits.classes)} vs "
            f"{len(meta.get('classes') or [])}); swap with the data the model was trained on"
        )
    if splits.train is None or len(splits.train) == 0:
        raise EffnetError(f"{data} has no training images to fine-tune the swapped model on")
    generator = torch.Generator().manual_seed(seed)
    batch_size = settings.get("batch_size") or 64
    return DataLoader(splits.train, batch_size=batch_size, shuffle=True, generator=generator, num_workers=0)
