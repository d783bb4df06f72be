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

from torch import nn

from effnet.factory import load_model as _load


def load_model(spec: str | os.PathLike[str]) -> nn.Module:
    """The model a ``NAME``, ``NAME:WEIGHTS`` or checkpoint-path argument names (see
    :func:`effnet.factory.load_model`, which every command uses).

    >>> load_model("efficientnet_lite0").config.name
    'efficientnet_lite0'
    """
    return _load(os.fspath(spec))
