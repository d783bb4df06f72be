import pytest
import torch
from PIL import Image

from effnet.training.transforms import override_preprocessing, resized, train_transform
from effnet.weights.specs import Preprocessing

LITE = Preprocessing(224, 256, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def test_resized_keeps_the_crop_ratio():
    assert resized(LITE, 96) == Preprocessing(96, 110, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert resized(LITE, None) is LITE


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({}, LITE),
        ({"crop_pct": 1.0}, Preprocessing(224, 224, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))),
        ({"crop_pct": 0.5}, Preprocessing(224, 448, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))),
        ({"interpolation": "bilinear"}, Preprocessing(224, 256, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))),
        ({"mean": [0.1, 0.2, 0.3], "std": [1, 2, 3]}, Preprocessing(224, 256, "bicubic", (0.1, 0.2, 0.3), (1, 2, 3))),
    ],
)
def test_overrides_replace_only_what_is_given(kwargs, expected):
    assert override_preprocessing(LITE, **kwargs) == expected


def test_train_transform_output_follows_the_preprocessing():
    pre = override_preprocessing(resized(LITE, 48), crop_pct=1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    image = Image.new("L", (28, 28), 255)  # grayscale, as Fashion-MNIST arrives
    out = train_transform(pre, "flip", (0.8, 1.0))(image.convert("RGB"))
    assert out.shape == (3, 48, 48) and out.dtype == torch.float32
    assert torch.allclose(out, torch.ones_like(out))  # white stays 1.0 with mean 0, std 1
