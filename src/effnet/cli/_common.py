"""Helpers shared by the subcommands: argument types and output formatting."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def image_size(text: str) -> int:
    """An input side in pixels: a whole number from 1 to :data:`MAX_INPUT_SIZE`."""
    from effnet.weights.specs import MAX_INPUT_SIZE

    value = positive_int(text)
    if value > MAX_INPUT_SIZE:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_INPUT_SIZE} pixels, got {value}")
    return value


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


def warn(message: str) -> None:
    print(f"effnet: warning: {message}", file=sys.stderr)


def table(rows: list[list[str]], header: list[str]) -> str:
    """A plain left/right aligned text table (numbers right-aligned)."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def fmt(row: list[str]) -> str:
        cells = []
        for i, cell in enumerate(row):
            text = str(cell)
            numeric = text.replace(",", "").replace(".", "", 1).replace("x", "", 1).isdigit()
            cells.append(text.rjust(widths[i]) if numeric else text.ljust(widths[i]))
        return "  ".join(cells).rstrip()

    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)])
