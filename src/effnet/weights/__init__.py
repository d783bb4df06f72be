"""Checkpoints: safe reading, effnet's safetensors format, format detection and key maps, weight specs, downloads.

Names are imported on first use, so importing one light module of this package (e.g. the
architecture table) does not import PyTorch.
"""

from __future__ import annotations

from effnet._lazy import lazy_exports

_WHERE = {
    "Checkpoint": "effnet.weights.io",
    "Preprocessing": "effnet.weights.specs",
    "WeightSpec": "effnet.weights.specs",
    "atomic_write": "effnet.weights.io",
    "cache_dir": "effnet.weights.hub",
    "convert": "effnet.weights.formats",
    "detect_format": "effnet.weights.formats",
    "fetch": "effnet.weights.hub",
    "find_weight_spec": "effnet.weights.specs",
    "get_weight_spec": "effnet.weights.specs",
    "guess_architecture": "effnet.weights.formats",
    "list_weights": "effnet.weights.specs",
    "read_checkpoint": "effnet.weights.io",
    "read_keras": "effnet.weights.keras",
    "read_metadata": "effnet.weights.io",
    "write_checkpoint": "effnet.weights.io",
}

__all__ = sorted(_WHERE)


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
