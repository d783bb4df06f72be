"""The ``effnet`` command: one module per subcommand, each a thin layer over the library."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from effnet import __version__
from effnet.cli import bench, demo, evaluate, export, info, listing, predict, report, train
from effnet.errors import EffnetError

COMMANDS = (predict, info, listing, train, evaluate, demo, report, bench, export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="effnet", description="EfficientNet: build, classify, fine-tune, compress, measure, deploy."
    )
    parser.add_argument("--version", action="version", version=f"effnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; user mistakes print one line and exit 1, never a traceback."""
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
