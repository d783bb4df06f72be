"""Shared fixtures. Reference packages are test dependencies: a missing one is an error, not a skip."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

SKIMAGE_DATA = Path(importlib.util.find_spec("skimage").submodule_search_locations[0]) / "data"


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
