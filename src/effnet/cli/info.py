"""``effnet info NAME``: parameters, FLOPs and the per-stage shape of a model."""

from __future__ import annotations

import argparse

from effnet.cli._common import print_json, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="describe a model's size, cost and stages", description=__doc__)
    p.add_argument("name", help="model name, e.g. efficientnet_b0 (see 'effnet list')")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from effnet.models.summary import model_info

    info = model_info(args.name)
    if args.json:
        print_json(info.to_dict())
        return 0
    print(f"{info.name}")
    print(f"  parameters        {info.params:,}")
    print(f"  FLOPs @ {info.resolution}px     {info.flops / 1e9:.3f} G ({info.macs / 1e9:.3f} G multiply-adds)")
    print(f"  resolution        {info.resolution}x{info.resolution}")
    print(f"  activation        {info.activation}, squeeze-excitation {'on' if info.squeeze_excitation else 'off'}")
    print(f"  stem / head       {info.stem_channels} / {info.head_channels} channels")
    print()
    rows = [
        [
            str(s["stage"]),
            f"{s['kernel']}x{s['kernel']}",
            str(s["stride"]),
            str(s["expand"]),
            str(s["in_channels"]),
            str(s["out_channels"]),
            str(s["repeats"]),
        ]
        for s in info.stages
    ]
    print(table(rows, ["stage", "kernel", "stride", "expand", "in", "out", "repeats"]))
    return 0
