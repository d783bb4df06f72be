"""A bad-input corpus, written by the tests themselves, shared by every test of a command that reads images.

:func:`write_corpus` lays out in a temporary directory:

- ``images/<class>/``: a two-class dataset (``blue``, ``red``) of plain images, images in unusual but
  valid encodings (CMYK, 16-bit, palette, RGBA, grayscale, animated GIF, EXIF-rotated JPEG) and files
  that must be refused (zero-byte, truncated, random bytes, a decompression bomb), all with image
  suffixes and mixed in with each other, the way users' folders are;
- ``no_images/``: a folder holding only a text file;
- ``one_class/<class>/``: a dataset folder with a single class;
- ``labels.csv``: rows for good images plus a row naming a missing file and a row without a label;
- ``unknown_label.csv``: good rows plus a row whose label no checkpoint trained on ``images/`` knows;
- ``reference/exif_upright.png``: the pixels of the EXIF-rotated JPEG, rotated by hand, to compare with.

Nothing is downloaded; everything is deterministic.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("blue", "red")
_COLOURS = {"blue": (30, 60, 210), "red": (210, 40, 30)}
EXIF_ORIENTATION = 0x0112

# What the one-line reason for each refused file must say.
BAD_REASONS = {
    "zero_byte": "empty file (0 bytes)",
    "truncated_jpeg": "truncated",
    "truncated_png": "truncated",
    "random_bytes": "not an image file",
    "bomb": "too large",
}


def png_claiming_size(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims width x height (a decompression bomb's calling card)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )
    return path


def noisy_rgb(colour: tuple[int, int, int], size: tuple[int, int], seed: int) -> Image.Image:
    """``colour`` plus noise, ``size`` = (width, height): learnable, and no two images alike."""
    rng = np.random.default_rng(seed)
    width, height = size
    pixels = np.clip(np.array(colour) + rng.normal(0, 25, (height, width, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def cut(path: Path, fraction: float) -> Path:
    """Keep only the first ``fraction`` of a file, like an interrupted copy."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def write_bad_files(folder: Path, seed: int = 0) -> dict[str, Path]:
    """One file of each kind in :data:`BAD_REASONS`, each with an image suffix."""
    folder.mkdir(parents=True, exist_ok=True)
    bad = {
        "zero_byte": folder / "zero_byte.jpg",
        "truncated_jpeg": folder / "truncated.jpg",
        "truncated_png": folder / "truncated.png",
        "random_bytes": folder / "random_bytes.png",
        "bomb": png_claiming_size(folder / "bomb.png", 100_000, 100_000),
    }
    bad["zero_byte"].touch()
    noisy_rgb((128, 128, 128), (48, 48), seed).save(bad["truncated_jpeg"], quality=90)
    cut(bad["truncated_jpeg"], 1 / 3)
    noisy_rgb((128, 128, 128), (48, 48), seed + 1).save(bad["truncated_png"])
    cut(bad["truncated_png"], 1 / 2)
    bad["random_bytes"].write_bytes(np.random.default_rng(seed).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    return bad


def write_odd_images(folder: Path, colour: tuple[int, int, int] = (210, 40, 30), seed: int = 0) -> dict[str, Path]:
    """Valid images in unusual encodings; each must load as 8-bit RGB (``exif_rotated`` upright)."""
    folder.mkdir(parents=True, exist_ok=True)
    base = noisy_rgb(colour, (40, 30), seed)
    base.paste((255, 255, 255), (0, 0, 40, 8))  # a white band along the top: turning the image shows
    odd = {
        "cmyk": folder / "cmyk.jpg",
        "gray16": folder / "gray16.png",
        "palette": folder / "palette.png",
        "rgba": folder / "rgba.png",
        "gray": folder / "gray.png",
        "animated": folder / "animated.gif",
        "exif_rotated": folder / "exif_rotated.jpg",
    }
    base.convert("CMYK").save(odd["cmyk"], quality=95)
    gray = np.asarray(base.convert("L"), dtype=np.uint16) * 257  # the full 16-bit range
    Image.fromarray(gray).save(odd["gray16"])
    assert Image.open(odd["gray16"]).mode.startswith("I")  # really 16 bits on disk
    base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(odd["palette"])
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(base.size))
    rgba.save(odd["rgba"])
    base.convert("L").save(odd["gray"])
    frames = [noisy_rgb(colour, (40, 30), seed + i).convert("P") for i in range(3)]
    frames[0].save(odd["animated"], save_all=True, append_images=frames[1:], duration=40, loop=0)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # "rotate 90 degrees clockwise to display"
    base.save(odd["exif_rotated"], exif=exif, quality=95)
    return odd


def write_exif_upright(rotated_jpeg: Path, out: Path) -> Path:
    """The EXIF-rotated JPEG's decoded pixels turned upright by hand (orientation 6), saved losslessly."""
    with Image.open(rotated_jpeg) as img:
        assert img.getexif()[EXIF_ORIENTATION] == 6
        upright = img.convert("RGB").transpose(Image.Transpose.ROTATE_270)
    out.parent.mkdir(parents=True, exist_ok=True)
    upright.save(out)
    return out


@dataclass
class Corpus:
    root: Path
    images: Path  # images/<class>/*: good, odd and bad files mixed
    good: list[Path]  # every file under images/ that must be read (plain and odd)
    odd: dict[str, Path]  # kind -> valid image in an unusual encoding (all under images/red/)
    bad: dict[str, Path]  # kind -> file that must be refused (see BAD_REASONS)
    labels: dict[Path, str]  # class of every good file
    exif_upright: Path
    no_images: Path
    one_class: Path
    csv: Path
    csv_good: list[Path]  # the files labels.csv names that exist
    csv_missing: Path  # the file labels.csv names that does not exist
    unknown_label_csv: Path
    unknown_label: str
    classes: tuple[str, ...] = field(default=CLASSES)


def write_corpus(root: Path, plain_per_class: int = 6, size: int = 24) -> Corpus:
    """Write the corpus under ``root`` (see the module docstring) and describe it."""
    images = root / "images"
    good: list[Path] = []
    for c, name in enumerate(CLASSES):
        for i in range(plain_per_class):
            path = images / name / f"{name}_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            noisy_rgb(_COLOURS[name], (size, size), seed=100 * c + i).save(path)
            good.append(path)
    odd = write_odd_images(images / "red", _COLOURS["red"])
    good += list(odd.values())
    # Refused files in both classes, so each command meets them next to good images of either.
    bad_red = write_bad_files(images / "red")
    bad_blue = write_bad_files(images / "blue" / "nested", seed=1)
    bad = {**bad_red, **{f"{kind}_2": path for kind, path in bad_blue.items()}}
    exif_upright = write_exif_upright(odd["exif_rotated"], root / "reference" / "exif_upright.png")

    no_images = root / "no_images"
    no_images.mkdir()
    (no_images / "README.txt").write_text("no pictures here\n")
    one_class = root / "one_class"
    for i in range(3):
        (one_class / "red").mkdir(parents=True, exist_ok=True)
        noisy_rgb(_COLOURS["red"], (size, size), seed=900 + i).save(one_class / "red" / f"{i}.png")

    csv_good = [p for p in good if p.suffix == ".png"]
    csv_missing = images / "red" / "deleted_since.png"
    rows = ["path,label"]
    rows += [f"{p.relative_to(root).as_posix()},{p.parent.name}" for p in csv_good]
    rows += [f"{csv_missing.relative_to(root).as_posix()},red", f"{csv_good[0].relative_to(root).as_posix()},"]
    csv = root / "labels.csv"
    csv.write_text("\n".join(rows) + "\n")
    unknown_label = "green"
    unknown_label_csv = root / "unknown_label.csv"
    unknown_rows = ["path,label"] + [f"{p.relative_to(root).as_posix()},{p.parent.name}" for p in csv_good]
    unknown_rows.append(f"{csv_good[1].relative_to(root).as_posix()},{unknown_label}")
    unknown_label_csv.write_text("\n".join(unknown_rows) + "\n")

    return Corpus(
        root=root,
        images=images,
        good=good,
        odd=odd,
        bad=bad,
        labels={p: p.parent.name for p in good},
        exif_upright=exif_upright,
        no_images=no_images,
        one_class=one_class,
        csv=csv,
        csv_good=csv_good,
        csv_missing=csv_missing,
        unknown_label_csv=unknown_label_csv,
        unknown_label=unknown_label,
    )


def reason_for(path: Path, corpus: Corpus) -> str:
    """The fragment the one-line reason for a refused corpus file must contain."""
    kind = next(k for k, p in corpus.bad.items() if p == path)
    return BAD_REASONS[kind.removesuffix("_2")]
