"""Keras EfficientNet files (.keras, .weights.h5, legacy .h5) against Keras itself.

Keras 3 runs here on its PyTorch backend, so no TensorFlow is needed. Each reference model gets
random batch-norm statistics (and input statistics) so that every layer is exercised; Keras is
fed 0-255 NHWC pixels, effnet the same pixels normalised as the imported weights' recorded
preprocessing says, in NCHW.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # must precede the first keras import

import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402
from unittest import mock  # noqa: E402

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import effnet  # noqa: E402
from effnet.data.images import eval_transform  # noqa: E402
from effnet.weights.io import read_checkpoint  # noqa: E402
from effnet.weights.specs import Preprocessing  # noqa: E402

TOL = 1e-4
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SUFFIXES = ("model.keras", "model.weights.h5", "legacy.h5")

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    # Keras's torch backend converts tensors to numpy the way numpy 2 deprecates; not effnet's concern.
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]


def randomize(model: keras.Model, seed: int, input_stats: tuple | None = None) -> keras.Model:
    """Random batch-norm statistics; the Normalization layer gets ``input_stats`` or random ones."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.get_weights()[0].shape[0]
            # Small gammas on residual branches, as trained networks have: with unit ones a deep random
            # network's activations explode and float32 rounding grows with them.
            low, high = (0.1, 0.3) if layer.name.endswith("project_bn") else (0.5, 1.5)
            gamma, beta, mean, var = (
                rng.uniform(low, high, n),
                rng.uniform(-0.2, 0.2, n),
                rng.uniform(-0.5, 0.5, n),
                rng.uniform(0.5, 1.5, n),
            )
            layer.set_weights([gamma, beta, mean, var])
        elif isinstance(layer, keras.layers.Normalization):
            mean, variance = input_stats or (rng.uniform(0.3, 0.6, 3), rng.uniform(0.03, 0.1, 3))
            layer.set_weights([np.asarray(mean), np.asarray(variance), np.asarray(0)])
    return model


def save_all(model: keras.Model, folder: Path) -> dict[str, Path]:
    """The three files a Keras user may have: model.save (.keras), save_weights, legacy model.save (.h5)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {suffix: folder / suffix for suffix in SUFFIXES}
    model.save(paths["model.keras"])
    model.save_weights(paths["model.weights.h5"])
    model.save(paths["legacy.h5"])  # Keras 3 still writes Keras 2's HDF5 layout for a .h5 name
    return paths


def keras_pixels(size: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (2, size, size, 3)).astype("float32")


def effnet_input(pixels: np.ndarray, model: torch.nn.Module) -> torch.Tensor:
    pre = Preprocessing.from_dict(model.pretrained_meta["preprocessing"])
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2) / 255.0
    return (x - torch.tensor(pre.mean).view(1, 3, 1, 1)) / torch.tensor(pre.std).view(1, 3, 1, 1)


def max_diff(reference: keras.Model, ours: torch.nn.Module, size: int, output: str = "logits") -> float:
    """Largest difference of Keras's output and effnet's ``output``: logits, softmax or (headless) features."""
    pixels = keras_pixels(size)
    expected = np.asarray(reference.predict(pixels, verbose=0))
    with torch.no_grad():
        x = effnet_input(pixels, ours.eval())
        if output == "features":
            actual = ours.forward_features(x).permute(0, 2, 3, 1)
        else:
            actual = ours(x).softmax(dim=1) if output == "softmax" else ours(x)
    assert actual.shape == expected.shape
    return float(np.abs(actual.numpy() - expected).max())


@pytest.fixture(scope="module")
def b0_prefix(tmp_path_factory) -> tuple[keras.Model, dict[str, Path]]:
    """B0 with a 10-class top, built as weights=None: no correction layer after Normalization, so
    with the published ImageNet statistics it divides by sqrt(std), as tf.keras models did before the fix."""
    keras.utils.set_random_seed(0)
    model = keras.applications.EfficientNetB0(
        weights=None, input_shape=(64, 64, 3), classes=10, classifier_activation=None
    )
    randomize(model, 0, (IMAGENET_MEAN, IMAGENET_STD))
    return model, save_all(model, tmp_path_factory.mktemp("b0"))


@pytest.fixture(scope="module")
def b2_odd(tmp_path_factory) -> tuple[keras.Model, dict[str, Path]]:
    """B2 at 65 px (odd sides at every stride, Keras's other padding case), random input statistics,
    and softmax outputs (effnet's logits are compared after a softmax)."""
    keras.utils.set_random_seed(2)
    model = keras.applications.EfficientNetB2(weights=None, input_shape=(65, 65, 3), classes=7)
    randomize(model, 2)
    return model, save_all(model, tmp_path_factory.mktemp("b2"))


@pytest.fixture(scope="module")
def b3_imagenet_notop(tmp_path_factory) -> tuple[keras.Model, dict[str, Path]]:
    """B3 as weights="imagenet" builds it (with the 1/sqrt(std) Rescaling after Normalization), without
    its top. Keras's download is replaced by a local weights file holding random values."""
    import keras.src.applications.efficientnet as keras_efficientnet

    folder = tmp_path_factory.mktemp("b3")
    keras.utils.set_random_seed(3)
    donor = randomize(
        keras.applications.EfficientNetB3(weights=None, include_top=False, input_shape=(64, 64, 3)),
        3,
        (IMAGENET_MEAN, IMAGENET_STD),  # what the published weights store
    )
    donor.save_weights(folder / "donor.weights.h5")
    with mock.patch.object(keras_efficientnet.file_utils, "get_file", return_value=str(folder / "donor.weights.h5")):
        model = keras.applications.EfficientNetB3(weights="imagenet", include_top=False, input_shape=(64, 64, 3))
    assert sum(isinstance(layer, keras.layers.Rescaling) for layer in model.layers) == 2
    return model, save_all(model, folder / "saved")


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_b0_logits_parity_and_the_pre_fix_input_scaling(b0_prefix, suffix):
    reference, paths = b0_prefix
    ours = effnet.create_model(weights=paths[suffix])
    assert ours.config.name == "efficientnet_b0" and ours.config.num_classes == 10
    assert ours.config.padding == "same" and ours.config.bn_eps == 1e-3
    assert ours.pretrained_meta["source_format"] == "keras"
    assert max_diff(reference, ours, 64) <= TOL
    pre = ours.pretrained_meta["preprocessing"]
    assert pre["mean"] == pytest.approx(IMAGENET_MEAN, abs=1e-6)
    # Without the correction layer Keras divides by sqrt(variance) = sqrt(ImageNet std).
    assert pre["std"] == pytest.approx([s**0.5 for s in IMAGENET_STD], abs=1e-6)
    assert pre["interpolation"] == "bicubic"
    # The built input size where the file records it (.keras, model.save), else the variant's.
    size = 224 if suffix == "model.weights.h5" else 64
    assert (pre["input_size"], pre["resize_size"]) == (size, size + 32)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_b2_softmax_parity_at_odd_size(b2_odd, suffix):
    reference, paths = b2_odd
    ours = effnet.create_model("efficientnet_b2", weights=paths[suffix])
    assert max_diff(reference, ours, 65, "softmax") <= TOL


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_b3_imagenet_graph_without_top(b3_imagenet_notop, suffix):
    reference, paths = b3_imagenet_notop
    with pytest.raises(
        effnet.EffnetError, match=r"no classifier weights .*include_top=False.*num_classes=N\) puts a new head"
    ):
        effnet.create_model(weights=paths[suffix])
    ours = effnet.create_model(weights=paths[suffix], num_classes=4)
    assert ours.config.name == "efficientnet_b3" and ours.num_classes == 4
    assert max_diff(reference, ours, 64, "features") <= TOL
    pre = ours.pretrained_meta["preprocessing"]
    # With the correction layer the chain is exactly ImageNet's mean/std.
    assert pre["mean"] == pytest.approx(IMAGENET_MEAN, abs=1e-6)
    assert pre["std"] == pytest.approx(IMAGENET_STD, abs=1e-6)
    pyramid = effnet.create_model(weights=paths[suffix], features_only=True)(torch.zeros(1, 3, 64, 64))
    assert [f.shape[1] for f in pyramid] == [24, 32, 48, 136, 384]  # B3's stage widths


def strip_to_older_keras3(src: Path, dst: Path) -> Path:
    """What Keras 3 releases before layer names were recorded wrote: no ``name`` attributes and no
    groups for layers without weights."""
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as fh:
        for key in list(fh["layers"]):
            group = fh["layers"][key]["vars"]
            if len(group) == 0:
                del fh["layers"][key]
            else:
                del group.attrs["name"]
    return dst


@pytest.mark.parametrize(
    "fixture, size, output, std",
    [("b2_odd", 65, "softmax", None), ("b3_imagenet_notop", 64, "features", IMAGENET_STD)],
)
def test_weights_file_without_layer_names(request, tmp_path, fixture, size, output, std):
    reference, paths = request.getfixturevalue(fixture)
    path = strip_to_older_keras3(paths["model.weights.h5"], tmp_path / "old.weights.h5")
    ours = effnet.create_model(weights=path, num_classes=3 if output == "features" else None)
    assert ours.config.name == reference.name.replace("efficientnet", "efficientnet_")
    assert max_diff(reference, ours, size, output) <= TOL
    if std is not None:  # the published statistics without a layer listing: Keras 3's imagenet graph assumed
        assert ours.pretrained_meta["preprocessing"]["std"] == pytest.approx(std, abs=1e-6)


def to_keras2_weights_file(src: Path, dst: Path) -> Path:
    """Keras 2's ``save_weights("x.h5")`` layout, rewritten from Keras 3's legacy file: layer names at the
    root, variables named ``layer/kernel:0`` and depthwise kernels ``depthwise_kernel``."""
    with h5py.File(src, "r") as old, h5py.File(dst, "w") as new:
        root = old["model_weights"]
        new.attrs["layer_names"] = root.attrs["layer_names"]
        new.attrs["keras_version"] = b"2.9.0"
        for name in (n.decode() if isinstance(n, bytes) else n for n in root.attrs["layer_names"]):
            group = new.create_group(name)
            names = []
            for weight_name in root[name].attrs["weight_names"]:
                weight_name = weight_name.decode() if isinstance(weight_name, bytes) else weight_name
                var = weight_name.rsplit("/", 1)[1]
                var = "depthwise_kernel" if name.endswith("dwconv") and var == "kernel" else var
                names.append(f"{name}/{var}:0".encode())
                group.create_dataset(f"{name}/{var}:0", data=root[name][weight_name][()])
            group.attrs["weight_names"] = names
    return dst


def test_keras2_save_weights_layout(b0_prefix, tmp_path):
    reference, paths = b0_prefix
    ours = effnet.create_model(weights=to_keras2_weights_file(paths["legacy.h5"], tmp_path / "keras2.h5"))
    assert max_diff(reference, ours, 64) <= TOL
    assert ours.pretrained_meta["preprocessing"]["std"] == pytest.approx([s**0.5 for s in IMAGENET_STD], abs=1e-6)


def test_read_checkpoint_gives_torch_layouts_under_keras_names(b0_prefix):
    _, paths = b0_prefix
    tensors = read_checkpoint(paths["model.keras"]).tensors
    assert tensors["stem_conv.weight"].shape == (32, 3, 3, 3)
    assert tensors["block2a_dwconv.weight"].shape == (96, 1, 3, 3)
    assert tensors["block2a_se_reduce.weight"].shape == (4, 96, 1, 1)
    assert tensors["predictions.weight"].shape == (10, 1280)
    assert set(tensors["stem_bn.running_var"].tolist()) != {1.0}  # the randomized statistics came through


def test_predict_cli_on_a_keras_file_matches_keras(b0_prefix, sample_photos):
    reference, paths = b0_prefix
    photo = sample_photos["chelsea.png"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "effnet", "predict", "--weights", str(paths["model.keras"]), str(photo), "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)
    assert len(result["predictions"]) == 5
    # Keras on the same resized and cropped 0-255 pixels gives the same top classes and probabilities.
    pre = Preprocessing.from_dict(effnet.create_model(weights=paths["model.keras"]).pretrained_meta["preprocessing"])
    crop = eval_transform(Preprocessing(pre.input_size, pre.resize_size, pre.interpolation, (0, 0, 0), (1, 1, 1)))
    pixels = crop(Image.open(photo).convert("RGB")).permute(1, 2, 0).numpy()[None] * 255.0
    probs = torch.from_numpy(np.asarray(reference.predict(pixels, verbose=0))).softmax(1)[0]
    for p in result["predictions"]:
        assert p["prob"] == pytest.approx(probs[p["index"]].item(), abs=TOL)
    assert result["predictions"][0]["index"] == int(probs.argmax())


# ---- files that are not a usable Keras EfficientNet: one line each ----


def one_line_error(path, **kwargs) -> str:
    with pytest.raises(effnet.EffnetError) as info:
        effnet.create_model(weights=path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_truncated_files(b0_prefix, tmp_path, suffix):
    _, paths = b0_prefix
    data = paths[suffix].read_bytes()
    cut = tmp_path / suffix
    cut.write_bytes(data[: len(data) // 2])
    assert "corrupt or truncated" in one_line_error(cut)


def test_damaged_archives(b0_prefix, tmp_path):
    _, paths = b0_prefix
    noise = tmp_path / "noise.keras"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    assert "corrupt or truncated" in one_line_error(noise)
    garbage_h5 = tmp_path / "garbage.h5"
    garbage_h5.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(200))
    assert "corrupt or truncated" in one_line_error(garbage_h5)
    # A good archive whose weights file was replaced by junk.
    broken = tmp_path / "broken.keras"
    with zipfile.ZipFile(paths["model.keras"]) as src, zipfile.ZipFile(broken, "w") as dst:
        dst.writestr("config.json", src.read("config.json"))
        dst.writestr("model.weights.h5", b"not hdf5 at all")
    assert "corrupt or truncated" in one_line_error(broken)
    no_weights = tmp_path / "empty.keras"
    with zipfile.ZipFile(no_weights, "w") as dst:
        dst.writestr("config.json", "{}")
    assert "no model.weights.h5" in one_line_error(no_weights)


def test_a_keras_model_that_is_not_an_efficientnet(tmp_path):
    keras.utils.set_random_seed(0)
    tiny = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4), keras.layers.Dense(2)])
    paths = save_all(tiny, tmp_path)
    for path in paths.values():
        assert "not a Keras EfficientNet" in one_line_error(path)


def test_an_efficientnet_nested_in_another_model(b3_imagenet_notop, tmp_path):
    base, _ = b3_imagenet_notop
    wrapped = keras.Sequential([base, keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    for path in save_all(wrapped, tmp_path).values():
        assert "nested inside another" in one_line_error(path)


def _replace_stem_kernel(path: Path, how: str, folder: Path) -> None:
    """Store the stem kernel of a legacy file the way ``how`` says, each a way to reach beyond the file."""
    with h5py.File(path, "r+") as fh:
        group = fh["model_weights/stem_conv/stem_conv"]
        data = group["kernel"][()]
        del group["kernel"]
        if how == "external link":
            group["kernel"] = h5py.ExternalLink(str(folder / "other.h5"), "/kernel")
        elif how == "external storage":
            (folder / "raw.bin").write_bytes(data.tobytes())
            group.create_dataset(
                "kernel", shape=data.shape, dtype=data.dtype, external=[(str(folder / "raw.bin"), 0, data.nbytes)]
            )
        elif how == "virtual dataset":
            with h5py.File(folder / "other.h5", "w") as other:
                other["kernel"] = data
            layout = h5py.VirtualLayout(shape=data.shape, dtype=data.dtype)
            layout[...] = h5py.VirtualSource(str(folder / "other.h5"), "kernel", shape=data.shape)
            group.create_virtual_dataset("kernel", layout)
        else:  # a filter HDF5 would look for as a plugin library; optional, so writing skips it
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_chunk(data.shape)
            dcpl.set_filter(32004, h5py.h5z.FLAG_OPTIONAL, ())
            space = h5py.h5s.create_simple(data.shape)
            dataset = h5py.h5d.create(group.id, b"kernel", h5py.h5t.NATIVE_FLOAT, space, dcpl=dcpl)
            dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, np.ascontiguousarray(data, dtype=np.float32))


@pytest.mark.parametrize(
    "how, message",
    [
        ("external link", "another place or file"),
        ("external storage", "in other files"),
        ("virtual dataset", "in other files"),
        ("filter plugin", "filter plugin 32004"),
    ],
)
def test_data_from_outside_the_file_is_refused(b0_prefix, tmp_path, how, message):
    _, paths = b0_prefix
    path = tmp_path / "reaching.h5"
    shutil.copy(paths["legacy.h5"], path)
    _replace_stem_kernel(path, how, tmp_path)
    assert message in one_line_error(path)


def test_missing_h5py_is_one_line_naming_the_install(b0_prefix, monkeypatch):
    _, paths = b0_prefix
    monkeypatch.setitem(sys.modules, "h5py", None)  # makes `import h5py` fail
    assert "pip install h5py" in one_line_error(paths["model.keras"])


def test_cli_error_for_a_bad_keras_file(tmp_path, capsys):
    from effnet.cli import main

    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"PK\x03\x04 truncated")
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    code = main(["predict", "--weights", str(bad), str(image)])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert err.strip().startswith("effnet: error:") and len(err.strip().splitlines()) == 1
