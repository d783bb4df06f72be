"""``effnet list``: the registered models and their named weights."""

from __future__ import annotations

import argparse

from effnet.cli._common import print_json, table
from effnet.models.config import MODEL_CONFIGS
from effnet.weights.specs import WEIGHTS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list models and pretrained weights", description=__doc__)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    rows = []
    for name, cfg in MODEL_CONFIGS.items():
        tags = [s.tag for s in WEIGHTS.values() if s.arch == name]
        rows.append({"model": name, "resolution": cfg.resolution, "weights": tags})
    if args.json:
        print_json(rows)
    else:
        body = [[r["model"], str(r["resolution"]), ", ".join(r["weights"]) or "-"] for r in rows]
        print(table(body, ["model", "resolution", "weights (first is 'imagenet')"]))
    return 0
