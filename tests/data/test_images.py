"""A bad-input corpus, generated here, against the image loader."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile
from tests.corpus import BAD_REASONS, write_bad_files, write_exif_upright, write_odd_images

from effnet.data.images import ImageError, eval_transform, find_images, load_image
from effnet.weights.specs import Preprocessing


@pytest.fixture
def photo(tmp_path):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
    path = tmp_path / "photo.jpg"
    img.save(path, quality=90)
    return path


@pytest.mark.parametrize("kind", sorted(BAD_REASONS))
def test_bad_files_are_refused_with_one_line_naming_them(tmp_path, kind):
    """Zero-byte, truncated, random-byte and decompression-bomb files, from the shared corpus."""
    path = write_bad_files(tmp_path)[kind]
    with pytest.raises(ImageError) as exc:
        load_image(path)
    message = str(exc.value)
    assert message.startswith(f"{path}: ") and BAD_REASONS[kind] in message and "\n" not in message


def test_decompression_bomb_is_refused_without_decoding(tmp_path, monkeypatch):
    path = write_bad_files(tmp_path)["bomb"]
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("the bomb was decoded"))
    with pytest.raises(ImageError, match="too large"):
        load_image(path)


@pytest.mark.parametrize("kind", ["cmyk", "gray16", "palette", "rgba", "gray", "animated", "exif_rotated"])
def test_odd_images_from_the_corpus_load_as_rgb(tmp_path, kind):
    odd = write_odd_images(tmp_path)
    out = load_image(odd[kind])
    assert out.mode == "RGB" and out.size == ((30, 40) if kind == "exif_rotated" else (40, 30))
    if kind == "gray16":  # 16-bit gray is scaled to 8 bits (the 8-bit copy's values), not clipped to white
        diff = np.asarray(out, dtype=int) - np.asarray(load_image(odd["gray"]), dtype=int)
        assert np.abs(diff).max() <= 1


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
    with Image.open(path) as first:
        assert np.array_equal(np.asarray(load_image(path)), np.asarray(first.convert("RGB")))


def test_exif_orientation_is_respected(tmp_path):
    rotated = write_odd_images(tmp_path)["exif_rotated"]
    upright = write_exif_upright(rotated, tmp_path / "upright.png")
    out = load_image(rotated)
    assert out.size == (30, 40)
    assert np.array_equal(np.asarray(out), np.asarray(Image.open(upright)))  # turned, not just resized


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
