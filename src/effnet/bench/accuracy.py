"""Top-1 accuracy on an ImageFolder-style directory (``DIR/<class>/<image>``) for ``bench --data``.

Images are read with effnet's safe loader and transformed as the model's weights ask
(:func:`effnet.data.images.eval_transform`). A class folder maps to a model output by, in
order: its name as an output index (``DIR/281/``), its name among the model's class names
(``DIR/tabby/``), or, when there are exactly as many folders as outputs, its sorted position,
which is how ``torchvision.datasets.ImageFolder`` numbers classes when training and how
ImageNet's ``n01440764``-style folders line up with the 1000 outputs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torchvision.datasets import ImageFolder

from effnet.data.images import IMAGE_SUFFIXES, ImageError, eval_transform, load_image
from effnet.errors import EffnetError
from effnet.weights.specs import Preprocessing


def open_image_folder(root: str | os.PathLike[str], preprocessing: Preprocessing | None = None) -> ImageFolder:
    """An ``ImageFolder`` over ``root`` with effnet's loader, or :class:`EffnetError` if ``root`` is not one."""
    path = Path(root)
    if not path.is_dir():
        raise EffnetError(f"--data {path}: expected a directory of class folders (DIR/<class>/*.jpg)")
    try:
        dataset = ImageFolder(
            str(path),
            loader=load_image,
            transform=eval_transform(preprocessing) if preprocessing else None,
            is_valid_file=lambda f: Path(f).suffix.lower() in IMAGE_SUFFIXES,
            allow_empty=True,  # a class without images still holds its place in the numbering
        )
    except FileNotFoundError as exc:
        raise EffnetError(
            f"--data {path} is not an ImageFolder-style directory (DIR/<class>/*.jpg): {str(exc).strip()[:120]}"
        ) from None
    if not dataset.samples:
        raise EffnetError(f"--data {path}: its class folders hold no images ({' '.join(sorted(IMAGE_SUFFIXES))})")
    return dataset


def scaled_preprocessing(pre: Preprocessing, img_size: int) -> Preprocessing:
    """``pre`` for another crop size, keeping its resize-to-crop ratio."""
    if img_size == pre.input_size:
        return pre
    resize = int(round(pre.resize_size * img_size / pre.input_size))
    return Preprocessing(img_size, resize, pre.interpolation, pre.mean, pre.std)


def class_to_output(folders: Sequence[str], model_classes: Sequence[str] | None, num_outputs: int) -> list[int]:
    """The model output each class folder corresponds to (see the module docstring for the rules)."""
    if all(f.isdigit() for f in folders) and all(int(f) < num_outputs for f in folders):
        return [int(f) for f in folders]
    if model_classes and all(f in model_classes for f in folders):
        index = {name: i for i, name in enumerate(model_classes)}
        return [index[f] for f in folders]
    if len(folders) == num_outputs:
        return list(range(num_outputs))
    raise EffnetError(
        f"cannot match {len(folders)} class folders to the model's {num_outputs} outputs: name the folders "
        "by output index (0, 1, ...) or class name, or give one folder per output"
    )


@dataclass
class Accuracy:
    """Top-1 over the readable images of a folder, and the one-line reasons the others were skipped."""

    top1: float  # percent
    images: int
    skipped: list[str] = field(default_factory=list)


def top1_accuracy(
    predict: Callable[[torch.Tensor], torch.Tensor],
    root: str | os.PathLike[str],
    preprocessing: Preprocessing,
    model_classes: Sequence[str] | None = None,
    batch_size: int = 16,
) -> Accuracy:
    """Percentage of images in ``root`` whose highest-scoring output is their folder's class.

    Unreadable images (empty, truncated, not images) are skipped and listed, as ``effnet eval``
    does; only a folder with no readable image at all is an error.
    """
    dataset = open_image_folder(root, preprocessing)
    mapping: torch.Tensor | None = None
    correct = total = 0
    skipped: list[str] = []
    images: list[torch.Tensor] = []
    labels: list[int] = []

    def score_batch() -> None:
        nonlocal mapping, correct, total
        scores = predict(torch.stack(images))
        if scores.dim() != 2:
            raise EffnetError(f"expected class scores of shape (batch, classes), got {list(scores.shape)}")
        if mapping is None:
            mapping = torch.tensor(class_to_output(dataset.classes, model_classes, scores.shape[1]))
        correct += int((scores.argmax(dim=1) == mapping[torch.tensor(labels)]).sum())
        total += len(labels)
        images.clear()
        labels.clear()

    for path, label in dataset.samples:
        try:
            images.append(dataset.transform(load_image(path)))
        except ImageError as exc:
            skipped.append(str(exc))
            continue
        labels.append(label)
        if len(images) == batch_size:
            score_batch()
    if images:
        score_batch()
    if total == 0:
        raise EffnetError(f"--data {root}: none of its {len(skipped)} images could be read ({skipped[0]})")
    return Accuracy(100.0 * correct / total, total, skipped)
