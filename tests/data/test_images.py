"""A bad-input corpus, generated here, against the image loader."""

import os
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from effnet.data.images import ImageError, eval_transform, find_images, load_image
from effnet.weights.specs import Preprocessing


def png_claiming_size(path, width, height):
    """A tiny PNG whose header claims width x height (a decompression bomb's calling card)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture
def photo(tmp_path):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
    path = tmp_path / "photo.jpg"
    img.save(path, quality=90)
    return path


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.jpg").touch()
    with pytest.raises(ImageError, match="empty file"):
        load_image(tmp_path / "empty.jpg")


def test_truncated_jpeg(photo):
    data = photo.read_bytes()
    photo.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageError, match="truncated"):
        load_image(photo)


def test_random_bytes_with_image_extension(tmp_path):
    path = tmp_path / "noise.png"
    path.write_bytes(os.urandom(2048))
    with pytest.raises(ImageError, match="not an image"):
        load_image(path)


def test_decompression_bomb_is_refused_without_decoding(tmp_path):
    path = png_claiming_size(tmp_path / "bomb.png", 100_000, 100_000)
    with pytest.raises(ImageError, match="too large"):
        load_image(path)


@pytest.mark.parametrize("mode", ["CMYK", "L", "LA", "P", "RGBA", "I;16", "1", "F"])
def test_unusual_modes_become_rgb(tmp_path, mode):
    base = Image.new("RGB", (30, 20), (200, 100, 50))
    if mode == "I;16":
        img = Image.fromarray(np.full((20, 30), 40000, dtype=np.uint16))
        suffix = ".png"
    elif mode == "F":
        img = base.convert("F")
        suffix = ".tif"
    else:
        img = base.convert(mode)
        suffix = ".tif" if mode == "CMYK" else ".png"
    path = tmp_path / f"img{suffix}"
    img.save(path)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (30, 20)
    if mode == "I;16":  # 16-bit gray is scaled to 8 bits, not clipped to white
        assert 150 < out.getpixel((0, 0))[0] < 160


def test_rgba_transparency_is_composited_on_white(tmp_path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(path)
    assert load_image(path).getpixel((0, 0)) == (255, 255, 255)


def test_animated_gif_uses_the_first_frame(tmp_path):
    frames = [Image.new("P", (16, 16), color) for color in (1, 2, 3)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert load_image(path).size == (16, 16)


def test_exif_orientation_is_respected(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif)
    assert load_image(path).size == (20, 40)


def test_find_images_keeps_input_order_and_reports_problems(tmp_path, photo):
    empty_dir = tmp_path / "nothing"
    empty_dir.mkdir()
    (empty_dir / "notes.txt").write_text("hi")
    found = find_images([tmp_path / "missing.jpg", photo, empty_dir])
    assert [p.name for p, _ in found] == ["missing.jpg", "photo.jpg", "nothing"]
    assert [problem is None for _, problem in found] == [False, True, False]
    assert "no images" in found[2][1]


def test_eval_transform_shape_and_normalisation(photo):
    pre = Preprocessing(input_size=32, resize_size=36, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    x = eval_transform(pre)(load_image(photo))
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert -1.0 <= x.min() and x.max() <= 1.0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=4096), st.sampled_from([".jpg", ".png", ".gif", ".bmp", ".webp", ".tif"]))
def test_arbitrary_bytes_never_crash(tmp_path, data, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    try:
        img = load_image(path)
    except ImageError as exc:
        assert str(exc).startswith(str(path)) and "\n" not in str(exc)
    else:
        assert img.mode == "RGB"
