from pathlib import Path

import pytest
from tests.training.conftest import make_image_folder


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "data")


@pytest.fixture(scope="module")
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(data, best.safetensors)``: a model fine-tuned for one epoch on a tiny 3-class folder at 32 px.

    The model is the test module's ``TRAINED_MODEL`` (default ``efficientnet_b0``); one per module.
    """
    import torch

    import effnet

    model = getattr(request.module, "TRAINED_MODEL", "efficientnet_b0")
    root = tmp_path_factory.mktemp("trained")
    data = make_image_folder(root / "data", classes=3, per_class=12, size=32)
    torch.manual_seed(0)
    effnet.train(
        {
            "model": model,
            "data": str(data),
            "out": str(root / "run"),
            "epochs": 1,
            "img_size": 32,
            "batch_size": 8,
            "workers": 0,
            "progress": False,
            "tensorboard": False,
            "augment": "none",
            "val_split": 0.25,
        }  # fmt: skip
    )
    return data, root / "run" / "best.safetensors"
