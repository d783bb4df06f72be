import io
import json
import os
import pickle
import stat
from pathlib import Path

import pytest
import torch
import torchvision
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from safetensors.torch import save
from tests.export.tiny import tiny_effnet

import effnet
from effnet.weights.io import atomic_write, read_checkpoint, write_checkpoint
from effnet.weights.specs import Preprocessing


class _RunsCode:
    """Unpickling this calls os.system: what a hostile checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _RunsCode(marker)}, path)
    with pytest.raises(effnet.EffnetError, match="refused to load .*arbitrary code"):
        effnet.create_model("efficientnet_b0", weights=path)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_plain_pickle_file_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(effnet.EffnetError):
        read_checkpoint(path)
    assert not marker.exists()


def test_zero_byte_checkpoint(tmp_path):
    path = tmp_path / "empty.pth"
    path.touch()
    with pytest.raises(effnet.EffnetError, match="empty"):
        effnet.create_model("efficientnet_b0", weights=path)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.99])
def test_truncated_checkpoint(tmp_path, fraction):
    path = tmp_path / "b0.pth"
    torch.save(torchvision.models.efficientnet_b0().state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(effnet.EffnetError, match="corrupt or truncated"):
        effnet.create_model("efficientnet_b0", weights=path)


def test_truncated_safetensors(tmp_path):
    model = effnet.create_model("efficientnet_b0", num_classes=3)
    path = write_checkpoint(tmp_path / "m.safetensors", model.state_dict(), {"arch": model.config.to_dict()})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(effnet.EffnetError, match="corrupt or truncated"):
        effnet.create_model(weights=path)


def test_random_bytes_and_text_files(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(effnet.EffnetError):
        read_checkpoint(junk)
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(effnet.EffnetError):
        read_checkpoint(text)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(effnet.EffnetError, match="does not exist"):
        effnet.create_model("efficientnet_b0", weights=tmp_path / "nope.pth")
    with pytest.raises(effnet.EffnetError, match="directory"):
        read_checkpoint(tmp_path)


def test_effnet_format_round_trip_carries_architecture_and_classes(tmp_path):
    model = effnet.create_model("efficientnet_lite0", num_classes=3).eval()
    meta = {"arch": model.config.to_dict(), "classes": ["cat", "dog", "owl"]}
    path = write_checkpoint(tmp_path / "run" / "best.safetensors", model.state_dict(), meta)
    assert not list(path.parent.glob("*.tmp"))
    loaded = effnet.create_model(weights=path).eval()  # no name: the file says what it is
    assert loaded.config == model.config
    assert loaded.pretrained_meta["classes"] == ["cat", "dog", "owl"]
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_effnet_checkpoint_of_another_architecture_is_named(tmp_path):
    model = effnet.create_model("efficientnet_lite0", num_classes=3)
    path = write_checkpoint(tmp_path / "m.safetensors", model.state_dict(), {"arch": model.config.to_dict()})
    with pytest.raises(effnet.EffnetError, match="holds weights for efficientnet_lite0, not efficientnet_b0"):
        effnet.create_model("efficientnet_b0", weights=path)


def test_class_count_change_keeps_backbone_of_own_checkpoint(tmp_path):
    model = effnet.create_model("efficientnet_lite0", num_classes=3)
    path = write_checkpoint(tmp_path / "m.safetensors", model.state_dict(), {"arch": model.config.to_dict()})
    five = effnet.create_model(weights=path, num_classes=5)
    assert five.num_classes == 5
    assert torch.equal(five.stem.conv.weight, model.stem.conv.weight)


# ---------------------------------------------------------------------------------------------
# Property tests: whatever bytes or metadata a checkpoint holds, the only failure is an EffnetError


def _valid_files() -> dict[str, bytes]:
    """Small valid checkpoints in each container: torch zip, torch legacy pickle, safetensors."""
    tensors = {"features.0.weight": torch.randn(4, 3, 3, 3), "classifier.bias": torch.zeros(2)}
    zipped, legacy = io.BytesIO(), io.BytesIO()
    torch.save({"state_dict": tensors, "epoch": 3, "arch": "efficientnet_b0"}, zipped)
    torch.save(tensors, legacy, _use_new_zipfile_serialization=False)
    return {"zip": zipped.getvalue(), "legacy": legacy.getvalue(), "safetensors": _safetensors_bytes(tensors)}


def _safetensors_bytes(tensors, metadata=None) -> bytes:
    return save(tensors, metadata=metadata)


VALID = _valid_files()


def _assert_reads_or_refuses(path) -> None:
    try:
        ckpt = read_checkpoint(path)
    except effnet.EffnetError as exc:
        message = str(exc)
        assert "\n" not in message and str(path) in message, message
    else:
        assert all(isinstance(v, torch.Tensor) for v in ckpt.tensors.values()) and ckpt.tensors


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".pth", ".pt", ".bin", ".safetensors"]))
@example(data=b"\x80\x02}q\x00.", suffix=".pth")  # an empty pickled dict
@example(data=(10**9).to_bytes(8, "little") + b'{"a":', suffix=".safetensors")  # header longer than the file
def test_arbitrary_bytes_never_crash_read_checkpoint(tmp_path, data, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    _assert_reads_or_refuses(path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(sorted(VALID)),
    cut=st.floats(0.0, 1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), max_size=6),
)
def test_damaged_real_checkpoints_never_crash_read_checkpoint(tmp_path, kind, cut, flips):
    """Valid files cut short and with bytes overwritten reach deep into torch.load and safetensors."""
    data = bytearray(VALID[kind])
    for where, value in flips:
        data[int(where * (len(data) - 1))] = value
    data = data[: max(1, int(len(data) * cut))] if cut < 1.0 else data
    path = tmp_path / ("fuzz.safetensors" if kind == "safetensors" else "fuzz.pth")
    path.write_bytes(bytes(data))
    _assert_reads_or_refuses(path)


def test_a_zip_claiming_a_newer_zip_version_is_refused_in_one_line(tmp_path):
    """zipfile raises NotImplementedError for such archives (found by the fuzz test above)."""
    data = bytearray(VALID["zip"])
    central = data.find(b"PK\x01\x02")
    assert central > 0
    data[central + 6 : central + 8] = (64).to_bytes(2, "little")  # "version needed to extract": 6.4
    path = tmp_path / "newer.pth"
    path.write_bytes(bytes(data))
    _assert_reads_or_refuses(path)


_TINY = tiny_effnet(num_classes=2)
_TINY_TENSORS = {k: v.contiguous() for k, v in _TINY.state_dict().items()}
_TINY_META = {
    "format": "effnet",
    "arch": _TINY.config.to_dict(),
    "classes": ["a", "b"],
    "preprocessing": {"input_size": 64, "resize_size": 72, "interpolation": "bilinear"},
}
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
# Where an edit goes: the whole metadata (""), any top-level entry, any preprocessing, architecture or stage field.
_META_PLACES = ["", "unknown_key", "classes", "classes.0", "preprocessing", "arch", "arch.stages", "arch.stages.0"]
_META_PLACES += [f"preprocessing.{k}" for k in ("input_size", "resize_size", "interpolation", "mean", "std")]
_META_PLACES += [f"arch.{k}" for k in _TINY_META["arch"] if k != "stages"]
_META_PLACES += [f"arch.stages.{i}.{k}" for i in (0, 3) for k in _TINY_META["arch"]["stages"][0]]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(place=st.sampled_from(_META_PLACES), value=_JSON)
@example(place="arch", value={})  # no name: found by this test
@example(place="arch.stages", value=[])
@example(place="preprocessing.mean", value=[0.5, 0.5])
@example(place="preprocessing.input_size", value=30000)  # would exhaust memory at the first image
def test_hostile_effnet_metadata_is_an_effnet_error(tmp_path, place, value):
    """An effnet checkpoint whose metadata was edited: it loads with usable metadata, or fails in one line."""
    meta = json.loads(json.dumps(_TINY_META))
    if place:
        *parents, leaf = place.split(".")
        target = meta
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        target[int(leaf) if isinstance(target, list) else leaf] = value
    else:
        meta = value
    path = tmp_path / "edited.safetensors"
    path.write_bytes(_safetensors_bytes(_TINY_TENSORS, {"effnet": json.dumps(meta)}))
    try:
        model = effnet.create_model(weights=path)
    except effnet.EffnetError as exc:
        assert "\n" not in str(exc)
    else:
        classes = model.pretrained_meta["classes"]
        assert all(isinstance(c, str) for c in classes) and len(classes) == model.num_classes
        Preprocessing.from_dict(model.pretrained_meta["preprocessing"])


def test_checkpoint_asking_for_a_huge_input_is_refused(tmp_path):
    meta = json.loads(json.dumps(_TINY_META))
    meta["preprocessing"]["input_size"] = 30000  # about 10 GB for one image's float tensor alone
    path = tmp_path / "huge.safetensors"
    path.write_bytes(_safetensors_bytes(_TINY_TENSORS, {"effnet": json.dumps(meta)}))
    with pytest.raises(effnet.EffnetError, match=r"input_size must be between 8 and 2048 pixels, got 30000"):
        effnet.create_model(weights=path)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_write_gives_new_files_the_umask_mode(tmp_path, umask):
    """Like any file the user creates (not tempfile's 0600), whatever the umask."""
    previous = os.umask(umask)
    try:
        written = [
            atomic_write(tmp_path / "a.json", lambda tmp: Path(tmp).write_text("{}")),
            write_checkpoint(tmp_path / "w.safetensors", {"x": torch.zeros(2)}, {}),  # safetensors makes a 0600 file
        ]
    finally:
        os.umask(previous)
    assert [oct(stat.S_IMODE(p.stat().st_mode)) for p in written] == [oct(0o666 & ~umask)] * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "w.safetensors"]
