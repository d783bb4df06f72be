"""Input sizes: one set of limits and one way to tell what size a model expects.

Every flag (``--img-size``), recipe field, pass setting and checkpoint record goes through
:func:`check_input_size`; every command that needs a model's size asks :func:`resolve_input_size`.
"""

from __future__ import annotations

from typing import Any

from effnet.errors import EffnetError

__all__ = ["MAX_INPUT_SIZE", "MIN_INPUT_SIZE", "check_input_size", "input_size_problem", "resolve_input_size"]

# EfficientNet halves its input five times; at 8 px the last feature map is still 1x1.
MIN_INPUT_SIZE = 8
# The largest side effnet accepts (B7 uses 600 px). One 2048 px image already takes 980 MiB at
# peak in B0's inference (`effnet bench efficientnet_b0 --img-size 2048`); `--img-size 30000` had
# the kernel kill training at 23 GB.
MAX_INPUT_SIZE = 2048


def input_size_problem(value: Any, name: str = "image size") -> str | None:
    """Why ``value`` is not a usable input side (None when it is)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{name} must be a whole number of pixels, got {value!r}"
    if not MIN_INPUT_SIZE <= value <= MAX_INPUT_SIZE:
        return f"{name} must be between {MIN_INPUT_SIZE} and {MAX_INPUT_SIZE} pixels, got {value}"
    return None


def check_input_size(value: Any, name: str = "image size") -> int:
    """``value`` if it is a usable input side; otherwise a one-line :class:`EffnetError`.

    >>> check_input_size(224)
    224
    """
    problem = input_size_problem(value, name)
    if problem:
        raise EffnetError(problem)
    return int(value)


def resolve_input_size(model: Any, requested: int | None = None) -> int:
    """The side to feed ``model``: ``requested``, else its weights' preprocessing, else its config's
    resolution; a model that records neither needs ``requested`` (``--img-size``)."""
    if requested:
        return check_input_size(requested)
    meta = getattr(model, "pretrained_meta", None) or {}
    size = (meta.get("preprocessing") or {}).get("input_size")
    if not size:
        size = getattr(getattr(model, "config", None), "resolution", None)
    if not size:
        raise EffnetError("cannot tell the model's input size; pass img_size (--img-size)")
    return check_input_size(int(size))
