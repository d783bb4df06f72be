"""Evaluating a saved checkpoint on a dataset: what ``effnet eval`` runs."""

from __future__ import annotations

import os

import torch
from torch.utils.data import ConcatDataset, DataLoader, Subset

from effnet.devices import resolve_device
from effnet.errors import EffnetError, out_of_memory_message
from effnet.factory import load_model
from effnet.training.evaluate import EvalResult, evaluate
from effnet.weights.specs import Preprocessing


def evaluate_checkpoint(
    weights: str | os.PathLike[str],
    data: str,
    model: str | None = None,
    data_dir: str | None = None,
    batch_size: int = 64,
    workers: int = 2,
    device: str = "auto",
    img_size: int | None = None,
    runtime: str = "auto",
    max_images: int | None = None,
) -> EvalResult:
    """Top-1/top-5, loss, per-class accuracy and confusion matrix of a checkpoint on ``data``.

    Built-in datasets are evaluated on their test split, an ImageNet-layout folder on ``val/``,
    and a flat ``DIR/<class>/*`` folder or a CSV on every image in it. The data's class names
    must be the checkpoint's (in any order). Unreadable or missing images are left out and
    listed in the result's ``skipped``. ``runtime`` runs an ONNX file in ``onnxruntime`` or
    ``openvino`` instead of the one its metadata names. ``max_images`` evaluates on that many
    evenly spaced images of the split instead of all of them.
    """
    from effnet.data.datasets import load_data
    from effnet.data.images import eval_transform
    from effnet.training.transforms import resized

    if str(weights).lower().endswith(".onnx"):  # an export or a quantized model: run it in ONNX Runtime
        from effnet.export.onnx_module import OnnxModule

        net: torch.nn.Module = OnnxModule(weights, runtime=runtime)
        device = "cpu"
    else:
        net = load_model(model, weights)
    classes = list(net.pretrained_meta["classes"])
    pre = resized(Preprocessing.from_dict(net.pretrained_meta["preprocessing"]), img_size)
    transform = eval_transform(pre)
    splits = load_data(data, data_dir=data_dir, train_transform=transform, eval_transform=transform)
    if splits.defined_val:
        dataset = splits.val
    else:
        dataset = ConcatDataset([d for d in (splits.train, splits.val) if d is not None])
    if dataset is None or len(dataset) == 0:
        raise EffnetError(f"{data} has no images to evaluate")
    data_classes = list(splits.classes)
    if sorted(data_classes) != sorted(classes):
        missing = sorted(set(data_classes) - set(classes))[:3]
        extra = sorted(set(classes) - set(data_classes))[:3]
        raise EffnetError(
            f"the checkpoint has {len(classes)} classes and {data} has {len(data_classes)}; "
            f"data classes not in the checkpoint: {missing or 'none'}, checkpoint classes not in the data: "
            f"{extra or 'none'}"
        )
    if data_classes != classes:
        dataset = _Relabel(dataset, [classes.index(c) for c in data_classes])
    if max_images is not None and max_images < len(dataset):
        dataset = Subset(dataset, [i * len(dataset) // max_images for i in range(max_images)])
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    dev = resolve_device(device)
    try:
        result = evaluate(net.to(dev), loader, classes, dev)
    except torch.cuda.OutOfMemoryError:  # torch.OutOfMemoryError since torch 2.5
        raise EffnetError(out_of_memory_message(batch_size, dev)) from None
    result.skipped = list(splits.skipped)
    return result


class _Relabel:
    """Map the dataset's class indices onto the checkpoint's order."""

    def __init__(self, dataset, mapping: list[int]) -> None:  # noqa: ANN001
        self.dataset, self.mapping = dataset, mapping

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):  # noqa: ANN204
        image, label = self.dataset[index]
        return image, self.mapping[label]
