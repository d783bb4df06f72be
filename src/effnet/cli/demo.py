"""``effnet demo``: classify sample photos with pretrained EfficientNet-Lite0, nothing to prepare."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from effnet.cli.predict import format_results
from effnet.errors import EffnetError
from effnet.models.factory import create_model
from effnet.predict import classify

# Real photographs that scikit-image ships (public domain or CC0, see its data README).
SAMPLE_PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "astronaut.png")


def sample_photos() -> list[Path]:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise EffnetError("the demo needs scikit-image's sample photos: pip install 'effnet[demo]'")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    return [data / name for name in SAMPLE_PHOTOS]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="classify sample photos with pretrained EfficientNet-Lite0", description=__doc__)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    photos = sample_photos()
    model = create_model("efficientnet_lite0", weights="imagenet")
    print(f"efficientnet_lite0 ({model.pretrained_meta['weights']}) on {len(photos)} photos from scikit-image:")
    results = classify(model, photos, topk=3, device=args.device)
    print(format_results(results))
    return 1 if any(r.error for r in results) else 0
