"""``effnet report RUN_OR_REPORT... --out report.html``: one self-contained HTML page comparing models."""

from __future__ import annotations

import argparse
from pathlib import Path

from effnet.cli._common import warn


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write an HTML report of training runs and benchmarks",
        description=__doc__,
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="RUN_OR_REPORT",
        help="training run directories (effnet train --out) and 'effnet bench --json' files (auto-detected)",
    )
    p.add_argument("--out", default="report.html", help="the HTML file to write (default: report.html)")
    p.add_argument("--title", default=None, help="the page title (default: effnet report)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from effnet.report import check_output, load_inputs, write_report

    out = Path(args.out)
    inputs = [Path(p) for p in args.inputs]
    check_output(out, inputs)  # before reading anything, so a wrong --out fails fast
    data = load_inputs(inputs)
    for message in data.warnings:
        warn(message)
    write_report(data, out, title=args.title)
    rows, inputs = len(data.rows()), len(data.inputs)
    print(f"wrote {out} ({rows} model row{'s' if rows != 1 else ''} from {inputs} input{'s' if inputs != 1 else ''})")
    return 0
