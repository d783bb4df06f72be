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
