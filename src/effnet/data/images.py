"""Reading images from disk safely, and the evaluation transform a weight spec asks for.

Users point effnet at messy folders: files that are empty, truncated, not images, animated,
CMYK, 16-bit, palette-based, EXIF-rotated or decompression bombs. Every failure becomes an
:class:`ImageError` with one line that names the file and the problem; callers report it
and carry on with the other images.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms import v2 as T

from effnet.errors import EffnetError
from effnet.weights.specs import Preprocessing

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
# Pillow's own bomb limit, made a hard error: a 90-megapixel photo is plausible, 1 gigapixel is not.
MAX_PIXELS = 178_956_970


class ImageError(EffnetError):
    """One image could not be read; the message names the file and why."""


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open an image as 8-bit RGB, honouring EXIF orientation; raise :class:`ImageError` on any problem."""
    p = Path(path)
    try:
        if p.stat().st_size == 0:
            raise ImageError(f"{p}: empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise ImageError(f"{p}: {img.width}x{img.height} pixels is too large to be a real photo (bomb?)")
                img.seek(0)  # the first frame of an animation
                img.load()
                img = ImageOps.exif_transpose(img)
                return _to_rgb(img)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{p}: is a directory") from None
    except PermissionError:
        raise ImageError(f"{p}: permission denied") from None
    except UnidentifiedImageError:
        raise ImageError(f"{p}: not an image file (unrecognised format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{p}: image dimensions are too large to decode safely (decompression bomb?)") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise ImageError(f"{p}: unreadable or truncated image ({str(exc).strip()[:100]})") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img.copy()
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale to 8 bits instead of clipping everything to white.
        img = img.point(lambda v: v * (255.0 / 65535.0)).convert("L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def find_images(inputs: Iterable[str | os.PathLike[str]]) -> list[tuple[Path, str | None]]:
    """Expand files and directories (recursively) into ``(path, problem)`` pairs, in input order.

    A directory contributes its files with image suffixes, sorted. A path that does not exist
    or a folder without images comes back with a one-line problem instead of raising, so one
    typo does not stop the rest of a batch.
    """
    found: list[tuple[Path, str | None]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                found.append((p, f"{p}: directory contains no images ({' '.join(sorted(IMAGE_SUFFIXES))})"))
            found.extend((f, None) for f in files)
        elif p.exists():
            found.append((p, None))
        else:
            found.append((p, f"{p}: no such file or directory"))
    return found


_INTERPOLATION = {
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
    "nearest": T.InterpolationMode.NEAREST,
}


def eval_transform(pre: Preprocessing) -> T.Compose:
    """Resize the short side, center-crop, scale to [0, 1] and normalise, as ``pre`` says."""
    return T.Compose(
        [
            T.PILToTensor(),
            T.Resize(pre.resize_size, interpolation=_INTERPOLATION[pre.interpolation], antialias=True),
            T.CenterCrop(pre.input_size),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(mean=list(pre.mean), std=list(pre.std)),
        ]
    )
