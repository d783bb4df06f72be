"""``effnet list``: the registered models, the torchvision baselines, and their named weights."""

from __future__ import annotations

import argparse

from effnet.cli._common import print_json, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list models, baselines and pretrained weights", description=__doc__)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Names only: no torch import, so the listing answers at once.
    from effnet.models.baselines import BASELINES
    from effnet.models.config import MODEL_CONFIGS
    from effnet.weights.specs import BASELINE_WEIGHT_TAG, WEIGHTS

    rows = []
    for name, cfg in MODEL_CONFIGS.items():
        tags = [s.tag for s in WEIGHTS.values() if s.arch == name]
        rows.append({"model": name, "resolution": cfg.resolution, "weights": tags, "baseline": False})
    for name, baseline in BASELINES.items():
        rows.append(
            {"model": name, "resolution": baseline.resolution, "weights": [BASELINE_WEIGHT_TAG], "baseline": True}
        )
    if args.json:
        print_json(rows)
    else:
        body = [
            [
                r["model"],
                "torchvision baseline" if r["baseline"] else "efficientnet",
                str(r["resolution"]),
                ", ".join(r["weights"]) or "-",
            ]
            for r in rows
        ]
        print(table(body, ["model", "family", "resolution", "weights (first is 'imagenet')"]))
    return 0
