"""``effnet export --weights W --out FILE``: a checked ONNX, TorchScript or pt2 file for deployment."""

from __future__ import annotations

import argparse
from pathlib import Path

from effnet.cli._common import image_size, positive_int, print_json, warn
from effnet.errors import EffnetError

# effnet.export's names, spelt out so that `effnet export --help` needs no PyTorch import
# (tests/export/test_export_cli.py checks that they match).
FORMATS = ("onnx", "torchscript", "pt2")
DEFAULT_OPSET = 17

_BY_SUFFIX = {".onnx": "onnx", ".pt2": "pt2", ".pt": "torchscript", ".ts": "torchscript", ".torchscript": "torchscript"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a model to ONNX, TorchScript or pt2 and check it",
        description=__doc__,
        epilog="The file is run by its own runtime (ONNX Runtime, torch.jit.load, torch.export.load) and "
        "compared with the eager model; a difference above the tolerance is an error.",
    )
    p.add_argument(
        "--weights",
        required=True,
        metavar="PATH_OR_NAME",
        help="a checkpoint path, NAME:WEIGHTS (e.g. efficientnet_lite0:imagenet) or a bare name (random weights)",
    )
    p.add_argument("--model", help="the architecture, when --weights is a tag such as imagenet")
    p.add_argument("--format", choices=FORMATS, help="default: from the --out suffix (.onnx, .pt, .pt2)")
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the file")
    p.add_argument("--img-size", type=image_size, help="input side the file is made for (default: the model's)")
    p.add_argument(
        "--batch-size", type=positive_int, default=1, help="batch the file is checked at (default: 1; any batch runs)"
    )
    # Files accept any batch size; a fixed batch measured no faster in ONNX Runtime (docs/export.md).
    # The old opt-in flag is still accepted so existing scripts keep working.
    p.add_argument(
        "--dynamic-batch", action="store_true", help="accepted for older scripts: every export takes any batch size"
    )
    p.add_argument("--opset", type=positive_int, default=DEFAULT_OPSET, help=f"ONNX opset (default: {DEFAULT_OPSET})")
    p.add_argument("--no-fuse", action="store_true", help="keep batch norms as separate layers")
    p.add_argument("--atol", type=float, default=1e-4, help="check tolerance: atol + rtol * max|output|")
    p.add_argument("--rtol", type=float, default=1e-4, help="(default: 1e-4 each)")
    p.add_argument("--json", action="store_true", help="print the export report as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from effnet.export import export_model
    from effnet.factory import load_model

    fmt = args.format or _BY_SUFFIX.get(Path(args.out).suffix.lower())
    if fmt is None:
        raise EffnetError(f"cannot tell the format from {args.out!r}; add --format {' / '.join(FORMATS)}")
    # Without --model, --weights is the whole model argument: NAME, NAME:WEIGHTS or a checkpoint.
    model = load_model(args.model, args.weights) if args.model else load_model(args.weights)
    if "weights" not in (getattr(model, "pretrained_meta", None) or {}):
        warn(f"{args.weights} has random weights; use NAME:imagenet or a checkpoint path for a trained model")
    report = export_model(
        model,
        fmt,
        args.out,
        img_size=args.img_size,
        batch_size=args.batch_size,
        dynamic_batch=True,
        opset=args.opset,
        fuse=not args.no_fuse,
        atol=args.atol,
        rtol=args.rtol,
    )
    if args.json:
        print_json(report.to_dict())
        return 0
    shape = "x".join(str(s) for s in report.input_shape)
    batch = "any batch" if report.dynamic_batch else f"batch {report.input_shape[0]}"
    print(f"wrote {report.path} ({report.format}, {report.size_bytes / 2**20:.1f} MB, input {shape}, {batch})")
    print(
        f"checked with {report.checked_with} at batch {', '.join(map(str, report.checked_batch_sizes))}: "
        f"max abs difference {report.max_abs_diff:.2e} (tolerance {report.tolerance:.2e})"
    )
    return 0
