"""Logit parity of Keras EfficientNet B0-B7 files imported by effnet, for docs/checkpoints.md (not a test).

For each variant, builds ``keras.applications.EfficientNetBn`` on Keras 3's PyTorch backend with
random weights, random batch-norm statistics and random input (Normalization) statistics,
saves it as ``.keras``, ``.weights.h5`` and legacy ``.h5``, loads each file with
``effnet.create_model(weights=PATH)`` and prints one markdown row: the largest absolute
difference between Keras's logits on 0-255 pixels and effnet's on the same pixels normalised as
the recorded preprocessing says. ``--imagenet-graph`` builds the models as ``weights="imagenet"``
does (with the extra Rescaling after Normalization; Keras's download replaced by a local file of
random values) without their top, and compares the final feature maps instead.

    KERAS_BACKEND=torch python benchmarks/keras_parity.py --size 64
    KERAS_BACKEND=torch python benchmarks/keras_parity.py --size 64 --imagenet-graph
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path
from unittest import mock

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import effnet  # noqa: E402
from effnet.weights.specs import Preprocessing  # noqa: E402

IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def randomize(model: keras.Model, seed: int, input_stats: tuple | None) -> None:
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.get_weights()[0].shape[0]
            # Residual branches with unit-scale gammas make a deep random network explode (B7's logits
            # reach 1e4 and float32 rounding is amplified to the same size); trained ones keep them small.
            low, high = (0.1, 0.3) if layer.name.endswith("project_bn") else (0.5, 1.5)
            stats = [rng.uniform(low, high, n), rng.uniform(-0.2, 0.2, n), rng.uniform(-0.5, 0.5, n)]
            layer.set_weights([*stats, rng.uniform(0.5, 1.5, n)])
        elif isinstance(layer, keras.layers.Normalization):
            mean, var = input_stats or (rng.uniform(0.3, 0.6, 3), rng.uniform(0.03, 0.1, 3))
            layer.set_weights([np.asarray(mean), np.asarray(var), np.asarray(0)])


def build(index: int, size: int, imagenet_graph: bool, folder: Path) -> keras.Model:
    builder = getattr(keras.applications, f"EfficientNetB{index}")
    keras.utils.set_random_seed(index)
    if not imagenet_graph:
        model = builder(weights=None, input_shape=(size, size, 3), classes=1000, classifier_activation=None)
        randomize(model, index, None)
        return model
    import keras.src.applications.efficientnet as keras_efficientnet

    donor = builder(weights=None, include_top=False, input_shape=(size, size, 3))
    randomize(donor, index, IMAGENET_STATS)
    donor.save_weights(folder / "donor.weights.h5")
    with mock.patch.object(keras_efficientnet.file_utils, "get_file", return_value=str(folder / "donor.weights.h5")):
        return builder(weights="imagenet", include_top=False, input_shape=(size, size, 3))


def compare(reference: keras.Model, path: Path, size: int, features: bool) -> tuple[str, float, float]:
    ours = effnet.create_model(weights=path, num_classes=10 if features else None).eval()
    pre = Preprocessing.from_dict(ours.pretrained_meta["preprocessing"])
    pixels = np.random.default_rng(1).uniform(0, 255, (2, size, size, 3)).astype("float32")
    expected = np.asarray(reference.predict(pixels, verbose=0))
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2) / 255.0
    x = (x - torch.tensor(pre.mean).view(1, 3, 1, 1)) / torch.tensor(pre.std).view(1, 3, 1, 1)
    with torch.no_grad():
        actual = (ours.forward_features(x).permute(0, 2, 3, 1) if features else ours(x)).numpy()
    return ours.config.name, float(np.abs(actual - expected).max()), float(np.abs(expected).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", type=int, nargs="+", default=list(range(8)))
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--imagenet-graph", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    versions = f"keras {keras.__version__} ({keras.backend.backend()} backend), torch {torch.__version__}"
    print(f"<!-- {versions}, {platform.machine()} -->")
    what = "feature map" if args.imagenet_graph else "logits"
    print(f"| Keras model | file | effnet model | max abs diff ({what}) | max abs Keras {what} |")
    print("|---|---|---|---|---|")
    for index in args.variants:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            reference = build(index, args.size, args.imagenet_graph, folder)
            files = {
                "model.keras": reference.save,
                "model.weights.h5": reference.save_weights,
                "legacy.h5": reference.save,
            }
            for name, save in files.items():
                save(folder / name)
                arch, diff, scale = compare(reference, folder / name, args.size, args.imagenet_graph)
                print(
                    f"| EfficientNetB{index} @ {args.size} px | {name} | {arch} | {diff:.2e} | {scale:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
