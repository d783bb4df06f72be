"""Turning a command-line model argument into a model: ``NAME``, ``NAME:WEIGHTS`` or a checkpoint path.

One syntax for ``effnet export --weights`` and ``effnet bench``:

- ``efficientnet_b0``: the architecture with random weights (fine for timing, not for accuracy);
- ``efficientnet_b0:imagenet`` or ``efficientnet_lite0:tf_in1k``: named weights
  (``effnet list`` shows them); ``efficientnet_b0:path/to/file.pth`` also works;
- ``path/to/checkpoint``: anything ``effnet.create_model(weights=PATH)`` reads, with the
  architecture taken from the file.

Checkpoints are read by :func:`effnet.create_model`, which never runs code from a file.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from effnet.errors import EffnetError
from effnet.factory import create_model


def load_model(spec: str | os.PathLike[str]) -> nn.Module:
    """The model a ``NAME``, ``NAME:WEIGHTS`` or checkpoint-path argument names.

    >>> load_model("efficientnet_lite0").config.name
    'efficientnet_lite0'
    """
    text = os.fspath(spec).strip()
    if not text:
        raise EffnetError("empty model argument; give a model name, NAME:WEIGHTS or a checkpoint path")
    path = Path(text)
    if path.is_file():
        if path.suffix.lower() == ".onnx":
            raise EffnetError(f"{path} is an ONNX file, not a PyTorch checkpoint; 'effnet bench' can run it")
        return create_model(weights=path)
    if path.is_dir():
        raise EffnetError(f"{path} is a directory, not a checkpoint file")
    name, colon, weights = text.partition(":")
    if not colon and (os.sep in text or "/" in text or "." in path.name):
        raise EffnetError(f"{text}: no such file (and not a model name; run 'effnet list' for the names)")
    if colon and not (name and weights):
        raise EffnetError(f"{text!r}: expected NAME:WEIGHTS, e.g. efficientnet_b0:imagenet")
    return create_model(name, weights=weights or None)
