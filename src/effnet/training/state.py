"""Run-directory bookkeeping: resumable training state in safetensors, atomic files, a run lock.

effnet writes no pickles. The training state (model, optimizer, scheduler, EMA, loss scaler)
is a nest of dicts, lists, numbers and tensors; it is flattened into safetensors tensors plus
a JSON skeleton that records where each tensor goes, and rebuilt exactly on resume.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from effnet.errors import EffnetError
from effnet.weights.io import atomic_write

STATE_FILE = "train_state.safetensors"


def flatten(obj: Any, tensors: dict[str, torch.Tensor], path: str = "t") -> Any:
    """Replace every tensor in ``obj`` by a reference, collecting the tensors; returns JSON-able data."""
    if isinstance(obj, torch.Tensor):
        key = f"{path}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        # Keys may be ints (optimizer state is keyed by parameter index): keep their type.
        return {"__dict__": [[k, flatten(v, tensors, f"{path}.{i}")] for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, list | tuple):
        items = [flatten(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if obj is None or isinstance(obj, bool | int | float | str):
        if isinstance(obj, float) and obj != obj:
            return {"__float__": "nan"}
        if isinstance(obj, float) and obj in (float("inf"), float("-inf")):
            return {"__float__": "inf" if obj > 0 else "-inf"}
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a training state")


def unflatten(data: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten`."""
    if isinstance(data, dict):
        if "__tensor__" in data:
            return tensors[data["__tensor__"]]
        if "__dict__" in data:
            return {k: unflatten(v, tensors) for k, v in data["__dict__"]}
        if "__tuple__" in data:
            return tuple(unflatten(v, tensors) for v in data["__tuple__"])
        if "__float__" in data:
            return float(data["__float__"])
        raise EffnetError("training state file is malformed (unknown entry); it was not written by effnet")
    if isinstance(data, list):
        return [unflatten(v, tensors) for v in data]
    return data


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write a training state atomically as safetensors + JSON skeleton."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten(state, tensors)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"effnet_state": json.dumps(skeleton)}))


def load_state(path: Path) -> dict[str, Any]:
    """Read a training state written by :func:`save_state`."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            skeleton = json.loads((fh.metadata() or {})["effnet_state"])
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except FileNotFoundError:
        raise EffnetError(f"no training state at {path}; nothing to resume (start without --resume)") from None
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        raise EffnetError(f"training state {path} is corrupt ({exc}); start a new run in another directory") from None
    return unflatten(skeleton, tensors)


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2) + "\n"))


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


class RunLock:
    """An exclusive lock on a run directory, so two runs never write into one.

    Uses ``flock`` on ``RUN_DIR/.lock``: the kernel releases it when the process dies, even by
    SIGKILL, so a crashed run never leaves a stale lock behind. On exit the lock file is removed
    (while still locked), and so is the run directory itself when this lock created it and
    nothing else was written there, e.g. after a run that failed before its first epoch.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / ".lock"
        self._fh: Any = None
        self._created: list[Path] = []  # the folders this lock made, deepest last

    def __enter__(self) -> RunLock:
        # A finishing run unlinks its lock file while holding the lock, so the file this process
        # opened may be gone (or replaced) by the time it gets the lock: then try again.
        for _ in range(100):
            fh = self._open()
            if fh is None:
                continue
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                owner = fh.read().strip() or "another process"
                fh.close()
                raise EffnetError(
                    f"{self.path.parent} is in use by another effnet run ({owner}); wait for it or choose another --out"
                ) from None
            if self._is_on_disk(fh):
                break
            fh.close()
        else:
            raise EffnetError(f"could not lock {self.path}: it keeps being replaced; is another run starting there?")
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        self._fh = fh
        return self

    def _open(self) -> Any:
        """The lock file, opened (None if another run removed its empty folder meanwhile)."""
        missing = []
        for folder in (self.path.parent, *self.path.parent.parents):
            if folder.exists():
                break
            missing.append(folder)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._created += [f for f in reversed(missing) if f not in self._created]
            return open(self.path, "a+")  # noqa: SIM115 - held for the run's lifetime
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise EffnetError(f"cannot use {self.path.parent} as a run directory: {exc.strerror or exc}") from None

    def _is_on_disk(self, fh: Any) -> bool:
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fh.fileno())
        return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)

    def __exit__(self, *exc: object) -> None:
        if self._fh is None:
            return
        self.path.unlink(missing_ok=True)  # before unlocking: see __enter__
        fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
        self._fh.close()
        self._fh = None
        for folder in reversed(self._created):
            try:
                folder.rmdir()  # only succeeds while empty
            except OSError:
                break
        self._created = []
