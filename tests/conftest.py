"""Shared fixtures. Reference packages are test dependencies: a missing one is an error, not a skip."""

from __future__ import annotations

import getpass
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

SKIMAGE_DATA = Path(importlib.util.find_spec("skimage").submodule_search_locations[0]) / "data"

# What other libraries put in TMPDIR by design, once, not effnet's to remove: onnxruntime writes a
# session id to .ses whenever it is imported; importing torchvision creates torch.compile's cache folder.
FOREIGN_TEMP_FILES = {".ses", f"torchinductor_{getpass.getuser()}"}
_SESSION_TMPDIR = pytest.StashKey[Path]()
_SAVED_ENV = pytest.StashKey[dict]()


def pytest_configure(config: pytest.Config) -> None:
    """Run the session with TMPDIR at a fresh folder, so that whatever the code under test (and
    the processes it starts) leaves in a temporary folder can be seen at the end; pytest's own
    tmp_path folders stay in the real one (their retention is set in pyproject.toml)."""
    config.stash[_SAVED_ENV] = {
        key: os.environ.get(key) for key in ("TMPDIR", "PYTEST_DEBUG_TEMPROOT", "OMP_NUM_THREADS")
    }
    if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
        # One thread per pytest-xdist worker (one worker per core), for the processes the tests start
        # too: two workers of two threads each on two cores took 14m25s against one process's 10m12s.
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)
    os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", tempfile.gettempdir())
    fresh = Path(tempfile.mkdtemp(prefix="effnet-tests-tmpdir-"))
    config.stash[_SESSION_TMPDIR] = fresh
    os.environ["TMPDIR"] = str(fresh)
    tempfile.tempdir = None  # tempfile caches the folder it chose; make it look again


def pytest_unconfigure(config: pytest.Config) -> None:
    for key, value in config.stash.get(_SAVED_ENV, {}).items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    tempfile.tempdir = None
    fresh = config.stash.get(_SESSION_TMPDIR, None)
    if fresh is not None:
        shutil.rmtree(fresh, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _no_temporary_files_left(request: pytest.FixtureRequest):
    """The suite fails if it leaves anything in TMPDIR: a user's /tmp must not fill up either."""
    fresh = request.config.stash[_SESSION_TMPDIR]
    yield
    left = sorted(p for p in fresh.iterdir() if p.name not in FOREIGN_TEMP_FILES)
    # Name a few files inside each folder left behind: they usually tell which test made it.
    named = [str(q.relative_to(fresh)) for p in left for q in [p, *sorted(p.rglob("*"))[:3]]]
    assert not left, f"the tests left these in TMPDIR ({fresh}): {named}"


def randomize_batchnorm(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every batch norm non-trivial statistics so parity tests exercise them."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_((torch.rand(n, generator=gen) - 0.5) * 0.4)
    return model.eval()


@pytest.fixture
def sample_photos() -> dict[str, Path]:
    return {name: SKIMAGE_DATA / name for name in ("chelsea.png", "coffee.png", "rocket.jpg")}


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the user's real weight cache."""
    monkeypatch.setenv("EFFNET_HOME", str(tmp_path_factory.mktemp("effnet_home")))


@pytest.fixture(scope="module")
def one_thread():
    """One PyTorch thread for a module: tiny (32-pixel) workloads gain nothing from more, several
    processes may share the 2 cores, and the same thread count keeps results bitwise comparable
    with processes started with ``OMP_NUM_THREADS=1``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
