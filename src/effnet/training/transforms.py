"""Training and evaluation transforms, built from a weight spec's preprocessing.

Augmentations are torchvision's: RandomResizedCrop and horizontal flips, RandAugment
(Cubuk et al., 2020, https://arxiv.org/abs/1909.13719) or TrivialAugment (Müller & Hutter,
2021, https://arxiv.org/abs/2103.10158), and batch-level MixUp/CutMix.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchvision.transforms import v2 as T

from effnet.data.images import eval_transform
from effnet.sizes import check_input_size
from effnet.weights.specs import Preprocessing

_INTERP = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}


def resized(pre: Preprocessing, img_size: int | None) -> Preprocessing:
    """``pre`` at another input size, keeping the crop ratio."""
    if img_size is None or img_size == pre.input_size:
        return pre
    check_input_size(img_size)
    ratio = pre.input_size / pre.resize_size
    return Preprocessing(img_size, int(round(img_size / ratio)), pre.interpolation, pre.mean, pre.std)


def override_preprocessing(
    pre: Preprocessing,
    crop_pct: float | None = None,
    interpolation: str | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
) -> Preprocessing:
    """``pre`` with the user's overrides; ``crop_pct`` sets the resize side to ``input_size / crop_pct``.

    Fashion-MNIST-like images fill their frame, so ``crop_pct=1`` (no centre crop) keeps the
    edges that ImageNet's 87.5% crop would cut away.
    """
    resize = pre.resize_size if crop_pct is None else max(pre.input_size, int(round(pre.input_size / crop_pct)))
    return Preprocessing(
        pre.input_size,
        resize,
        interpolation or pre.interpolation,
        tuple(mean) if mean is not None else pre.mean,
        tuple(std) if std is not None else pre.std,
    )


def train_transform(pre: Preprocessing, augment: str, crop_scale: tuple[float, float]) -> Callable:
    """PIL image -> normalised float tensor with the chosen augmentation.

    ``augment="none"`` is the deterministic evaluation transform (used to check that
    distributed training matches single-process training exactly).
    """
    if augment == "none":
        return eval_transform(pre)
    interpolation = _INTERP.get(pre.interpolation, T.InterpolationMode.BILINEAR)
    steps: list[Callable] = [
        T.PILToTensor(),
        T.RandomResizedCrop(pre.input_size, scale=crop_scale, interpolation=interpolation, antialias=True),
        T.RandomHorizontalFlip(),
    ]
    # The policies' rotations and shears on tensors support nearest and bilinear only.
    if augment == "randaugment":
        steps.append(T.RandAugment(interpolation=T.InterpolationMode.BILINEAR))
    elif augment == "trivialaugment":
        steps.append(T.TrivialAugmentWide(interpolation=T.InterpolationMode.BILINEAR))
    steps += [T.ToDtype(torch.float32, scale=True), T.Normalize(list(pre.mean), list(pre.std))]
    return T.Compose(steps)


def batch_mixer(mixup: float, cutmix: float, num_classes: int) -> Callable | None:
    """MixUp and/or CutMix on whole batches (one of them, chosen at random per batch)."""
    options = []
    if mixup > 0:
        options.append(T.MixUp(alpha=mixup, num_classes=num_classes))
    if cutmix > 0:
        options.append(T.CutMix(alpha=cutmix, num_classes=num_classes))
    if not options:
        return None
    return options[0] if len(options) == 1 else T.RandomChoice(options)
