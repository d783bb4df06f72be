"""Top-1/top-5 accuracy, loss, per-class accuracy and the confusion matrix on a dataset."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from effnet.schemas import ClassAccuracy, EvalResult

__all__ = ["EvalResult", "evaluate"]


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    classes: list[str],
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> EvalResult:
    """Evaluate ``model`` (put in eval mode) over every batch of ``loader``."""
    was_training = model.training
    model.eval()
    num_classes = len(classes)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    total_loss, top5_hits, n = 0.0, 0, 0
    k = min(5, num_classes)
    for images, targets in loader:
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = targets.to(device)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(images)
        logits = logits.float()
        total_loss += F.cross_entropy(logits, targets, reduction="sum").item()
        top = logits.topk(k, dim=1).indices
        top5_hits += (top == targets[:, None]).any(dim=1).sum().item()
        pred = top[:, 0]
        confusion += torch.bincount((targets * num_classes + pred).cpu(), minlength=num_classes * num_classes).view(
            num_classes, num_classes
        )
        n += targets.numel()
    model.train(was_training)
    correct = confusion.diag()
    per_class_n = confusion.sum(dim=1)
    per_class = [
        ClassAccuracy(
            name=name,
            accuracy=100.0 * correct[i].item() / per_class_n[i].item() if per_class_n[i] else None,
            n=int(per_class_n[i]),
        )
        for i, name in enumerate(classes)
    ]
    return EvalResult(
        top1=100.0 * correct.sum().item() / max(n, 1),
        top5=100.0 * top5_hits / max(n, 1),
        loss=total_loss / max(n, 1),
        n=n,
        per_class=per_class,
        confusion=confusion.tolist(),
    )
