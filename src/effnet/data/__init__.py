"""Data: image loading, folders/CSV/built-in datasets, evaluation transforms.

Names are imported on first use, so importing one light module of this package (e.g. the
architecture table) does not import PyTorch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "DataSplits": "effnet.data.datasets",
    "ImageArrayDataset": "effnet.data.datasets",
    "ImageError": "effnet.data.images",
    "ImageFileDataset": "effnet.data.datasets",
    "eval_transform": "effnet.data.images",
    "find_images": "effnet.data.images",
    "load_data": "effnet.data.datasets",
    "load_image": "effnet.data.images",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
