"""Helpers shared by the subcommands: argument types and output formatting."""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any, NoReturn


def plain(text: str | None) -> str | None:
    """Docstring text for a terminal: ``code`` spans lose their reStructuredText backticks."""
    return None if text is None else re.sub(r"``(.+?)``", r"\1", text)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: a bad flag is named in one line, not under the whole usage.

    Subcommand parsers are made with the same class (argparse's default), so the rule holds for all.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        for key in ("description", "epilog"):
            kwargs[key] = plain(kwargs.get(key))
        super().__init__(*args, **kwargs)

    def parse_args(self, args: Any = None, namespace: Any = None) -> argparse.Namespace:  # type: ignore[override]
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:  # blamed on the subcommand they were given to, whose --help lists its flags
            self._command_parser(parsed).error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def _command_parser(self, parsed: argparse.Namespace) -> Parser:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                chosen = action.choices.get(getattr(parsed, action.dest, None))
                return chosen._command_parser(parsed) if isinstance(chosen, Parser) else self
        return self

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())  # argparse's messages are one line, but make sure
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def image_size(text: str) -> int:
    """An input side in pixels, within effnet's one set of limits (:mod:`effnet.sizes`)."""
    from effnet.sizes import input_size_problem

    value = positive_int(text)
    problem = input_size_problem(value, "the image size")
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


def warn(message: str) -> None:
    print(f"effnet: warning: {message}", file=sys.stderr)


def ms(value: float | None) -> str:
    """A latency cell: milliseconds to two decimals, or ``-`` when not measured."""
    return f"{value:.2f}" if value is not None else "-"


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
