"""The built-in data sets, Fashion-MNIST and CIFAR-10, found on disk or downloaded, held in memory as uint8.

Fashion-MNIST (Xiao et al., 2017, arXiv:1708.07747) ships as four idx files, which are read here
with numpy (gzipped or not). CIFAR-10 (Krizhevsky, 2009) ships as python-pickle batches, which
torchvision's loader reads after checking their MD5 against the published checksums.

Each is looked for in ``data_dir`` when given, else in ``/usr/share/datasets/<name>`` (Debian's
``dataset-*`` packages), else in ``$EFFNET_HOME/datasets/<name>`` (default
``~/.cache/effnet/datasets/<name>``); when it is in none of them torchvision downloads it into
``data_dir`` or that cache. Without network access the error says where to put the files.
"""

from __future__ import annotations

import gzip
import os
import socket
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from effnet.errors import EffnetError

SYSTEM_DATASETS = Path("/usr/share/datasets")
DOWNLOAD_TIMEOUT_S = 30.0

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")
_IDX_UBYTE = 0x08


@dataclass
class ArraySplits:
    """A built-in data set decoded into memory: images are (N, H, W) or (N, H, W, 3) uint8."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    classes: list[str]
    source: str


def datasets_cache_dir() -> Path:
    """``$EFFNET_HOME/datasets``, default ``~/.cache/effnet/datasets`` (next to the weight cache)."""
    root = os.environ.get("EFFNET_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "effnet"
    )
    return Path(root) / "datasets"


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an idx file of unsigned bytes (the MNIST format), gzipped or not, as a read-only uint8 array."""
    p = Path(path)
    try:
        opener = gzip.open if p.suffix == ".gz" else open
        with opener(p, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:  # gzip's CRC and length checks catch truncated downloads
        raise EffnetError(f"{p}: unreadable idx file ({exc}); delete it and fetch it again") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _IDX_UBYTE or data[3] == 0:
        raise EffnetError(f"{p}: not an idx file of unsigned bytes (bad magic number {data[:4].hex() or 'none'})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise EffnetError(f"{p}: idx header is cut short")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) - header != int(np.prod(shape)):
        raise EffnetError(f"{p}: idx header says {shape} but the file holds {len(data) - header} values")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path | None:
    # Debian's package and the publishers ship .gz; torchvision's download leaves both in FashionMNIST/raw.
    for where in (folder, folder / "FashionMNIST" / "raw"):
        for name in (stem, stem + ".gz"):
            if (where / name).is_file():
                return where / name
    return None


def _has_fashion_mnist(folder: Path) -> bool:
    return all(_find_idx(folder, stem) is not None for pair in _FASHION_FILES.values() for stem in pair)


def _read_fashion_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_path, labels_path = (_find_idx(folder, stem) for stem in _FASHION_FILES[split])
    assert images_path is not None and labels_path is not None
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise EffnetError(f"{images_path} and {labels_path} do not match: images {images.shape}, labels {labels.shape}")
    if len(labels) and labels.max() >= len(FASHION_MNIST_CLASSES):
        raise EffnetError(f"{labels_path}: label {labels.max()} is not a Fashion-MNIST class (0-9)")
    return images, labels.astype(np.int64)


def fashion_mnist(data_dir: str | os.PathLike[str] | None = None) -> ArraySplits:
    """The 60,000 training and 10,000 test images of Fashion-MNIST (28x28 grayscale) and their labels."""
    folder = _locate("fashion-mnist", data_dir, _has_fashion_mnist, _download_fashion_mnist)
    train_images, train_labels = _read_fashion_split(folder, "train")
    val_images, val_labels = _read_fashion_split(folder, "val")
    return ArraySplits(
        train_images, train_labels, val_images, val_labels, list(FASHION_MNIST_CLASSES), f"fashion-mnist:{folder}"
    )


def _cifar_root(folder: Path) -> Path:
    # Accept both the folder holding cifar-10-batches-py/ (torchvision's root) and that folder itself.
    return folder.parent if folder.name == _CIFAR_FOLDER else folder


def _has_cifar10(folder: Path) -> bool:
    batches = _cifar_root(folder) / _CIFAR_FOLDER
    return all((batches / name).is_file() for name in (*_CIFAR_FILES, "batches.meta"))


def cifar10(data_dir: str | os.PathLike[str] | None = None) -> ArraySplits:
    """The 50,000 training and 10,000 test images of CIFAR-10 (32x32 RGB), read by torchvision.

    torchvision unpickles the batch files only after their MD5 matches the published checksum.
    """
    from torchvision.datasets import CIFAR10

    root = _cifar_root(_locate("cifar10", data_dir, _has_cifar10, _download_cifar10))
    try:
        train, val = CIFAR10(str(root), train=True), CIFAR10(str(root), train=False)
    except RuntimeError:  # the files are there (checked above), so their checksums are wrong
        raise EffnetError(
            f"{root / _CIFAR_FOLDER}: the files do not match the official CIFAR-10 checksums, so torchvision "
            "will not unpickle them; delete them to download again, or put the official python version there"
        ) from None
    return ArraySplits(
        np.asarray(train.data),
        np.asarray(train.targets, dtype=np.int64),
        np.asarray(val.data),
        np.asarray(val.targets, dtype=np.int64),
        list(train.classes),
        f"cifar10:{root}",
    )


def _download_fashion_mnist(root: Path) -> None:
    from torchvision.datasets import FashionMNIST

    FashionMNIST(str(root), train=True, download=True)


def _download_cifar10(root: Path) -> None:
    from torchvision.datasets import CIFAR10

    CIFAR10(str(root), train=True, download=True)


_HOW_TO_GET = {
    "fashion-mnist": (
        "install Debian's copy with 'apt-get install dataset-fashion-mnist', or put "
        "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
        "t10k-labels-idx1-ubyte.gz in a folder and pass --data-dir FOLDER"
    ),
    "cifar10": (
        "put the CIFAR-10 python version (cifar-10-python.tar.gz, or the cifar-10-batches-py folder "
        "extracted from it) in a folder and pass --data-dir FOLDER"
    ),
}


def _locate(
    name: str,
    data_dir: str | os.PathLike[str] | None,
    present: Callable[[Path], bool],
    download: Callable[[Path], None],
) -> Path:
    """The first folder holding ``name``'s files, downloading into ``data_dir`` or the cache if none does."""
    if data_dir is not None:
        candidates = [Path(data_dir).expanduser()]
    else:
        candidates = [SYSTEM_DATASETS / name, datasets_cache_dir() / name]
    for folder in candidates:
        if present(folder):
            return folder
    target = candidates[-1]
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            download(target)
    except Exception as exc:  # torchvision raises RuntimeError, URLError, OSError, tarfile errors...
        reason = _one_line(exc)
    else:
        if present(target):
            return target
        reason = "the download left no usable files"
    looked = " or ".join(str(c) for c in candidates)
    raise EffnetError(
        f"{name} is not in {looked} and could not be downloaded into {target} ({reason}); {_HOW_TO_GET[name]}"
    )


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    # torchvision opens URLs without a timeout; a blocked network would otherwise hang for minutes.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _one_line(exc: BaseException) -> str:
    # torchvision's download errors span several lines; the last one carries the cause.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[-1] if lines else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."
