"""Every ``effnet`` command the README shows runs, as a user would type it, in a fresh process.

The commands are read from README.md's code blocks. :data:`SMALL` maps each one to the command
actually run here: the same command, with options appended or changed only to make it small
(32-pixel images, one epoch, one timed repetition) and, where the README's command downloads
weights, a local file in the same format instead. A README command missing from the table fails
the test, and so does a table entry the README no longer shows, so the two cannot drift apart.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import torchvision
from tests.training.conftest import make_image_folder

README = Path(__file__).resolve().parents[1] / "README.md"
FAST = ["--img-size", "32", "--batch-size", "4", "--workers", "0", "--no-progress", "--no-tensorboard"]
TIMING = ["--warmup", "0", "--repeats", "1", "--no-memory"]


@dataclass(frozen=True)
class Run:
    """What runs for one README command: its argv after ``effnet``, the steps it needs first, and files it writes."""

    argv: list[str]
    after: tuple[str, ...] = ()  # README commands whose outputs this one reads
    stdout_to: str | None = None  # save stdout there (the README's `bench ... --json` feeds `report`)
    checks: list[str] = field(default_factory=list)  # files that must exist afterwards


@dataclass(frozen=True)
class NotRunHere:
    """A README command this test does not run, and where it is tested instead."""

    reason: str


B0_RUN = "effnet train --model efficientnet_b0 --weights imagenet --data photos/ --out runs/b0 --epochs 10"
LITE0_RUN = (
    "effnet train --model efficientnet_lite0 --weights imagenet --data DIR --out runs/lite0 --epochs 10 "
    "--batch-size 64 --img-size 224 --optimizer adamw --amp bf16"
)
LITE0_RESUME = "effnet train --out runs/lite0 --resume --epochs 12"
LITE0_EXPORT = "effnet export --weights efficientnet_lite0:imagenet --out lite0.onnx"
REFERENCE_BENCH = "effnet bench efficientnet_b0 --reference torchvision --runtime torch,onnxruntime --threads 2"
PRUNE = (
    "effnet prune --weights runs/b0/best.safetensors --data photos/ --out runs/b0-pruned --target 0.5 --steps 2 "
    "--finetune-epochs 3"
)
PRUNE_SPARSE = (
    "effnet prune --weights runs/b0/best.safetensors --data photos/ --out runs/b0-sparse --method unstructured "
    "--target 0.8"
)
QUANTIZE = "effnet quantize --weights runs/b0/best.safetensors --data photos/ --out runs/b0-int8"
PRUNE_FAST = ["--img-size", "32", "--batch-size", "4", "--workers", "0", "--no-progress", "--repeats", "1"]
DISTILL = (
    "effnet distill --teacher runs/b0/best.safetensors --student efficientnet_lite0 --student-weights imagenet "
    "--data photos/ --out runs/lite0-kd --temperature 4 --alpha 0.7"
)
DISTILL_PRUNED = (
    "effnet distill --teacher runs/b0/best.safetensors --student runs/b0-pruned/model.safetensors --data photos/ "
    "--out runs/b0-pruned-kd --feature stages.5:stages.5"
)
RUN_BENCH = "effnet bench model.onnx runs/x/best.safetensors --batch-sizes 1,8,64 --data val/ --json"

# README command (as `readme_commands` normalises it) -> what runs here.
SMALL: dict[str, Run | NotRunHere] = {
    # The command as a user runs it, fine-tuning only: tests/cli/test_demo.py runs the whole pipeline
    # (prune, quantize, report) at the same size, and running it twice cost a minute of the suite.
    "effnet demo": Run(
        ["demo", "--subset", "48", "--epochs", "1", "--img-size", "32", "--no-compress", "--out", "runs/demo"],
        checks=["runs/demo/train/best.safetensors"],
    ),
    "effnet list": Run(["list"]),
    "effnet info efficientnet_b3": Run(["info", "efficientnet_b3"]),
    # torchvision's ImageNet B0 weights are a download: a torchvision-format file of the same shape stands in.
    B0_RUN: Run(
        ["train", "--model", "efficientnet_b0", "--weights", "tv_b0.pth", "--data", "photos/", "--out", "runs/b0"]
        + ["--epochs", "1", *FAST],
        checks=["runs/b0/best.safetensors", "runs/b0/summary.json"],
    ),
    "effnet eval --weights runs/b0/best.safetensors --data photos/ --json": Run(
        ["eval", "--weights", "runs/b0/best.safetensors", "--data", "photos/", "--json", "--workers", "0"],
        after=(B0_RUN,),
    ),
    "effnet report runs/b0 runs/lite0 bench.json --out report.html": Run(
        ["report", "runs/b0", "runs/lite0", "bench.json", "--out", "report.html"],
        after=(LITE0_RESUME, RUN_BENCH),
        checks=["report.html"],
    ),
    "effnet predict cat.jpg photos/ --model efficientnet_lite0 --weights imagenet --topk 5": Run(
        ["predict", "cat.jpg", "photos/", "--model", "efficientnet_lite0", "--weights", "imagenet", "--topk", "5"]
    ),
    "effnet predict photos/ --weights runs/x/best.safetensors --json": Run(
        ["predict", "photos/", "--weights", "runs/x/best.safetensors", "--json"],
        after=(B0_RUN,),
    ),
    "effnet predict photos/ --weights lite0.onnx": Run(
        ["predict", "photos/", "--weights", "lite0.onnx"],
        after=(LITE0_EXPORT,),
    ),
    # The input size is left to the models: the reference rows once failed without --img-size.
    REFERENCE_BENCH: Run(
        ["bench", "efficientnet_b0", "--reference", "torchvision", "--runtime", "torch,onnxruntime", "--threads", "2"]
        + TIMING
    ),
    RUN_BENCH: Run(
        ["bench", "model.onnx", "runs/x/best.safetensors", "--batch-sizes", "1,8,64", "--data", "val/", "--json"]
        + TIMING,
        after=(B0_RUN,),
        stdout_to="bench.json",
    ),
    LITE0_EXPORT: Run(
        ["export", "--weights", "efficientnet_lite0:imagenet", "--out", "lite0.onnx", "--img-size", "32"],
        checks=["lite0.onnx"],
    ),
    LITE0_RUN: Run(
        ["train", "--model", "efficientnet_lite0", "--weights", "imagenet", "--data", "DIR", "--out", "runs/lite0"]
        + ["--epochs", "1", "--optimizer", "adamw", "--amp", "bf16", *FAST],
    ),
    "effnet train --config recipe.yaml --epochs 20": Run(
        ["train", "--config", "recipe.yaml", "--epochs", "1"], checks=["runs/recipe/summary.json"]
    ),
    # The run folder holds its recipe: only the number of epochs is given (two, not twelve, here).
    LITE0_RESUME: Run(["train", "--out", "runs/lite0", "--resume", "--epochs", "2"], after=(LITE0_RUN,)),
    PRUNE: Run(
        ["prune", "--weights", "runs/b0/best.safetensors", "--data", "photos/", "--out", "runs/b0-pruned"]
        + ["--target", "0.5", "--steps", "2", "--finetune-epochs", "1", *PRUNE_FAST],
        after=(B0_RUN,),
        checks=["runs/b0-pruned/model.safetensors", "runs/b0-pruned/report.json", "runs/b0-pruned/bench.json"],
    ),
    PRUNE_SPARSE: Run(
        ["prune", "--weights", "runs/b0/best.safetensors", "--data", "photos/", "--out", "runs/b0-sparse"]
        + ["--method", "unstructured", "--target", "0.8", *PRUNE_FAST],
        after=(B0_RUN,),
        checks=["runs/b0-sparse/model.safetensors", "runs/b0-sparse/report.json"],
    ),
    "effnet compress --recipe examples/compress-lite0.yaml --out runs/lite0-compressed": NotRunHere(
        "the example prunes, distils and quantizes a Fashion-MNIST Lite0 at 64 px (minutes); "
        "tests/compress/test_recipe.py runs a recipe with the same steps on a small folder and checks the example "
        "recipe loads"
    ),
    (
        "effnet compress --auto --weights runs/demo/train/best.safetensors --data fashion-mnist "
        "--max-accuracy-drop 1.0 --objective latency --out runs/auto"
    ): NotRunHere(
        "the search fine-tunes a Fashion-MNIST Lite0 several times (tens of minutes on a CPU); "
        "tests/compress/test_auto.py runs --auto end to end (int8, a pruning rung, a family member, resume) on a "
        "small folder"
    ),
    "effnet train --model efficientnet_b0_phi-1 --data photos/ --out runs/b0-phi-1 --epochs 10": Run(
        ["train", "--model", "efficientnet_b0_phi-1", "--data", "photos/", "--out", "runs/b0-phi-1"]
        + ["--epochs", "1", *FAST],
        checks=["runs/b0-phi-1/best.safetensors"],
    ),
    "effnet scale-search --data photos/ --out runs/search --subset 4000 --epochs 1": Run(
        ["scale-search", "--data", "photos/", "--out", "runs/search", "--subset", "4000", "--epochs", "1"]
        + ["--max-candidates", "2", "--img-scale", "0.125", "--batch-size", "4", "--workers", "0"]
        + ["--runtime", "torch", "--repeats", "1", "--threads", "1"],
        checks=["runs/search/scale_search.json"],
    ),
    QUANTIZE: NotRunHere(
        "static quantization calibrates on at least 16 training images and photos/ holds 12; "
        "tests/compress/test_quantize.py runs this command on a 36-image folder, then eval, predict and bench "
        "on its output"
    ),
    DISTILL: Run(
        ["distill", "--teacher", "runs/b0/best.safetensors", "--student", "efficientnet_lite0"]
        + ["--student-weights", "imagenet", "--data", "photos/", "--out", "runs/lite0-kd"]
        + ["--temperature", "4", "--alpha", "0.7", "--epochs", "1", *FAST],
        after=(B0_RUN,),
        checks=["runs/lite0-kd/best.safetensors"],
    ),
    DISTILL_PRUNED: Run(
        ["distill", "--teacher", "runs/b0/best.safetensors", "--student", "runs/b0-pruned/model.safetensors"]
        + ["--data", "photos/", "--out", "runs/b0-pruned-kd", "--feature", "stages.5:stages.5", "--epochs", "1", *FAST],
        after=(PRUNE,),
        checks=["runs/b0-pruned-kd/best.safetensors"],
    ),
    "torchrun --nproc_per_node 4 -m effnet train ...": NotRunHere(
        "four processes on a 2-core machine; tests/training/test_distributed.py runs `torchrun -m effnet train` "
        "with two CPU processes and checks the weights against one process"
    ),
}

# Files the README's commands take as given, and commands that stand between two README commands.
RECIPE = """model: efficientnet_lite0
weights: imagenet
data: photos/
out: runs/recipe
img_size: 32
batch_size: 4
workers: 0
progress: false
tensorboard: false
"""
BETWEEN = {RUN_BENCH: [["export", "--weights", "runs/x/best.safetensors", "--out", "model.onnx"]]}  # "your" export


def readme_commands(text: str) -> list[str]:
    """Every command in the README's shell code blocks that runs effnet, normalised to one line.

    Continuation lines are joined, comments dropped, ``.venv/bin/effnet`` is written ``effnet``,
    and a command line holding several commands (``a && b``) counts each.
    """
    commands: list[str] = []
    for info, body in re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M):
        if info in ("python", "yaml", "json"):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words and Path(words[0]).name == "effnet":
                    words[0] = "effnet"
                elif not (words and "-m" in words and words[words.index("-m") + 1 :][:1] == ["effnet"]):
                    continue
                command = " ".join(words)
                if command not in commands:
                    commands.append(command)
    return commands


def test_commands_are_found_the_way_a_reader_sees_them():
    text = """
```bash
bash scripts/bootstrap.sh && .venv/bin/effnet demo   # the main job
effnet train --data DIR \\
    --epochs 2        # continued
pip install .
torchrun --nproc_per_node 2 -m effnet train ...
```

```python
effnet.train({})
```
"""
    assert readme_commands(text) == [
        "effnet demo",
        "effnet train --data DIR --epochs 2",
        "torchrun --nproc_per_node 2 -m effnet train ...",
    ]


def test_the_table_covers_exactly_the_readme_commands():
    shown = readme_commands(README.read_text(encoding="utf-8"))
    assert len(shown) >= 10  # the parser found the command blocks
    missing = [c for c in shown if c not in SMALL]
    assert not missing, f"README commands with no entry in tests/test_readme.py SMALL: {missing}"
    stale = [c for c in SMALL if c not in shown]
    assert not stale, f"SMALL entries the README no longer shows: {stale}"


def workspace(root: Path) -> Path:
    """The files the README's commands take as given: photos, a cat, a validation folder, a recipe."""
    make_image_folder(root / "photos", classes=2, per_class=6, size=24)
    make_image_folder(root / "DIR", classes=2, per_class=6, size=24, seed=1)
    shutil.copytree(root / "photos", root / "val")
    shutil.copy(next((root / "photos" / "class_0").iterdir()), root / "cat.jpg")
    (root / "recipe.yaml").write_text(RECIPE)
    torch.manual_seed(0)
    torch.save(torchvision.models.efficientnet_b0().state_dict(), root / "tv_b0.pth")
    return root


def run_effnet(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "effnet", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # two commands share the two cores
    )


def test_every_readme_command_runs(tmp_path):
    root = workspace(tmp_path)
    shown = readme_commands(README.read_text(encoding="utf-8"))
    runs = {c: SMALL[c] for c in shown if isinstance(SMALL.get(c), Run)}
    assert runs, "nothing to run"
    started = time.monotonic()
    done: dict[str, subprocess.CompletedProcess] = {}
    took: dict[str, float] = {}

    def run(command: str) -> subprocess.CompletedProcess:
        begin = time.monotonic()
        try:
            return _run(command)
        finally:
            took[command] = time.monotonic() - begin

    def _run(command: str) -> subprocess.CompletedProcess:
        step = runs[command]
        for extra in BETWEEN.get(command, []):
            prep = run_effnet(extra, root)
            assert prep.returncode == 0, f"{extra}: {prep.stderr[-2000:]}"
        result = run_effnet(step.argv, root)
        if step.stdout_to and result.returncode == 0:
            (root / step.stdout_to).write_text(result.stdout)
        return result

    # Commands start as soon as the ones they read from are done, two at a time.
    pending = dict(runs)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {}
        while pending or futures:
            ready = [c for c, step in pending.items() if all(a in done for a in step.after)]
            for command in ready:
                futures[command] = pool.submit(run, command)
                del pending[command]
            if not futures:
                pytest.fail(f"README commands waiting on each other: {list(pending)}")
            finished = _first_done(futures)[0]
            result = futures.pop(finished).result()
            assert result.returncode == 0 and "Traceback" not in result.stderr, (
                f"README command failed: {finished}\nran: effnet {shlex.join(runs[finished].argv)}\n"
                f"{result.stderr[-3000:]}"
            )
            for path in runs[finished].checks:
                assert (root / path).exists(), f"{finished} did not write {path}"
            done[finished] = result
            if finished == B0_RUN:
                shutil.copytree(root / "runs/b0", root / "runs/x")  # runs/x is the README's name for "your run"
    assert set(done) == set(runs)
    assert "torchvision:efficientnet_b0" in done[REFERENCE_BENCH].stdout
    print(f"{len(done)} README commands in {time.monotonic() - started:.0f}s")
    for command, seconds in sorted(took.items(), key=lambda kv: -kv[1]):
        print(f"{seconds:5.1f}s  {command}")


def _first_done(futures: dict) -> list[str]:
    """The commands whose process has ended, waiting for at least one."""
    finished, _ = wait(list(futures.values()), return_when=FIRST_COMPLETED)
    return [c for c, f in futures.items() if f in finished]
