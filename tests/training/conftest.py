from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def make_image_folder(root: Path, classes: int = 3, per_class: int = 8, size: int = 24, seed: int = 0) -> Path:
    """A tiny learnable data set: each class has its own colour plus noise."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        base = np.zeros(3)
        base[c % 3] = 200
        for i in range(per_class):
            pixels = np.clip(base + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "data")


def tiny_recipe(data: Path, out: Path, **changes) -> dict:
    """A recipe small enough for a 2-core CPU: Lite0 at 32 px, two short epochs."""
    recipe = {
        "model": "efficientnet_lite0",
        "data": str(data),
        "out": str(out),
        "epochs": 2,
        "batch_size": 8,
        "img_size": 32,
        "val_split": 0.25,
        "workers": 0,
        "progress": False,
        "tensorboard": False,
        "augment": "none",
        "warmup_epochs": 0.0,
    }
    recipe.update(changes)
    return recipe
