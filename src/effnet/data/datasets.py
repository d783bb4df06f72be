"""Training and validation data for ``effnet train`` and ``effnet eval``.

:func:`load_data` turns what the user points at into a :class:`DataSplits`:

- an image folder, ``DIR/<class>/*`` (split per class by ``val_split``) or the ImageNet layout
  ``DIR/train/<class>/*`` with ``DIR/val/<class>/*``;
- a CSV file of ``path,label`` or ``path,label,split`` rows;
- ``fashion-mnist`` or ``cifar10``, with their official train/test splits.

Users' folders are messy, so every file is checked while the folder is scanned and an unreadable
one is listed in :attr:`DataSplits.skipped` instead of stopping a training run hours later. A file
that still fails to decode during training is replaced by the next readable item (see
:class:`ImageFileDataset`). ``docs/datasets.md`` states the rules for users.

>>> splits = load_data("fashion-mnist", subset=100)
>>> len(splits.train), len(splits.val), splits.classes[:2]
(100, 25, ['T-shirt/top', 'Trouser'])
>>> image, label = splits.train[0]
>>> image.mode, image.size
('RGB', (28, 28))
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import re
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from effnet.data import _builtin
from effnet.data.images import IMAGE_SUFFIXES, MAX_PIXELS, ImageError, load_image
from effnet.errors import EffnetError

# Folders up to this many files are fully decoded while scanning (a few seconds on 2 cores); larger
# ones get a header check plus an end-of-file check, which catches truncated JPEG, PNG and GIF files.
FULL_DECODE_LIMIT = 2_000
_SCAN_THREADS = 8  # the header pass waits on the disk more than on the CPU
_END_MARKERS = {"JPEG": b"\xff\xd9", "MPO": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82", "GIF": b";"}

BUILTIN_DATASETS: dict[str, Callable[[str | None], _builtin.ArraySplits]] = {
    "fashion-mnist": _builtin.fashion_mnist,
    "cifar10": _builtin.cifar10,
}
_VAL_DIR_NAMES = ("val", "validation", "valid", "test")
_CSV_PATH_HEADERS = {"path", "file", "filename", "filepath", "file_path", "image", "image_path", "img"}
_CSV_LABEL_HEADERS = {"label", "class", "class_name", "category", "target", "y"}
_CSV_SPLITS = {"train": "train", "val": "val", "valid": "val", "validation": "val"}
Transform = Callable[[Image.Image], Any]
_EXPECTED_FOLDER = "expected DIR/<class>/<image> or DIR/train/<class>/<image> with DIR/val/<class>/<image>"


@dataclass
class DataSplits:
    """What :func:`load_data` found: the two splits, class names, where they came from, what was skipped."""

    train: Dataset | None  # items: (PIL RGB image, int label), or (train_transform(image), label)
    val: Dataset | None  # the official test split for fashion-mnist and cifar10; None when the split is empty
    classes: list[str]  # label index -> class name
    source: str  # e.g. "folder:/data/pets (90/10 split, seed 0)", "fashion-mnist:/usr/share/datasets/fashion-mnist"
    skipped: list[str]  # one line per unreadable or missing file (or unusable CSV row) left out while scanning
    # True when ``val`` is a split the data defines (a built-in's test set, a val/ folder, a CSV
    # split column); False when it was carved out of the training data by ``val_split``.
    defined_val: bool = False


class ImageFileDataset(Dataset):
    """Image files with integer labels, decoded by :func:`~effnet.data.images.load_image` on access.

    A file that passed the scan but fails to decode now (it changed on disk, or it is large enough
    that the scan only read its header) does not stop training: it is recorded in
    :attr:`decode_failures`, a ``RuntimeWarning`` names it, and the next readable item (by index,
    wrapping around) is returned with that item's own label. With ``strict=True`` the
    :class:`~effnet.data.images.ImageError` is raised instead. With DataLoader workers each worker
    process keeps its own record; the scan-time :attr:`DataSplits.skipped` is the main report.
    """

    def __init__(
        self,
        samples: Sequence[tuple[Path, int]],
        classes: Sequence[str],
        transform: Transform | None = None,
        strict: bool = False,
    ) -> None:
        self.samples = list(samples)
        self.labels = np.array([label for _, label in self.samples], dtype=np.int64)
        self.classes = list(classes)
        self.transform = transform
        self.strict = strict
        self.decode_failures: list[str] = []
        self._failed: set[int] = set()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self._load(index)
        return (image if self.transform is None else self.transform(image)), label

    def _load(self, index: int) -> tuple[Image.Image, int]:
        n = len(self.samples)
        index = range(n)[index]  # negative indices, and IndexError past the end
        for step in range(n):
            candidate = (index + step) % n
            if candidate in self._failed:
                continue
            path, label = self.samples[candidate]
            try:
                return load_image(path), label
            except ImageError as exc:
                if self.strict:
                    raise
                self._failed.add(candidate)
                self.decode_failures.append(str(exc))
                warnings.warn(f"{exc}; using the next readable image instead", RuntimeWarning, stacklevel=3)
        raise EffnetError(f"none of the {n} images of this dataset can be decoded any more (files changed on disk?)")


class ImageArrayDataset(Dataset):
    """Images held in memory as uint8, (N, H, W) grayscale or (N, H, W, 3) RGB; items are PIL RGB images."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        classes: Sequence[str],
        transform: Transform | None = None,
    ) -> None:
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or len(images) != len(labels):
            raise ValueError(f"expected N uint8 images and N labels, got {images.dtype} {images.shape}, {len(labels)}")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = list(classes)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = Image.fromarray(self.images[index])
        if image.mode != "RGB":
            image = image.convert("RGB")
        return (image if self.transform is None else self.transform(image)), int(self.labels[index])


def load_data(
    data: str | os.PathLike[str],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    val_split: float = 0.1,
    seed: int = 0,
    strict: bool = False,
    train_transform: Transform | None = None,
    eval_transform: Transform | None = None,
    subset: int | None = None,
) -> DataSplits:
    """Find the training and validation data that ``data`` names; bad input is one :class:`EffnetError`.

    ``data`` is an image folder, a ``.csv`` file, or a built-in name (``fashion-mnist``,
    ``cifar10``; write ``./cifar10`` for a folder of that name). ``data_dir`` says where a built-in's
    files are. ``val_split`` is the fraction of each class held out when the data has no split of
    its own. ``strict`` turns the first unreadable or missing file into an error instead of an
    entry in ``skipped``. ``subset`` keeps at most that many training items and ``max(1, subset // 4)``
    validation items, per class in proportion (at least one per class when there is room), chosen
    by ``seed``. Splits and subsets depend only on ``seed`` and the file names (or item indices).

    >>> splits = load_data("fashion-mnist", subset=40, seed=1)
    >>> np.bincount(splits.train.labels).tolist()
    [4, 4, 4, 4, 4, 4, 4, 4, 4, 4]
    """
    if subset is not None and subset < 1:
        raise EffnetError(f"subset must be at least 1, got {subset}")
    name = os.fspath(data)
    if name.strip().lower() in BUILTIN_DATASETS:
        arrays = BUILTIN_DATASETS[name.strip().lower()](None if data_dir is None else os.fspath(data_dir))
        return _array_splits(arrays, seed, train_transform, eval_transform, subset)

    path = Path(name).expanduser()
    if path.is_dir():
        listing = _list_folder(path, val_split, seed)
    elif path.is_file() and path.suffix.lower() == ".csv":
        listing = _list_csv(path, val_split, seed, strict)
    else:
        problem = "not a folder or a .csv file" if path.exists() else "no such file or directory"
        raise EffnetError(f"{path}: {problem}; data must be an image folder, a .csv file, fashion-mnist or cifar10")
    return _file_splits(listing, val_split, seed, strict, train_transform, eval_transform, subset)


@dataclass
class _Listing:
    """Image files and their labels as a folder or CSV lists them, before any image is opened."""

    paths: list[Path]
    labels: list[int]
    names: list[str]  # what the split and subset order is drawn from: the relative path, or the CSV cell
    is_val: list[bool] | None  # from the folder layout or the CSV split column; None: split by val_split
    classes: list[str]
    source: str  # "folder:/abs/path (train/ and val/)"
    problems: list[str | None]  # known before opening anything (a CSV row naming a missing file)
    skipped: list[str]  # CSV rows left out without a file (no label)


# ---------------------------------------------------------------------------------------------
# Image folders


def _visible_subdirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _images_under(folder: Path) -> list[Path]:
    """Image files below ``folder``, sorted, leaving out hidden files and folders (``.git``, macOS ``._*``)."""
    found = []
    for top, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(
            Path(top, f) for f in files if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES
        )
    return sorted(found)


def _class_folders(folder: Path) -> list[str]:
    """The sorted class folder names of ``folder``, or an error saying what is wrong with it."""
    classes = _visible_subdirs(folder)
    if not classes:
        images = [f for f in os.listdir(folder) if os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES]
        if images:
            raise EffnetError(f"{folder}: {len(images)} images but no class folders; {_EXPECTED_FOLDER}")
        raise EffnetError(f"{folder}: empty folder (no class folders); {_EXPECTED_FOLDER}")
    if len(classes) == 1:
        hint = f" (for the ImageNet layout add {folder / 'val'}/<class>/)" if classes[0] == "train" else ""
        raise EffnetError(f"{folder}: only one class folder ({classes[0]}/){hint}; there must be at least 2 classes")
    return classes


def _list_folder(root: Path, val_split: float, seed: int) -> _Listing:
    val_dir = None
    if (root / "train").is_dir():
        val_dir = next((root / name for name in _VAL_DIR_NAMES if (root / name).is_dir()), None)
    if val_dir is None:
        _check_fraction(val_split)
        classes = _class_folders(root)
        paths, labels = _class_files(root, classes, classes)
        is_val = None
        how = _split_words(val_split, seed)
    else:
        classes = _class_folders(root / "train")
        val_classes = _visible_subdirs(val_dir)
        unknown = [c for c in val_classes if c not in classes]
        if unknown:
            raise EffnetError(
                f"{val_dir}: class folders {', '.join(unknown)} are not among the classes in {root / 'train'}"
            )
        train_paths, train_labels = _class_files(root / "train", classes, classes)
        val_paths, val_labels = _class_files(val_dir, val_classes, classes)
        paths, labels = train_paths + val_paths, train_labels + val_labels
        is_val = [False] * len(train_paths) + [True] * len(val_paths)
        how = f"train/ and {val_dir.name}/"
    if not paths:
        listed = ", ".join(f"{c}/" for c in classes[:5]) + (", ..." if len(classes) > 5 else "")
        raise EffnetError(
            f"{root}: no images in its class folders ({listed}); "
            f"expected files ending in {' '.join(sorted(IMAGE_SUFFIXES))}"
        )
    names = [p.relative_to(root).as_posix() for p in paths]
    source = f"folder:{os.path.abspath(root)} ({how})"
    return _Listing(paths, labels, names, is_val, classes, source, [None] * len(paths), [])


def _class_files(folder: Path, names: Sequence[str], classes: list[str]) -> tuple[list[Path], list[int]]:
    paths: list[Path] = []
    labels: list[int] = []
    for name in names:
        found = _images_under(folder / name)
        paths.extend(found)
        labels.extend([classes.index(name)] * len(found))
    return paths, labels


# ---------------------------------------------------------------------------------------------
# CSV files


def _list_csv(csv_path: Path, val_split: float, seed: int, strict: bool) -> _Listing:
    rows = _read_csv_rows(csv_path)
    has_split = any(len(cells) == 3 for _, cells in rows)
    if not has_split:
        _check_fraction(val_split)
    skipped: list[str] = []
    usable: list[tuple[int, str, str, bool]] = []
    for line, cells in rows:
        text, label = cells[0], cells[1]
        split = _CSV_SPLITS.get(cells[2].lower()) if has_split and len(cells) == 3 else None
        if has_split and split is None:
            got = repr(cells[2]) if len(cells) == 3 else "nothing"
            raise EffnetError(f"{csv_path} line {line}: the split column must say train or val, got {got}")
        if not text or not label:
            problem = f"{csv_path} line {line}: empty {'path' if not text else 'label'}"
            if strict:
                raise EffnetError(problem)
            skipped.append(problem)
            continue
        usable.append((line, text, label, split == "val"))
    if not usable:
        raise EffnetError(f"{csv_path}: no row has both a path and a label")

    classes = _sorted_labels({label for _, _, label, _ in usable})
    if has_split:
        in_train = {label for _, _, label, is_val in usable if not is_val}
        val_only = [c for c in classes if c not in in_train]
        if val_only:
            raise EffnetError(f"{csv_path}: labels {', '.join(map(repr, val_only))} appear only in val rows")

    index = {c: i for i, c in enumerate(classes)}
    paths, problems = [], []
    for line, text, _, _ in usable:
        path = Path(text).expanduser()
        path = path if path.is_absolute() else csv_path.parent / path
        paths.append(path)
        problems.append(None if path.is_file() else f"{path}: no such file ({csv_path.name} line {line})")
    missing = [p for p in problems if p is not None]
    if missing and strict:
        raise EffnetError(f"{csv_path} names {len(missing)} missing files; the first is {missing[0]}")
    how = "split column" if has_split else _split_words(val_split, seed)
    return _Listing(
        paths=paths,
        labels=[index[label] for _, _, label, _ in usable],
        names=[text for _, text, _, _ in usable],
        is_val=[is_val for *_, is_val in usable] if has_split else None,
        classes=classes,
        source=f"csv:{os.path.abspath(csv_path)} ({how})",
        problems=problems,
        skipped=skipped,
    )


def _read_csv_rows(csv_path: Path) -> list[tuple[int, list[str]]]:
    """Non-blank rows as (line number, 2 or 3 stripped cells), without a header row."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            raw = list(csv.reader(fh))
    except UnicodeDecodeError:
        raise EffnetError(f"{csv_path}: not a UTF-8 text file") from None
    except (OSError, csv.Error) as exc:
        raise EffnetError(f"{csv_path}: cannot be read as CSV ({exc})") from None
    rows = []
    for line, row in enumerate(raw, start=1):
        cells = [c.strip() for c in row]
        while cells and not cells[-1]:  # spreadsheets pad rows with empty cells
            cells.pop()
        if not cells:
            continue
        if len(cells) > 3:
            raise EffnetError(f"{csv_path} line {line}: {len(cells)} cells; expected path,label or path,label,split")
        rows.append((line, cells + [""] * (2 - len(cells))))
    if rows and _is_header(rows[0][1], csv_path.parent):
        rows = rows[1:]
    if not rows:
        raise EffnetError(f"{csv_path}: no rows; expected lines of path,label (optionally path,label,split)")
    return rows


def _is_header(cells: list[str], folder: Path) -> bool:
    # A data row labelled "y" or "class" is not a header: its first cell names a file.
    if cells[0].lower() in _CSV_PATH_HEADERS:
        return True
    return cells[1].lower() in _CSV_LABEL_HEADERS and not (folder / Path(cells[0]).expanduser()).is_file()


def _sorted_labels(labels: set[str]) -> list[str]:
    # Whole-number labels sort as numbers, so "10" follows "9" and labels 0..N-1 keep their values.
    if all(re.fullmatch(r"[+-]?\d+", label) for label in labels):
        return sorted(labels, key=lambda s: (int(s), s))
    return sorted(labels)


# ---------------------------------------------------------------------------------------------
# Checking files


def check_images(paths: Sequence[Path], strict: bool = False) -> list[str | None]:
    """A one-line problem (or None) per image file; with ``strict`` the first problem is raised.

    Up to :data:`FULL_DECODE_LIMIT` files are decoded fully. Past that each file's header is read
    (empty, non-image and oversized files fail there) and JPEG, PNG and GIF files must end with
    their format's end marker, the sign of a complete copy; only files failing that are decoded.
    """
    if len(paths) <= FULL_DECODE_LIMIT:
        suspects = list(range(len(paths)))
    else:
        # Worker threads share the warning filters, so they are set once here rather than per file.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with ThreadPoolExecutor(max_workers=_SCAN_THREADS) as pool:
                complete = list(pool.map(_looks_complete, paths))
        suspects = [i for i, ok in enumerate(complete) if not ok]
    problems: list[str | None] = [None] * len(paths)
    for i in suspects:
        try:
            load_image(paths[i]).close()
        except ImageError as exc:
            if strict:
                raise
            problems[i] = str(exc)
    return problems


def _looks_complete(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            with Image.open(fh) as img:
                if img.width * img.height > MAX_PIXELS:
                    return False
                marker = _END_MARKERS.get(img.format or "")
            if marker is None:
                return True
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - 64))
            # Writers may pad after the marker; a file cut short ends in the middle of image data.
            return fh.read().rstrip(b"\0\r\n\t ").endswith(marker)
    except Exception:  # anything odd is decoded in full, which gives the one-line reason
        return False


def _readable(listing: _Listing, strict: bool) -> tuple[np.ndarray, list[str]]:
    """Which listed files can be used, and one line for each that cannot (in listing order)."""
    unknown = [i for i, p in enumerate(listing.problems) if p is None]
    problems = list(listing.problems)
    for i, problem in zip(unknown, check_images([listing.paths[i] for i in unknown], strict=strict), strict=True):
        problems[i] = problem
    keep = np.array([p is None for p in problems], dtype=bool)
    return keep, listing.skipped + [p for p in problems if p is not None]


def _require_training_images(listing: _Listing, keep: np.ndarray, is_val: np.ndarray) -> None:
    n = len(listing.classes)
    labels = np.asarray(listing.labels, dtype=np.int64)
    readable = np.bincount(labels[keep & ~is_val], minlength=n)
    listed = np.bincount(labels[~is_val], minlength=n)
    anywhere = np.bincount(labels, minlength=n)
    empty = np.flatnonzero(readable == 0)
    if len(empty) == 0:
        return
    reasons = []
    for i in empty[:5]:
        if listed[i]:
            reason = f"all {listed[i]} of its training files are unreadable or missing"
        elif anywhere[i]:
            reason = "it has images only in the validation split"
        else:
            reason = "its folder has no images"
        reasons.append(f"class {listing.classes[i]!r}: {reason}")
    more = f" (and {len(empty) - 5} more classes)" if len(empty) > 5 else ""
    where = listing.source.rsplit(" (", 1)[0]  # "folder:/path", without the split description
    raise EffnetError(f"{where}: every class needs training images; {'; '.join(reasons)}{more}")


# ---------------------------------------------------------------------------------------------
# Splits and subsets


def _check_fraction(val_split: float) -> None:
    if not 0.0 < val_split < 1.0:
        raise EffnetError(f"val_split must be between 0 and 1 (exclusive) to split a folder or CSV, got {val_split}")


def _split_words(val_split: float, seed: int) -> str:
    val_pct = round(val_split * 100, 2)
    return f"{round(100 - val_pct, 2):g}/{val_pct:g} split, seed {seed}"


def _name_keys(names: Sequence[str], seed: int) -> np.ndarray:
    """A sort key per item from the seed and its name: adding or removing a file moves no other file."""
    digests = (
        hashlib.blake2b(f"{seed}\0{n}".encode("utf-8", "surrogateescape"), digest_size=8).digest() for n in names
    )
    return np.fromiter((int.from_bytes(d, "little") for d in digests), dtype=np.uint64, count=len(names))


def val_counts(class_sizes: Sequence[int], val_split: float) -> list[int]:
    """How many items of each class go to validation.

    ``round(size * val_split)``, but at least one for a class of two or more and never the
    class's last item, so every class keeps a training image.

    >>> val_counts([100, 10, 2, 1], 0.1)
    [10, 1, 1, 0]
    """
    return [min(max(math.floor(n * val_split + 0.5), 1), n - 1) if n >= 2 else 0 for n in class_sizes]


def subset_counts(class_sizes: Sequence[int], total: int) -> list[int]:
    """Share ``total`` items among classes in proportion to their sizes (largest remainder).

    Every non-empty class gets at least one item when ``total`` leaves room for that, taken from
    the class with the most.

    >>> subset_counts([600, 300, 100], 10)
    [6, 3, 1]
    >>> subset_counts([990, 5, 5], 10)
    [8, 1, 1]
    """
    sizes = list(class_sizes)
    if total >= sum(sizes):
        return sizes
    exact = [total * n / sum(sizes) for n in sizes]
    counts = [int(e) for e in exact]
    by_remainder = sorted(range(len(sizes)), key=lambda i: (counts[i] - exact[i], i))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    if total >= sum(1 for n in sizes if n):
        for i, n in enumerate(sizes):
            if n and not counts[i]:
                counts[max(range(len(sizes)), key=lambda j: (counts[j], -j))] -= 1
                counts[i] = 1
    return counts


def _first_per_class(labels: np.ndarray, keys: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """A mask choosing, in each class, the ``counts[class]`` items with the smallest keys."""
    order = np.lexsort((keys, labels))
    grouped = labels[order]
    starts = np.searchsorted(grouped, np.arange(len(counts)))
    chosen = np.zeros(len(labels), dtype=bool)
    chosen[order] = (np.arange(len(labels)) - starts[grouped]) < np.asarray(counts, dtype=np.int64)[grouped]
    return chosen


def _subset_mask(labels: np.ndarray, keys: np.ndarray, num_classes: int, total: int) -> np.ndarray:
    sizes = np.bincount(labels, minlength=num_classes).tolist()
    return _first_per_class(labels, keys, subset_counts(sizes, total))


def _subset_words(subset: int | None, n_train: int, n_val: int) -> str:
    return "" if subset is None else f" [subset: {n_train} train, {n_val} val]"


def _file_splits(
    listing: _Listing,
    val_split: float,
    seed: int,
    strict: bool,
    train_transform: Transform | None,
    eval_transform: Transform | None,
    subset: int | None,
) -> DataSplits:
    keep, skipped = _readable(listing, strict)
    listed_val = np.zeros(len(keep), dtype=bool) if listing.is_val is None else np.array(listing.is_val, dtype=bool)
    _require_training_images(listing, keep, listed_val)

    num_classes = len(listing.classes)
    paths = [p for p, k in zip(listing.paths, keep, strict=True) if k]
    labels = np.asarray(listing.labels, dtype=np.int64)[keep]
    keys = _name_keys([n for n, k in zip(listing.names, keep, strict=True) if k], seed)
    if listing.is_val is None:
        sizes = np.bincount(labels, minlength=num_classes).tolist()
        is_val = _first_per_class(labels, keys, val_counts(sizes, val_split))
    else:
        is_val = listed_val[keep]
    train_mask, val_mask = ~is_val, is_val
    if subset is not None:
        for mask, total in ((train_mask, subset), (val_mask, max(1, subset // 4))):
            idx = np.flatnonzero(mask)
            mask[idx] = _subset_mask(labels[idx], keys[idx], num_classes, total)

    def dataset(mask: np.ndarray, transform: Transform | None) -> ImageFileDataset | None:
        samples = [(paths[i], int(labels[i])) for i in np.flatnonzero(mask)]
        return ImageFileDataset(samples, listing.classes, transform, strict) if samples else None

    return DataSplits(
        train=dataset(train_mask, train_transform),
        val=dataset(val_mask, eval_transform),
        classes=listing.classes,
        source=listing.source + _subset_words(subset, int(train_mask.sum()), int(val_mask.sum())),
        skipped=skipped,
        defined_val=listing.is_val is not None,
    )


def _array_splits(
    arrays: _builtin.ArraySplits,
    seed: int,
    train_transform: Transform | None,
    eval_transform: Transform | None,
    subset: int | None,
) -> DataSplits:
    train_images, train_labels = arrays.train_images, arrays.train_labels
    val_images, val_labels = arrays.val_images, arrays.val_labels
    if subset is not None:
        num_classes = len(arrays.classes)
        rng = np.random.default_rng(seed)
        keep = _subset_mask(train_labels, rng.permutation(len(train_labels)), num_classes, subset)
        train_images, train_labels = train_images[keep], train_labels[keep]
        keep = _subset_mask(val_labels, rng.permutation(len(val_labels)), num_classes, max(1, subset // 4))
        val_images, val_labels = val_images[keep], val_labels[keep]
    return DataSplits(
        train=ImageArrayDataset(train_images, train_labels, arrays.classes, train_transform),
        val=ImageArrayDataset(val_images, val_labels, arrays.classes, eval_transform),
        classes=list(arrays.classes),
        source=arrays.source + _subset_words(subset, len(train_labels), len(val_labels)),
        skipped=[],
        defined_val=True,
    )
