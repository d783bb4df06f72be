"""The ``effnet`` command: one module per subcommand, each a thin layer over the library.

The command modules import PyTorch only inside their ``run`` functions, so ``effnet --help``,
``effnet COMMAND --help``, ``effnet list`` and ``effnet --version`` answer without paying for it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from effnet import __version__
from effnet.cli import (
    bench,
    compress,
    demo,
    distill,
    evaluate,
    export,
    info,
    listing,
    predict,
    prune,
    quantize,
    report,
    scale_search,
    train,
)
from effnet.cli._common import Parser
from effnet.errors import EffnetError

COMMANDS = (
    predict,
    info,
    listing,
    train,
    evaluate,
    demo,
    report,
    bench,
    export,
    prune,
    quantize,
    distill,
    compress,
    scale_search,
)


def build_parser() -> Parser:
    parser = Parser(
        prog="effnet",
        description=(
            "EfficientNet image classifiers: build, classify, fine-tune, evaluate, prune, quantize, distill, "
            "measure and export."
        ),
    )
    parser.add_argument("--version", action="version", version=f"effnet {__version__}", help="print the version")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; user mistakes print one line and exit 1 (2 for a bad flag), never a traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except EffnetError as exc:
        print(f"effnet: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("effnet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `effnet predict ... | head`
        return 0


__all__ = ["build_parser", "main"]
