"""Faults during training: SIGKILL, Ctrl-C, a full disk, two runs on one directory, running out of GPU memory.

Killing and interrupting use real processes (``python -m effnet train``, started together by the
``processes`` fixture); resuming runs in this process through :func:`effnet.cli.main`, which is
what ``effnet train --resume`` calls. Every run uses the same tiny recipe, so the one that runs
to the end gives the weights every resumed run must end with.
"""

from __future__ import annotations

import errno
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from contextlib import redirect_stderr
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from tests.training.conftest import make_image_folder, tiny_recipe

import effnet
from effnet.cli import main
from effnet.models.efficientnet import EfficientNet
from effnet.training import engine
from effnet.training import state as state_module
from effnet.training.state import STATE_FILE, load_state
from effnet.weights import io as io_module
from effnet.weights.io import read_metadata

# Resumed runs here must compute exactly what the single-threaded training processes computed.
pytestmark = pytest.mark.usefixtures("one_thread")
EPOCHS = 3
SUBPROCESS_TIMEOUT = 300  # seconds; only reached if something hangs


def train_argv(recipe: dict) -> list[str]:
    """The ``effnet train`` command line for a recipe dict (every key is a flag)."""
    argv = ["train"]
    for key, value in recipe.items():
        flag = key.replace("_", "-")
        if isinstance(value, bool):
            argv.append(f"--{flag}" if value else f"--no-{flag}")
        else:
            argv += [f"--{flag}", str(value)]
    return argv


def start_training(recipe: dict, stderr_path: Path) -> subprocess.Popen:
    """``python -m effnet train`` for ``recipe``, its stderr going to ``stderr_path``."""
    # One thread per process, like the tests in this process (one_thread): several processes
    # share 2 cores, and the same thread count everywhere keeps the arithmetic identical.
    env = {**os.environ, "EFFNET_HOME": str(stderr_path.parent / "effnet_home"), "OMP_NUM_THREADS": "1"}
    with open(stderr_path, "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "effnet", *train_argv(recipe)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=Path(__file__).parents[2],
            env=env,
            # A shell without job control starts background commands with SIGINT ignored, and
            # children inherit that (`.ci/run &` would); Ctrl-C must reach this child as it would a user's.
            preexec_fn=_default_sigint,
        )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def resume_in_process(recipe: dict, capsys) -> str:
    capsys.readouterr()
    code = main(train_argv({**recipe, "resume": True}))
    err = capsys.readouterr().err
    assert code == 0, err
    return err


def assert_same_weights(run: Path, reference: Path) -> None:
    mine, theirs = load_file(str(run / "last.safetensors")), load_file(str(reference / "last.safetensors"))
    assert mine.keys() == theirs.keys()
    for key in theirs:
        assert torch.equal(mine[key], theirs[key]), key


def assert_complete_run(run: Path) -> None:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1))
    assert load_state(run / STATE_FILE)["epoch"] == EPOCHS
    assert not list(run.glob(".*.tmp")), "temporary files left behind"


def assert_loadable_checkpoints(run: Path) -> None:
    """Whatever a killed or failed run left behind is complete: every file loads."""
    for name in ("last.safetensors", "best.safetensors", "interrupted.safetensors"):
        if (run / name).exists():
            model = effnet.create_model(weights=run / name)
            assert model.pretrained_meta["classes"] == ["class_0", "class_1"]
    if (run / STATE_FILE).exists():
        assert 1 <= load_state(run / STATE_FILE)["epoch"] <= EPOCHS


def _read_or_empty(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:  # a finished run removes its lock file
        return ""


@dataclass
class Outcome:
    """What happened to one training process started by the ``processes`` fixture."""

    recipe: dict
    proc: subprocess.Popen
    stderr_path: Path
    trigger: str = ""  # the file whose appearance started the countdown to the signal
    delay_s: float = 0.0
    signal_sent: bool = False

    @property
    def run(self) -> Path:
        return Path(self.recipe["out"])

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()


@dataclass
class Processes:
    reference: Outcome  # runs to the end
    second_code: int  # a second run started on the reference's directory while it ran
    second_err: str
    killed: list[Outcome]  # SIGKILLed at seeded random moments
    interrupted: Outcome  # sent SIGINT after its first committed epoch


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory) -> Path:
    # Two classes of five: one training step and a two-image validation per epoch.
    return make_image_folder(tmp_path_factory.mktemp("faults") / "data", classes=2, per_class=5)


@pytest.fixture(scope="module")
def processes(data_folder, tmp_path_factory) -> Processes:
    """Four training processes at once (their start-up dominates, so they overlap): one runs to the
    end while a second run is tried on its directory, two are killed, one gets Ctrl-C."""
    root = tmp_path_factory.mktemp("processes")
    rng = random.Random(2024)

    def start(name: str) -> Outcome:
        (root / name).mkdir()
        recipe = tiny_recipe(data_folder, root / name / "run", epochs=EPOCHS)
        return Outcome(recipe, start_training(recipe, root / name / "stderr.txt"), root / name / "stderr.txt")

    reference = start("reference")
    # Kill moments: a random delay after a random point of the run (the first epoch has begun, its
    # weights are being written, it has been committed).
    moments = rng.sample(["config.yaml", "last.safetensors", STATE_FILE], 2)
    killed = [start(f"killed_{i}") for i in range(len(moments))]
    for outcome, trigger in zip(killed, moments, strict=True):
        outcome.trigger, outcome.delay_s = trigger, rng.uniform(0.0, 0.5)
    interrupted = start("interrupted")
    interrupted.trigger, interrupted.delay_s = STATE_FILE, 0.2  # into the second epoch

    second_code, second_err = None, ""
    lock = reference.run / ".lock"
    countdowns: dict[int, float] = {}
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT
    try:
        while any(o.proc.poll() is None for o in (reference, *killed, interrupted)):
            assert time.monotonic() < deadline, "the training processes hang"
            if second_code is None and _read_or_empty(lock).startswith("pid"):
                captured = io.StringIO()
                with redirect_stderr(captured):
                    second_code = main(train_argv(reference.recipe))
                second_err = captured.getvalue()
            for outcome in (*killed, interrupted):
                if outcome.signal_sent or outcome.proc.poll() is not None:
                    continue
                key = id(outcome)
                if key not in countdowns and (outcome.run / outcome.trigger).exists():
                    countdowns[key] = time.monotonic() + outcome.delay_s
                if key in countdowns and time.monotonic() >= countdowns[key]:
                    outcome.proc.send_signal(signal.SIGINT if outcome is interrupted else signal.SIGKILL)
                    outcome.signal_sent = True
            time.sleep(0.01)
    finally:
        for outcome in (reference, *killed, interrupted):
            if outcome.proc.poll() is None:  # only when something above failed
                outcome.proc.kill()
            outcome.proc.wait()
    assert second_code is not None, "the reference run ended before a second run could be tried"
    return Processes(reference, second_code, second_err, killed, interrupted)


def test_a_second_run_on_the_same_directory_is_refused_and_the_first_finishes(processes):
    assert processes.second_code == 1
    assert processes.second_err.startswith("effnet: error:") and processes.second_err.count("\n") == 1
    assert f"in use by another effnet run (pid {processes.reference.proc.pid})" in processes.second_err
    assert processes.reference.proc.returncode == 0, processes.reference.stderr
    assert_complete_run(processes.reference.run)
    assert_loadable_checkpoints(processes.reference.run)


@pytest.mark.parametrize("index", [0, 1])
def test_sigkill_at_a_random_moment_then_resume_ends_like_an_uninterrupted_run(processes, capsys, index):
    outcome = processes.killed[index]
    assert outcome.proc.returncode == -signal.SIGKILL, f"not killed (after {outcome.trigger}): {outcome.stderr}"
    run = outcome.run
    assert_loadable_checkpoints(run)  # no corrupt checkpoint, whenever the kill came
    committed = load_state(run / STATE_FILE)["epoch"] if (run / STATE_FILE).exists() else 0
    logged = outcome.stderr.count(f"/{EPOCHS}: train loss")  # printed after each epoch's commit
    assert committed in (logged, logged + 1)

    err = resume_in_process(outcome.recipe, capsys)
    # Resuming starts after the last committed epoch: at most the epoch that was cut short is repeated.
    if committed:
        assert f"resuming {run} after epoch {committed}" in err
    else:
        assert "starting it from the beginning" in err
    assert_complete_run(run)
    assert_same_weights(run, processes.reference.run)


def test_ctrl_c_saves_exits_130_and_resume_ends_like_an_uninterrupted_run(processes, capsys):
    outcome = processes.interrupted
    assert outcome.signal_sent and outcome.proc.returncode == 130, outcome.stderr
    err = outcome.stderr
    assert "Traceback" not in err and err.rstrip().endswith("effnet: interrupted")
    assert "interrupted in epoch" in err and "continue with --resume" in err

    run = outcome.run
    assert_loadable_checkpoints(run)
    interrupted = read_metadata(run / "interrupted.safetensors")
    last = read_metadata(run / "last.safetensors")
    committed = load_state(run / STATE_FILE)["epoch"]
    assert interrupted["metrics"] == {"interrupted": True}
    # The signal lands in the second epoch (or just before it starts, or just after its commit).
    assert interrupted["epoch"] in (committed + 1, committed)
    # last.safetensors is the last complete epoch (or the interrupted one, if it was cut during its commit).
    assert last["epoch"] in (committed, committed + 1)

    resume_in_process(outcome.recipe, capsys)
    assert_complete_run(run)
    assert_same_weights(run, processes.reference.run)


# ---------------------------------------------------------------------------------------------
# A full disk


def full_disk_on(monkeypatch, target: str, nth: int, error: BaseException) -> dict:
    """The ``nth`` write of ``target`` fills the disk: part of the file is written, then ``error``."""
    seen = {"calls": 0, "before": None}

    def wrap(real):
        def save_file(tensors, filename, metadata=None):
            if Path(filename).name.startswith(f".{target}."):  # atomic_write's temporary file for target
                seen["calls"] += 1
                if seen["calls"] == nth:
                    destination = Path(filename).parent / target
                    seen["before"] = destination.read_bytes() if destination.exists() else None
                    Path(filename).write_bytes(b"\0" * 100)
                    raise error
            return real(tensors, filename, metadata=metadata)

        return save_file

    monkeypatch.setattr(io_module, "save_file", wrap(io_module.save_file))
    monkeypatch.setattr(state_module, "save_file", wrap(state_module.save_file))
    return seen


@pytest.mark.parametrize(
    "target, nth, error",
    [
        # safetensors reports I/O errors as SafetensorError with the OS error in the text.
        (
            "last.safetensors",
            2,
            SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),
        ),
        ("train_state.safetensors", 1, OSError(errno.ENOSPC, "No space left on device")),
    ],
)
def test_a_full_disk_keeps_the_previous_checkpoint_and_says_why(
    data_folder, tmp_path, capsys, monkeypatch, target, nth, error
):
    run = tmp_path / "run"
    recipe = tiny_recipe(data_folder, run, epochs=2)
    seen = full_disk_on(monkeypatch, target, nth, error)
    assert main(train_argv(recipe)) == 1
    err = capsys.readouterr().err.splitlines()
    assert (
        err[-1]
        == f"effnet: error: no space left on the device while writing {run / target}; the previous file is intact"
    )
    assert not any("Traceback" in line for line in err)
    assert not list(run.glob(".*.tmp")), "the partial temporary file was left behind"
    if seen["before"] is None:
        assert not (run / target).exists()
    else:
        assert (run / target).read_bytes() == seen["before"]
    assert_loadable_checkpoints(run)
    if target == "last.safetensors":
        assert read_metadata(run / target)["epoch"] == 1  # still the last complete epoch
        assert load_state(run / STATE_FILE)["epoch"] == 1
    else:
        # The first epoch's weights were written but never committed: --resume starts over and finishes
        # (the disk is "full" for that one write only).
        err = resume_in_process(recipe, capsys)
        assert "starting it from the beginning" in err
        assert load_state(run / STATE_FILE)["epoch"] == 2
        assert not list(run.glob(".*.tmp"))


def test_a_full_disk_while_appending_metrics_is_one_line(data_folder, tmp_path, capsys, monkeypatch):
    class FullFile(io.StringIO):
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    def open_on_a_full_disk(path, mode="r", *args, **kwargs):
        if mode == "a":  # the engine appends to metrics.jsonl only
            return FullFile()
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(engine, "open", open_on_a_full_disk, raising=False)
    run = tmp_path / "run"
    assert main(train_argv(tiny_recipe(data_folder, run, epochs=1))) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (
        f"effnet: error: could not write {run / 'metrics.jsonl'}: no space left on the device; "
        "the last complete epoch is kept (continue with --resume)"
    )
    assert "Traceback" not in err and not (run / STATE_FILE).exists()


# ---------------------------------------------------------------------------------------------
# Out of memory


@pytest.mark.parametrize(
    "phase, batch_size, message",
    [
        ("training", 8, "out of memory at batch size 8 on cpu; try --batch-size 4"),
        ("validation", 8, "out of memory at batch size 8 on cpu; try --batch-size 4"),
        ("training", 1, "out of memory on cpu even at batch size 1; try a smaller --img-size or --amp bf16"),
    ],
)
def test_out_of_memory_names_the_batch_size_and_a_smaller_one(
    data_folder, tmp_path, capsys, monkeypatch, phase, batch_size, message
):
    real_forward = EfficientNet.forward

    def forward(self, x):
        if self.training == (phase == "training"):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_forward(self, x)

    monkeypatch.setattr(EfficientNet, "forward", forward)
    run = tmp_path / "run"
    assert main(train_argv(tiny_recipe(data_folder, run, epochs=1, batch_size=batch_size))) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"effnet: error: {message}"
    assert "Traceback" not in err
    assert not (run / STATE_FILE).exists()
    if phase == "validation":  # training itself went through; nothing half-written was committed
        assert not list(run.glob(".*.tmp"))
