import os

import pytest
import torch

from effnet.errors import EffnetError
from effnet.training.state import RunLock, flatten, load_state, save_state, unflatten


def test_optimizer_state_round_trips_exactly(tmp_path):
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "epoch": 3, "best": None, "nan": float("nan"), "t": (1, "a")}
    save_state(tmp_path / "s.safetensors", state)
    loaded = load_state(tmp_path / "s.safetensors")
    assert loaded["epoch"] == 3 and loaded["best"] is None and loaded["t"] == (1, "a")
    assert loaded["nan"] != loaded["nan"]
    restored = torch.optim.AdamW(model.parameters(), lr=0.1)
    restored.load_state_dict(loaded["optimizer"])
    for key in (0, 1):  # integer keys survive JSON
        assert torch.equal(restored.state_dict()["state"][key]["exp_avg"], opt.state_dict()["state"][key]["exp_avg"])


def test_flatten_refuses_arbitrary_objects():
    with pytest.raises(TypeError):
        flatten({"x": object()}, {})
    assert unflatten(flatten([1, 2.5, "x"], {}), {}) == [1, 2.5, "x"]


def test_corrupt_or_missing_state(tmp_path):
    with pytest.raises(EffnetError, match="nothing to resume"):
        load_state(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    with pytest.raises(EffnetError, match="corrupt"):
        load_state(bad)


def test_run_lock_is_exclusive_and_released(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(EffnetError, match="in use by another effnet run"):
            with RunLock(tmp_path):
                pass
    with RunLock(tmp_path):  # released after the first run ended
        pass


def test_run_lock_removes_its_file_and_the_folders_it_made_while_empty(tmp_path):
    run = tmp_path / "new" / "run"
    with RunLock(run) as lock:
        assert lock.path.read_text() == f"pid {os.getpid()}"
    assert not (tmp_path / "new").exists()  # a run that wrote nothing leaves nothing

    with RunLock(run):
        (run / "config.yaml").write_text("epochs: 1\n")
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]  # the lock file goes, the work stays

    existing = tmp_path / "mine"
    existing.mkdir()
    with RunLock(existing):
        pass
    assert existing.is_dir() and not any(existing.iterdir())  # a folder the user made is theirs


def test_run_lock_retries_when_the_file_it_locked_was_removed(tmp_path, monkeypatch):
    """A finishing run unlinks its lock file while holding the lock; a process that opened that file
    just before gets the lock on a file no longer on disk, and must try again on the new one."""
    stale = tmp_path / ".lock"
    stale_handle = open(stale, "a+")  # noqa: SIM115 - closed by RunLock when it gives up on it
    stale.unlink()
    real_open = RunLock._open
    handles = iter([stale_handle])
    monkeypatch.setattr(RunLock, "_open", lambda self: next(handles, None) or real_open(self))
    with RunLock(tmp_path) as lock:
        assert stale_handle.closed
        assert lock.path.exists() and lock.path.read_text().startswith("pid")
        with pytest.raises(EffnetError, match="in use by another effnet run"):
            with RunLock(tmp_path):  # the file now on disk is the locked one
                pass
