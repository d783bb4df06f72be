"""What ``effnet train`` leaves on disk, seen as a user sees it: the command in a shell with a umask."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.training.conftest import make_image_folder

FLAGS = ["--img-size", "32", "--batch-size", "8", "--epochs", "1", "--workers", "0", "--augment", "none"]
FLAGS += ["--val-split", "0.25", "--no-progress", "--no-tensorboard"]


def _start(umask: str, *argv: str) -> subprocess.Popen:
    """``umask UMASK; effnet ARGV...`` in a shell."""
    command = ["sh", "-c", f'umask {umask} && exec "$@"', "sh", sys.executable, "-m", "effnet", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


def test_runs_respect_the_umask_remove_their_lock_and_a_failed_run_leaves_no_folder(tmp_path):
    data = make_image_folder(tmp_path / "data")
    broken = make_image_folder(tmp_path / "broken")
    (broken / "class_0" / "broken.jpg").write_bytes(b"not an image")
    runs = {"022": tmp_path / "open" / "run", "077": tmp_path / "private" / "run"}
    failed = tmp_path / "fresh" / "run"
    # Started together: each spends most of its time importing PyTorch.
    procs = {
        umask: _start(umask, "train", "--data", str(data), "--out", str(out), *FLAGS) for umask, out in runs.items()
    }
    strict = _start("022", "train", "--data", str(broken), "--out", str(failed), "--strict", *FLAGS)
    for proc in (*procs.values(), strict):
        proc.wait(timeout=300)

    for umask, out in runs.items():
        assert procs[umask].returncode == 0, procs[umask].stderr.read()[-2000:]
        names = sorted(p.name for p in out.iterdir())
        assert ".lock" not in names and {"best.safetensors", "config.yaml", "metrics.jsonl"} <= set(names)
        folder, file = (0o755, 0o644) if umask == "022" else (0o700, 0o600)
        wrong = {n: oct(m) for n, m in _modes(out).items() if m != (folder if (out / n).is_dir() else file)}
        assert not wrong, f"umask {umask}: {wrong}"

    err = strict.stderr.read()
    assert strict.returncode == 1 and err.count("\n") == 1 and "broken.jpg" in err, err
    assert not (tmp_path / "fresh").exists()  # the folders the failed run made are gone again
