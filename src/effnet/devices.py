"""Choosing the device a command runs on."""

from __future__ import annotations

import torch

from effnet.errors import EffnetError

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when it is available; asking for CUDA without it is a clear error."""
    text = str(device)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(text)
    except RuntimeError:
        raise EffnetError(f"unknown device {text!r}; use auto, cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EffnetError("device cuda was requested but no CUDA GPU is available; use --device cpu")
    return dev
