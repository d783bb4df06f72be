"""Classifying image files with a pretrained (or fine-tuned) EfficientNet."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from effnet.data.images import ImageError, eval_transform, find_images, load_image
from effnet.devices import resolve_device
from effnet.errors import EffnetError, out_of_memory_message
from effnet.weights.specs import Preprocessing

__all__ = ["ImageResult", "Prediction", "classify", "load_classifier", "predict"]


@dataclass
class Prediction:
    index: int
    label: str
    prob: float


@dataclass
class ImageResult:
    """What happened to one input: its top-k predictions, or the one-line reason it failed."""

    image: str
    predictions: list[Prediction] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict:
        out = {"image": self.image, "predictions": [asdict(p) for p in self.predictions]}
        if self.error is not None:
            out["error"] = self.error
        return out


@torch.inference_mode()
def classify(
    model: nn.Module,
    inputs: Iterable[str | os.PathLike[str]],
    topk: int = 5,
    batch_size: int = 16,
    device: str | torch.device = "auto",
    preprocessing: Preprocessing | None = None,
    classes: Sequence[str] | None = None,
) -> list[ImageResult]:
    """Top-k predictions for image files and folders; unreadable files get an error, not an exception.

    Preprocessing and class names default to the ones the model's weights came with.
    """
    if topk < 1:
        raise EffnetError(f"topk must be at least 1, got {topk}")
    if batch_size < 1:
        raise EffnetError(f"batch size must be at least 1, got {batch_size}")
    meta = getattr(model, "pretrained_meta", {}) or {}
    if preprocessing is None:
        preprocessing = Preprocessing.from_dict(meta["preprocessing"]) if "preprocessing" in meta else None
    if preprocessing is None:
        raise EffnetError("no preprocessing known for this model; pass preprocessing=Preprocessing(...)")
    classes = list(classes or meta.get("classes") or [])
    dev = resolve_device(device)
    model = model.to(dev).eval()
    transform = eval_transform(preprocessing)

    results: list[ImageResult] = []
    pending: list[tuple[ImageResult, torch.Tensor]] = []

    def flush() -> None:
        if not pending:
            return
        batch = torch.stack([t for _, t in pending]).to(dev)
        try:
            probs = model(batch).float().softmax(dim=1)
        except torch.cuda.OutOfMemoryError:  # torch.OutOfMemoryError since torch 2.5
            raise EffnetError(out_of_memory_message(len(pending), dev)) from None
        k = min(topk, probs.shape[1])
        top_p, top_i = probs.topk(k, dim=1)
        for (result, _), ps, ix in zip(pending, top_p.tolist(), top_i.tolist(), strict=True):
            result.predictions = [
                Prediction(index=i, label=classes[i] if i < len(classes) else str(i), prob=p)
                for p, i in zip(ps, ix, strict=True)
            ]
        pending.clear()

    for path, problem in find_images(inputs):
        result = ImageResult(image=str(path), error=problem)
        results.append(result)
        if problem is not None:
            continue
        try:
            pending.append((result, transform(load_image(path))))
        except ImageError as exc:
            result.error = str(exc)
            continue
        if len(pending) >= batch_size:
            flush()
    flush()
    return results


def load_classifier(
    model: str | None, weights: str | os.PathLike[str], device: str | torch.device = "auto"
) -> nn.Module:
    """The model ``effnet predict --model --weights`` names: a checkpoint or named weights, or an exported ONNX file.

    An ``.onnx`` file (as ``effnet export`` writes it) runs in ONNX Runtime with the
    preprocessing and class names recorded in it; ``model`` is then not needed.
    """
    if Path(weights).suffix.lower() == ".onnx":
        from effnet.export.onnx_module import OnnxModule

        dev = resolve_device(device)
        return OnnxModule(weights, device="cuda" if dev.type == "cuda" else "cpu")
    from effnet.factory import load_model

    return load_model(model, weights)


def predict(
    inputs: Iterable[str | os.PathLike[str]],
    model: str = "efficientnet_lite0",
    weights: str | os.PathLike[str] = "imagenet",
    topk: int = 5,
    batch_size: int = 16,
    device: str = "auto",
) -> list[ImageResult]:
    """Build ``model`` with ``weights`` (or load an exported ``.onnx`` file) and classify ``inputs``.

    Example: ``predict(["cat.jpg"])[0].predictions[0].label`` gives ``'tabby'`` for a tabby.
    """
    net = load_classifier(model, weights, device)
    return classify(net, [Path(p) for p in inputs], topk=topk, batch_size=batch_size, device=device)
