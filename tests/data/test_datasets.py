"""Training data: image folders, CSV lists, Fashion-MNIST and CIFAR-10, against a bad-input corpus made here.

The real Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` package; a machine without it
fails these tests instead of skipping them. No test touches the network: downloads are blocked
or replaced.
"""

import gzip
import hashlib
import math
import os
import pickle
import socket
import struct
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from tests.corpus import write_bad_files
from torch.utils.data import DataLoader
from torchvision.datasets import CIFAR10, FashionMNIST
from torchvision.datasets.mnist import read_image_file, read_label_file
from torchvision.transforms import v2 as T

from effnet.data import _builtin, datasets
from effnet.data.datasets import (
    DataSplits,
    ImageArrayDataset,
    ImageFileDataset,
    load_data,
    subset_counts,
    val_counts,
)
from effnet.data.images import ImageError
from effnet.errors import EffnetError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = [
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
]


# ---------------------------------------------------------------------------------------------
# Helpers: tiny images, folders, idx files, CIFAR batches


def save_image(path: Path, value: int = 128, size: int = 12, mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    pixels[0, 0] = value  # lets a test tell images apart
    Image.fromarray(pixels).convert(mode).save(path)
    return path


def make_folder(root: Path, counts: dict[str, int], suffix: str = ".png") -> Path:
    for c, (name, n) in enumerate(counts.items()):
        for i in range(n):
            save_image(root / name / f"{name}_{i:03d}{suffix}", value=(c * 50 + i) % 256)
    return root


def bad_corpus(folder: Path) -> dict[str, Path]:
    """The shared corpus's unreadable files (tests/corpus.py), next to files that must be ignored."""
    bad = write_bad_files(folder)
    (folder / "notes.txt").write_text("not an image suffix: ignored")
    (folder / "._macos_fork.jpg").write_bytes(b"\0\5\26\7 hidden: ignored")
    (folder / ".thumbnails").mkdir()
    (folder / ".thumbnails" / "junk.jpg").write_bytes(b"hidden folder: ignored")
    return bad


def sample_names(dataset: ImageFileDataset | None) -> list[str]:
    return [] if dataset is None else [p.name for p, _ in dataset.samples]


def assert_one_line(exc: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(exc.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


def write_idx(path: Path, array: np.ndarray) -> Path:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def fake_fashion_mnist(folder: Path, n_train: int = 30, n_val: int = 20, suffix: str = ".gz") -> Path:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_val)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(n) % 10)
    return folder


def fake_cifar10(root: Path, per_batch: int = 2) -> dict[str, str]:
    """CIFAR-10's python layout in miniature; returns each file's MD5 for torchvision's integrity check."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        data = rng.integers(0, 256, (per_batch, 3 * 32 * 32), dtype=np.uint8)
        data[:, 0] = i  # red channel of the top-left pixel tells the batches apart
        labels = [(i + j) % 10 for j in range(per_batch)]
        (folder / name).write_bytes(pickle.dumps({"data": data, "labels": labels}))
    meta = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": meta}))
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}


@pytest.fixture
def no_network(monkeypatch):
    """Every URL open and socket connection fails; returns the URLs that were tried."""
    tried = []

    def refuse_url(request, *args, **kwargs):
        tried.append(getattr(request, "full_url", request))
        raise urllib.error.URLError("network blocked by the test")

    def refuse_socket(self, *args, **kwargs):
        raise OSError("network blocked by the test")

    monkeypatch.setattr(urllib.request, "urlopen", refuse_url)
    monkeypatch.setattr(socket.socket, "connect", refuse_socket)
    return tried


@pytest.fixture
def no_system_datasets(monkeypatch, tmp_path):
    monkeypatch.setattr(_builtin, "SYSTEM_DATASETS", tmp_path / "no-system-datasets")


# ---------------------------------------------------------------------------------------------
# Image folders


def test_flat_folder_is_split_per_class_and_deterministically(tmp_path):
    root = make_folder(tmp_path / "pets", {"dog": 10, "cat": 10, "emu": 5})
    splits = load_data(root, val_split=0.2)
    assert isinstance(splits, DataSplits)
    assert splits.classes == ["cat", "dog", "emu"]
    assert splits.skipped == []
    assert splits.source == f"folder:{root} (80/20 split, seed 0)"
    assert np.bincount(splits.train.labels).tolist() == [8, 8, 4]
    assert np.bincount(splits.val.labels).tolist() == [2, 2, 1]
    train, val = set(sample_names(splits.train)), set(sample_names(splits.val))
    assert not train & val and len(train | val) == 25
    for path, label in splits.train.samples + splits.val.samples:
        assert path.parent.name == splits.classes[label]

    assert sample_names(load_data(root, val_split=0.2).val) == sample_names(splits.val)
    assert sample_names(load_data(root, val_split=0.2, seed=1).val) != sample_names(splits.val)


def test_adding_a_file_moves_at_most_that_file(tmp_path):
    root = make_folder(tmp_path / "pets", {"cat": 10, "dog": 10})
    before = load_data(root, val_split=0.2)
    save_image(root / "cat" / "new.png", value=7)
    after = load_data(root, val_split=0.2)
    val_before, val_after = set(sample_names(before.val)), set(sample_names(after.val))
    assert {n for n in val_before if n.startswith("dog")} == {n for n in val_after if n.startswith("dog")}
    assert len(val_after - val_before) <= 1


def test_items_are_rgb_images_with_int_labels_and_split_transforms(tmp_path):
    root = make_folder(tmp_path / "data", {"a": 3, "b": 3})
    save_image(root / "a" / "gray.png", mode="L")
    save_image(root / "b" / "clear.png", mode="RGBA")
    save_image(root / "b" / "photo.JPG")
    save_image(root / "b" / "nested" / "deeper.bmp")
    splits = load_data(root, val_split=0.3)
    assert len(splits.train) + len(splits.val) == 10
    for dataset in (splits.train, splits.val):
        for i in range(len(dataset)):
            image, label = dataset[i]
            assert isinstance(image, Image.Image) and image.mode == "RGB"
            assert type(label) is int and dataset.labels[i] == label

    tagged = load_data(
        root, val_split=0.3, train_transform=lambda im: ("train", im.size), eval_transform=lambda im: ("eval", im.mode)
    )
    assert tagged.train[0][0] == ("train", (12, 12))
    assert tagged.val[0][0] == ("eval", "RGB")


def test_training_through_a_dataloader(tmp_path):
    root = make_folder(tmp_path / "data", {"a": 6, "b": 6})
    to_tensor = T.Compose([T.PILToTensor(), T.ToDtype(torch.float32, scale=True)])
    splits = load_data(root, val_split=0.25, train_transform=to_tensor, eval_transform=to_tensor)
    batches = list(DataLoader(splits.train, batch_size=4, shuffle=True))
    assert sum(len(y) for _, y in batches) == len(splits.train) == 8
    x, y = batches[0]
    assert x.shape == (4, 3, 12, 12) and y.dtype == torch.int64


def test_imagenet_layout_uses_its_own_split(tmp_path):
    make_folder(tmp_path / "train", {"a": 4, "b": 3, "c": 2})
    make_folder(tmp_path / "val", {"a": 2, "b": 1})
    splits = load_data(tmp_path, val_split=0.0)  # ignored: the layout brings its own split
    assert splits.classes == ["a", "b", "c"]
    assert splits.source == f"folder:{tmp_path} (train/ and val/)"
    assert np.bincount(splits.train.labels).tolist() == [4, 3, 2]
    assert np.bincount(splits.val.labels, minlength=3).tolist() == [2, 1, 0]
    assert all(p.parts[-3] == "val" for p, _ in splits.val.samples)


def test_train_and_test_folders_are_the_imagenet_layout_too(tmp_path):
    make_folder(tmp_path / "train", {"a": 2, "b": 2})
    make_folder(tmp_path / "test", {"a": 1, "b": 1})
    splits = load_data(tmp_path)
    assert splits.classes == ["a", "b"] and len(splits.val) == 2
    assert splits.source.endswith("(train/ and test/)")


def test_imagenet_layout_problems(tmp_path):
    make_folder(tmp_path / "train", {"a": 2, "b": 2})
    make_folder(tmp_path / "val", {"a": 1, "zebra": 1})
    with pytest.raises(EffnetError) as exc:
        load_data(tmp_path)
    assert_one_line(exc, "zebra", "not among the classes")

    only_in_val = tmp_path / "other"
    make_folder(only_in_val / "train", {"a": 2})
    (only_in_val / "train" / "b").mkdir()
    make_folder(only_in_val / "val", {"a": 1, "b": 1})
    with pytest.raises(EffnetError) as exc:
        load_data(only_in_val)
    assert_one_line(exc, "class 'b'", "only in the validation split")


def _empty_folder(root):
    root.mkdir()


def _images_without_classes(root):
    save_image(root / "a.png")
    save_image(root / "b.png")


def _one_class(root):
    make_folder(root, {"cats": 3})


def _no_images_in_class_folders(root):
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        (root / name / "readme.txt").write_text("no images here")


def _one_empty_class(root):
    make_folder(root, {"a": 3, "b": 3})
    (root / "c").mkdir()


def _only_train_folder(root):
    make_folder(root / "train", {"a": 2, "b": 2})


@pytest.mark.parametrize(
    ("build", "fragments"),
    [
        (_empty_folder, ["empty folder", "DIR/<class>/<image>"]),
        (_images_without_classes, ["2 images but no class folders"]),
        (_one_class, ["only one class folder (cats/)", "at least 2 classes"]),
        (_no_images_in_class_folders, ["no images in its class folders (a/, b/)", ".jpg"]),
        (_one_empty_class, ["class 'c': its folder has no images"]),
        (_only_train_folder, ["only one class folder (train/)", "val"]),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else "",
)
def test_bad_folders_are_one_line_errors(tmp_path, build, fragments):
    root = tmp_path / "data"
    build(root)
    with pytest.raises(EffnetError) as exc:
        load_data(root)
    assert_one_line(exc, *fragments)


def test_paths_that_are_not_data(tmp_path):
    with pytest.raises(EffnetError) as exc:
        load_data(tmp_path / "nowhere")
    assert_one_line(exc, "nowhere: no such file or directory", "fashion-mnist")
    (tmp_path / "list.txt").write_text("a.png,cat\n")
    with pytest.raises(EffnetError) as exc:
        load_data(tmp_path / "list.txt")
    assert_one_line(exc, "not a folder or a .csv file")


@pytest.mark.parametrize("val_split", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_val_split_must_be_a_fraction_for_a_flat_folder(tmp_path, val_split):
    root = make_folder(tmp_path / "data", {"a": 2, "b": 2})
    with pytest.raises(EffnetError) as exc:
        load_data(root, val_split=val_split)
    assert_one_line(exc, "val_split must be between 0 and 1")


def test_subset_must_be_positive(tmp_path):
    with pytest.raises(EffnetError) as exc:
        load_data(make_folder(tmp_path / "data", {"a": 2, "b": 2}), subset=0)
    assert_one_line(exc, "subset must be at least 1")


def test_every_class_keeps_a_training_image_and_tiny_classes_may_have_no_val(tmp_path):
    root = make_folder(tmp_path / "data", {"a": 1, "b": 2, "c": 20})
    splits = load_data(root, val_split=0.5)
    assert np.bincount(splits.train.labels).tolist() == [1, 1, 10]
    assert np.bincount(splits.val.labels, minlength=3).tolist() == [0, 1, 10]
    only_singletons = load_data(make_folder(tmp_path / "tiny", {"a": 1, "b": 1}))
    assert len(only_singletons.train) == 2 and only_singletons.val is None


# ---------------------------------------------------------------------------------------------
# Unreadable files


def test_unreadable_files_are_skipped_at_scan_time(tmp_path):
    root = make_folder(tmp_path / "data", {"a": 4, "b": 4})
    bad = bad_corpus(root / "a")
    splits = load_data(root, val_split=0.25)
    assert len(splits.skipped) == 5
    for path in bad.values():
        assert sum(m.startswith(str(path)) for m in splits.skipped) == 1, splits.skipped
    assert all("\n" not in m for m in splits.skipped)
    assert any("empty file" in m for m in splits.skipped)
    assert any("not an image" in m for m in splits.skipped)
    assert any("too large" in m for m in splits.skipped)
    used = set(sample_names(splits.train)) | set(sample_names(splits.val))
    assert used == {f"{c}_{i:03d}.png" for c in "ab" for i in range(4)}


def test_strict_raises_on_the_first_unreadable_file(tmp_path):
    root = make_folder(tmp_path / "data", {"a": 2, "b": 2})
    bad = bad_corpus(root / "a")
    with pytest.raises(ImageError) as exc:
        load_data(root, strict=True)
    assert_one_line(exc, str(bad["bomb"]), "too large")  # a/bomb.png sorts first
    assert isinstance(exc.value, EffnetError)


def test_large_folders_are_checked_by_header_and_end_marker(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "FULL_DECODE_LIMIT", 0)
    decoded = []
    real_load_image = datasets.load_image

    def spy(path):
        decoded.append(Path(path).name)
        return real_load_image(path)

    monkeypatch.setattr(datasets, "load_image", spy)
    root = make_folder(tmp_path / "data", {"a": 3, "b": 3}, suffix=".jpg")
    bad = bad_corpus(root / "b")
    padded = save_image(root / "a" / "padded.jpg")
    padded.write_bytes(padded.read_bytes() + b"\0" * 16)
    trailer = save_image(root / "a" / "trailer.jpg")
    trailer.write_bytes(trailer.read_bytes() + b"extra bytes some cameras append")

    splits = load_data(root)
    assert sorted(decoded) == sorted([p.name for p in bad.values()] + ["trailer.jpg"])
    assert {m.split(":")[0] for m in splits.skipped} == {str(p) for p in bad.values()}
    assert len(splits.train) + len(splits.val) == 8


def test_a_class_with_only_unreadable_files_is_an_error(tmp_path):
    root = make_folder(tmp_path / "data", {"a": 3})
    bad_corpus(root / "b")
    with pytest.raises(EffnetError) as exc:
        load_data(root)
    assert_one_line(exc, "class 'b'", "all 5 of its training files are unreadable or missing")


def test_a_file_that_breaks_after_the_scan_is_replaced_during_training(tmp_path):
    root = make_folder(tmp_path / "data", {"a": 4, "b": 4})
    splits = load_data(root, val_split=0.25)
    train = splits.train
    first = train.samples[0][0]
    first.write_bytes(first.read_bytes()[:40])

    with pytest.warns(RuntimeWarning, match="next readable image"):
        image, label = train[0]
    assert image.mode == "RGB" and label == train.labels[1]
    assert np.array_equal(np.asarray(image), np.asarray(train[1][0]))
    assert len(train.decode_failures) == 1 and train.decode_failures[0].startswith(str(first))
    assert train[0][1] == label and len(train.decode_failures) == 1  # same fallback, recorded once

    strict = ImageFileDataset(train.samples, train.classes, strict=True)
    with pytest.raises(ImageError):
        strict[0]


def test_a_dataset_with_nothing_decodable_left_is_an_error(tmp_path):
    paths = [save_image(tmp_path / f"{i}.png") for i in range(2)]
    dataset = ImageFileDataset([(p, 0) for p in paths], ["x"])
    for p in paths:
        p.write_bytes(b"")
    with pytest.warns(RuntimeWarning), pytest.raises(EffnetError, match="none of the 2 images"):
        dataset[1]
    with pytest.raises(IndexError):
        dataset[2]


# ---------------------------------------------------------------------------------------------
# CSV files


def test_csv_with_header_relative_and_absolute_paths(tmp_path):
    save_image(tmp_path / "imgs" / "d1.png")
    save_image(tmp_path / "imgs" / "d2.png")
    save_image(tmp_path / "imgs" / "c1.png")
    elsewhere = save_image(tmp_path / "far" / "c2.png")
    csv_path = tmp_path / "lists" / "data.csv"
    csv_path.parent.mkdir()
    rows = ["path,label", "../imgs/d1.png,dog", "../imgs/d2.png, dog ", "../imgs/c1.png,cat", f"{elsewhere},cat", ""]
    csv_path.write_text("\n".join(rows))
    splits = load_data(csv_path, val_split=0.5)
    assert splits.classes == ["cat", "dog"]
    assert splits.source == f"csv:{csv_path} (50/50 split, seed 0)"
    assert splits.skipped == []
    assert len(splits.train) == len(splits.val) == 2
    names = {p.name: label for p, label in splits.train.samples + splits.val.samples}
    assert names == {"d1.png": 1, "d2.png": 1, "c1.png": 0, "c2.png": 0}


def test_csv_without_header_and_numeric_labels_sorted_as_numbers(tmp_path):
    lines = []
    for label in range(12):
        for j in range(2):
            save_image(tmp_path / f"{label}_{j}.png")
            lines.append(f"{label}_{j}.png,{label}")
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    splits = load_data(tmp_path / "d.csv")
    assert splits.classes == [str(i) for i in range(12)]
    for path, label in splits.train.samples:
        assert path.name.startswith(f"{label}_")


def test_csv_header_detection_does_not_eat_a_data_row(tmp_path):
    for name in ("a", "b", "c", "d"):
        save_image(tmp_path / f"{name}.png")
    (tmp_path / "d.csv").write_text("a.png,y\nb.png,y\nc.png,n\nd.png,n\n")
    assert len(load_data(tmp_path / "d.csv", val_split=0.5).train) == 2
    (tmp_path / "h.csv").write_text("image name,class\na.png,y\nb.png,y\nc.png,n\nd.png,n\n")
    splits = load_data(tmp_path / "h.csv", val_split=0.5)
    assert splits.classes == ["n", "y"] and splits.skipped == []


def test_csv_missing_files_are_skipped_and_counted(tmp_path):
    for name in ("a1", "a2", "b1", "b2"):
        save_image(tmp_path / f"{name}.png")
    rows = ["a1.png,a", "gone1.png,a", "a2.png,a", "b1.png,b", "gone2.png,b", "b2.png,b"]
    (tmp_path / "d.csv").write_text("\n".join(rows))
    splits = load_data(tmp_path / "d.csv", val_split=0.5)
    assert splits.skipped == [
        f"{tmp_path / 'gone1.png'}: no such file (d.csv line 2)",
        f"{tmp_path / 'gone2.png'}: no such file (d.csv line 5)",
    ]
    assert len(splits.train) + len(splits.val) == 4

    with pytest.raises(EffnetError) as exc:
        load_data(tmp_path / "d.csv", strict=True)
    assert_one_line(exc, "names 2 missing files", "gone1.png: no such file (d.csv line 2)")


def test_csv_whose_class_has_no_existing_file(tmp_path):
    save_image(tmp_path / "a.png")
    (tmp_path / "d.csv").write_text("a.png,a\ngone.png,b\nalso-gone.png,b\n")
    with pytest.raises(EffnetError) as exc:
        load_data(tmp_path / "d.csv")
    assert_one_line(exc, "class 'b'", "all 2 of its training files are unreadable or missing")


def test_csv_unreadable_images_and_empty_cells_are_skipped(tmp_path):
    for name in ("a1", "a2", "b1", "b2"):
        save_image(tmp_path / f"{name}.png")
    (tmp_path / "zero.png").touch()
    rows = ["file,class", "a1.png,a", "a2.png,a", "b1.png,b", "b2.png,b", "zero.png,b", "unlabelled.png,", ",a"]
    (tmp_path / "d.csv").write_text("\n".join(rows))
    splits = load_data(tmp_path / "d.csv")
    assert splits.skipped[:2] == [
        f"{tmp_path / 'd.csv'} line 7: empty label",
        f"{tmp_path / 'd.csv'} line 8: empty path",
    ]
    assert splits.skipped[2].startswith(f"{tmp_path / 'zero.png'}: empty file")
    with pytest.raises(EffnetError) as exc:
        load_data(tmp_path / "d.csv", strict=True)
    assert_one_line(exc, "line 7: empty label")


def test_csv_split_column(tmp_path):
    for name in ("a1", "a2", "b1", "b2", "b3"):
        save_image(tmp_path / f"{name}.png")
    rows = [
        "path,label,split",
        "a1.png,a,train",
        "a2.png,a,VAL",
        "b1.png,b,train",
        "b2.png,b,validation",
        "b3.png,b,train",
    ]
    (tmp_path / "d.csv").write_text("\n".join(rows))
    splits = load_data(tmp_path / "d.csv", val_split=7)  # ignored: the CSV brings its own split
    assert splits.source == f"csv:{tmp_path / 'd.csv'} (split column)"
    assert sorted(sample_names(splits.train)) == ["a1.png", "b1.png", "b3.png"]
    assert sorted(sample_names(splits.val)) == ["a2.png", "b2.png"]


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("", ["no rows"]),
        ("path,label\n", ["no rows"]),
        ("\n\n , \n", ["no rows"]),
        ("a.png\n", ["no row has both a path and a label"]),
        ("a.png,x,train,extra\n", ["line 1: 4 cells"]),
        ("a.png,x,train\nb.png,y,test\n", ["line 2: the split column must say train or val, got 'test'"]),
        ("a.png,x,train\nb.png,y\n", ["line 2: the split column must say train or val, got nothing"]),
        ("a.png,x,train\nb.png,y,val\n", ["labels 'y' appear only in val rows"]),
    ],
)
def test_bad_csvs_are_one_line_errors(tmp_path, text, fragments):
    (tmp_path / "d.csv").write_text(text)
    with pytest.raises(EffnetError) as exc:
        load_data(tmp_path / "d.csv")
    assert_one_line(exc, *fragments)


def test_csv_that_is_not_text(tmp_path):
    (tmp_path / "d.csv").write_bytes(b"\xff\xfe\x00binary\x9c")
    with pytest.raises(EffnetError) as exc:
        load_data(tmp_path / "d.csv")
    assert_one_line(exc, "not a UTF-8 text file")


# ---------------------------------------------------------------------------------------------
# Split and subset rules


def test_subset_is_stratified_and_deterministic(tmp_path):
    root = make_folder(tmp_path / "data", {"a": 12, "b": 12, "c": 6})
    splits = load_data(root, subset=10)
    assert len(splits.train) == 10 and len(splits.val) == 2  # val keeps at most subset // 4
    assert np.bincount(splits.train.labels).tolist() == [4, 4, 2]
    assert splits.source == f"folder:{root} (90/10 split, seed 0) [subset: 10 train, 2 val]"
    full = load_data(root)
    assert set(sample_names(splits.train)) <= set(sample_names(full.train))
    assert sample_names(load_data(root, subset=10).train) == sample_names(splits.train)
    assert len(load_data(root, subset=1000).train) == len(full.train)


@given(st.lists(st.integers(0, 50), min_size=1, max_size=12), st.integers(1, 300))
def test_subset_counts_share_the_total_fairly(sizes, total):
    counts = subset_counts(sizes, total)
    assert sum(counts) == min(total, sum(sizes))
    assert all(0 <= c <= n for c, n in zip(counts, sizes, strict=True))
    if total >= sum(1 for n in sizes if n):
        assert all(c >= 1 for c, n in zip(counts, sizes, strict=True) if n)


@given(st.lists(st.integers(0, 500), min_size=1, max_size=12), st.floats(0.01, 0.99))
def test_val_counts_leave_every_class_a_training_item(sizes, fraction):
    for n, v in zip(sizes, val_counts(sizes, fraction), strict=True):
        assert (v == 0) if n < 2 else (1 <= v <= n - 1)
        if n >= 2:
            assert abs(v - n * fraction) <= 0.5 + 1e-9 or v in (1, n - 1)


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST


def test_fashion_mnist_from_the_debian_package():
    assert DEBIAN_FASHION_MNIST.is_dir(), "install it: apt-get install dataset-fashion-mnist"
    splits = load_data("fashion-mnist")
    assert splits.source == f"fashion-mnist:{DEBIAN_FASHION_MNIST}"
    assert splits.classes == FASHION_CLASSES and splits.skipped == []
    assert len(splits.train) == 60_000 and len(splits.val) == 10_000
    assert np.bincount(splits.train.labels).tolist() == [6000] * 10
    assert np.bincount(splits.val.labels).tolist() == [1000] * 10
    image, label = splits.train[0]
    assert image.mode == "RGB" and image.size == (28, 28) and label == 9  # the first is an ankle boot
    pixels = np.asarray(image)
    assert np.array_equal(pixels[..., 0], pixels[..., 2]) and pixels.max() > 0
    assert splits.train.images.dtype == np.uint8 and splits.train.images.shape == (60_000, 28, 28)


def test_fashion_mnist_reader_matches_torchvision(tmp_path):
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / name).write_bytes(gzip.decompress((DEBIAN_FASHION_MNIST / f"{name}.gz").read_bytes()))
    ours = _builtin.read_idx(DEBIAN_FASHION_MNIST / "t10k-images-idx3-ubyte.gz")
    assert np.array_equal(ours, read_image_file(str(tmp_path / "t10k-images-idx3-ubyte")).numpy())
    labels = _builtin.read_idx(DEBIAN_FASHION_MNIST / "t10k-labels-idx1-ubyte.gz")
    assert np.array_equal(labels, read_label_file(str(tmp_path / "t10k-labels-idx1-ubyte")).numpy())


def test_fashion_mnist_subset_and_cheap_items():
    to_tensor = T.Compose([T.PILToTensor(), T.ToDtype(torch.float32, scale=True)])
    splits = load_data("fashion-mnist", subset=2000, seed=3, eval_transform=to_tensor)
    assert np.bincount(splits.train.labels).tolist() == [200] * 10
    assert np.bincount(splits.val.labels).tolist() == [50] * 10
    assert splits.source.endswith("[subset: 2000 train, 500 val]")
    start = time.perf_counter()
    images = [splits.train[i][0] for i in range(2000)]
    assert time.perf_counter() - start < 1.0  # about 15 µs an item; a 2-core demo cannot afford much more
    assert all(im.mode == "RGB" for im in images)
    x, y = next(iter(DataLoader(splits.val, batch_size=500)))
    assert x.shape == (500, 3, 28, 28) and 0.0 <= x.min() < x.max() <= 1.0 and y.dtype == torch.int64
    again = load_data("Fashion-MNIST", subset=2000, seed=3)  # names are not case-sensitive
    assert np.array_equal(again.train.images, splits.train.images)
    assert not np.array_equal(load_data("fashion-mnist", subset=2000, seed=4).train.images, splits.train.images)


@pytest.mark.parametrize("layout", ["plain", "torchvision-root"])
def test_fashion_mnist_from_data_dir(tmp_path, layout):
    folder = tmp_path / "fm" if layout == "plain" else tmp_path / "fm" / "FashionMNIST" / "raw"
    fake_fashion_mnist(folder, suffix="" if layout == "plain" else ".gz")
    splits = load_data("fashion-mnist", data_dir=tmp_path / "fm")
    assert len(splits.train) == 30 and len(splits.val) == 20
    assert splits.source == f"fashion-mnist:{tmp_path / 'fm'}"


def test_fashion_mnist_found_in_the_effnet_cache(no_system_datasets, no_network):
    cache = Path(os.environ["EFFNET_HOME"]) / "datasets" / "fashion-mnist"
    fake_fashion_mnist(cache)
    assert load_data("fashion-mnist").source == f"fashion-mnist:{cache}"
    assert no_network == []


def test_fashion_mnist_is_downloaded_into_the_cache(no_system_datasets, monkeypatch):
    def fake_download(self):  # torchvision keeps the .gz files and extracts them next to it
        fake_fashion_mnist(Path(self.raw_folder), suffix=".gz")
        fake_fashion_mnist(Path(self.raw_folder), suffix="")

    monkeypatch.setattr(FashionMNIST, "download", fake_download)
    splits = load_data("fashion-mnist")
    cache = Path(os.environ["EFFNET_HOME"]) / "datasets" / "fashion-mnist"
    assert splits.source == f"fashion-mnist:{cache}"
    assert (cache / "FashionMNIST" / "raw" / "train-images-idx3-ubyte.gz").is_file()


def test_fashion_mnist_without_network_says_where_to_put_the_files(tmp_path, no_network):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EffnetError) as exc:
        load_data("fashion-mnist", data_dir=empty)
    assert_one_line(
        exc,
        f"fashion-mnist is not in {empty}",
        "network blocked by the test",
        "apt-get install dataset-fashion-mnist",
        "--data-dir",
        "train-images-idx3-ubyte.gz",
    )
    assert no_network, "the download should have been tried"


def test_fashion_mnist_default_places_without_network(no_system_datasets, no_network):
    with pytest.raises(EffnetError) as exc:
        load_data("fashion-mnist")
    assert_one_line(exc, "no-system-datasets/fashion-mnist or ", "datasets/fashion-mnist", "apt-get install")


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:100]), "unreadable idx file"),
        (lambda p: p.write_bytes(gzip.compress(b"\x00\x00\x0d\x03" + bytes(8))), "bad magic number"),
        (lambda p: p.write_bytes(gzip.compress(struct.pack(">BBBBIII", 0, 0, 8, 3, 5, 28, 28) + bytes(9))), "holds 9"),
    ],
    ids=["truncated-gzip", "not-ubyte", "short-data"],
)
def test_damaged_idx_files_are_one_line_errors(tmp_path, damage, fragment):
    fake_fashion_mnist(tmp_path)
    damage(tmp_path / "train-images-idx3-ubyte.gz")
    with pytest.raises(EffnetError) as exc:
        load_data("fashion-mnist", data_dir=tmp_path)
    assert_one_line(exc, "train-images-idx3-ubyte.gz", fragment)


def test_idx_labels_and_images_must_agree(tmp_path):
    fake_fashion_mnist(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(7) % 10)
    with pytest.raises(EffnetError) as exc:
        load_data("fashion-mnist", data_dir=tmp_path)
    assert_one_line(exc, "do not match")


# ---------------------------------------------------------------------------------------------
# CIFAR-10


@pytest.fixture
def cifar_dir(tmp_path, monkeypatch):
    md5 = fake_cifar10(tmp_path / "cifar")
    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5["batches.meta"]})
    return tmp_path / "cifar"


@pytest.mark.parametrize("point_at", ["root", "batches"])
def test_cifar10_from_data_dir(cifar_dir, point_at, no_network):
    data_dir = cifar_dir if point_at == "root" else cifar_dir / "cifar-10-batches-py"
    splits = load_data("cifar10", data_dir=data_dir, subset=None)
    assert splits.classes[:3] == ["airplane", "automobile", "bird"] and len(splits.classes) == 10
    assert len(splits.train) == 10 and len(splits.val) == 2
    assert splits.source == f"cifar10:{cifar_dir}"
    assert isinstance(splits.train, ImageArrayDataset)
    image, label = splits.val[1]
    assert image.mode == "RGB" and image.size == (32, 32)
    assert image.getpixel((0, 0))[0] == 5 and label == 6  # test_batch, second item
    assert no_network == []


def test_cifar10_files_that_fail_the_checksum(tmp_path):
    fake_cifar10(tmp_path)  # not the official files, and torchvision checks that before unpickling
    with pytest.raises(EffnetError) as exc:
        load_data("cifar10", data_dir=tmp_path)
    assert_one_line(exc, "cifar-10-batches-py", "official CIFAR-10")


def test_cifar10_without_network_says_where_to_put_the_files(tmp_path, no_network):
    with pytest.raises(EffnetError) as exc:
        load_data("cifar10", data_dir=tmp_path / "nothing-here")
    assert_one_line(exc, "cifar10 is not in", "network blocked by the test", "cifar-10-python.tar.gz", "--data-dir")
    assert no_network, "the download should have been tried"
