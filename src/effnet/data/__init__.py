"""Data: image loading, folders/CSV/built-in datasets, evaluation transforms.

Names are imported on first use, so importing one light module of this package (e.g. the
architecture table) does not import PyTorch.
"""

from __future__ import annotations

from effnet._lazy import lazy_exports

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


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
