"""``effnet compress --recipe recipe.yaml``: compression steps chained on one model, one report.

A recipe names the trained checkpoint, its data and a list of steps, each a mapping with one
key (the step) and its settings::

    weights: runs/lite0/best.safetensors
    data: fashion-mnist
    subset: 12000            # data options shared by every step
    steps:
      - prune: {target: 0.5, sensitivity: true, finetune_epochs: 2}
      - distill: {epochs: 1}  # recover with the original model as teacher
      - quantize: {observer: minmax}

Steps run in order in ``OUT/steps/<n>-<step>/``, each on the previous step's model, and keep
their own result and report. An interrupted recipe continues with ``--resume`` at the step it
reached (inside a pruning or distillation step at the epoch reached). At the end every stage,
the original included, is measured in one interleaved run and ``OUT/report.json`` holds one row
per stage (``effnet report`` draws it), with the sensitivity and per-layer quantization error of
the steps that measured them.

Steps: ``prune`` (the settings of ``effnet prune``), ``lite`` (EfficientNet-Lite's swap, ReLU6
for SiLU and no squeeze-excitation, then ``epochs`` of fine-tuning with the original as teacher,
``alpha`` 0.7 unless set; :mod:`effnet.compress.lite`), ``distill`` (train the current model with
the original as teacher, settings of ``effnet distill``), ``finetune`` (the same without a
teacher), ``quantize`` (settings of ``effnet quantize``; last, since it yields an ONNX file;
``runtime: auto`` lets it choose between ONNX Runtime and OpenVINO as ``effnet quantize`` does,
recording the choice in the file, while the stage table stays timed in ONNX Runtime; ``tune:
true`` tries every int8 setting as ``effnet quantize --tune`` does) and
``export`` (the float model as ONNX; last).
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from effnet.errors import EffnetError
from effnet.schemas import CompressionPass, CompressionReport

__all__ = ["Recipe", "RecipeStep", "load_recipe", "measure_stages", "run_recipe"]

STEPS = ("prune", "lite", "distill", "finetune", "quantize", "export")
SHARED = (
    "data_dir", "subset", "batch_size", "img_size", "workers", "device", "seed", "threads", "repeats", "test_images"
)  # fmt: skip
_PRUNE_KEYS = (
    "method target target_kind importance scope round_to include_stem include_head include_squeeze latency_aware steps "
    "finetune_epochs lr augment amp sensitivity bench_size max_ratio "
    "sensitivity_images distill_alpha temperature"
).split()
_QUANTIZE_KEYS = (
    "mode dtype observer percentile per_channel activations bias_correction keep_float auto_float sensitivity_images "
    "classifier_bits reduce_range float_stem "
    "calib_images qat_epochs qat_lr rounding adaround_iters runtime tune"
).split()
_TRAIN_KEYS = "epochs lr augment amp temperature alpha".split()
_STEP_KEYS = {
    "prune": _PRUNE_KEYS,
    "lite": [*_TRAIN_KEYS, "relu6", "remove_se"],
    "distill": _TRAIN_KEYS,
    "finetune": [k for k in _TRAIN_KEYS if k not in ("temperature", "alpha")],
    "quantize": _QUANTIZE_KEYS,
    "export": [],
}


@dataclass
class RecipeStep:
    name: str
    settings: dict[str, Any]
    line: int  # in the recipe file, for messages


@dataclass
class Recipe:
    weights: str
    data: str
    steps: list[RecipeStep]
    shared: dict[str, Any] = field(default_factory=dict)
    source: str = "recipe"


def load_recipe(path: str | Path) -> Recipe:
    """Read and check a recipe; an unknown step or setting is refused with its line number."""
    import yaml

    from effnet.configs import load_yaml

    data = load_yaml(path)
    text = Path(path).read_text()
    node = yaml.compose(text)
    lines = _step_lines(node)
    where = str(path)
    for key in data:
        if key not in ("weights", "data", "steps", *SHARED):
            raise EffnetError(
                f"{where}, line {_key_line(node, key)}: unknown setting {key!r}; a recipe has weights, data, steps "
                f"and {', '.join(SHARED)}"
            )
    for key in ("weights", "data", "steps"):
        if not data.get(key):
            raise EffnetError(f"{where}: the recipe needs {key!r}")
    if not isinstance(data["steps"], list):
        raise EffnetError(f"{where}, line {_key_line(node, 'steps')}: steps must be a list of steps")
    steps = []
    seen_final = None
    for index, entry in enumerate(data["steps"]):
        line = lines[index] if index < len(lines) else 0
        if not isinstance(entry, dict) or len(entry) != 1:
            raise EffnetError(f"{where}, line {line}: each step is one name with its settings, e.g. '- prune: {{}}'")
        name, settings = next(iter(entry.items()))
        settings = settings or {}
        if name not in STEPS:
            raise EffnetError(f"{where}, line {line}: unknown step {name!r}; steps are {', '.join(STEPS)}")
        if not isinstance(settings, dict):
            raise EffnetError(f"{where}, line {line}: the settings of {name} must be a mapping")
        for key in settings:
            if key not in _STEP_KEYS[name]:
                allowed = ", ".join(_STEP_KEYS[name]) or "none"
                raise EffnetError(f"{where}, line {line}: unknown {name} setting {key!r}; {name} takes {allowed}")
        if seen_final is not None:
            raise EffnetError(
                f"{where}, line {line}: {name} comes after {seen_final}, which writes an ONNX file; "
                f"put {seen_final} last"
            )
        if name in ("quantize", "export"):
            seen_final = name
        steps.append(RecipeStep(name, dict(settings), line))
    shared = {k: data[k] for k in SHARED if k in data}
    recipe = Recipe(str(data["weights"]), str(data["data"]), steps, shared, where)
    _check_settings(recipe)
    return recipe


def _check_settings(recipe: Recipe) -> None:
    """Build every step's job once so a bad value fails before the first step runs."""
    for step in recipe.steps:
        try:
            if step.name == "prune":
                _prune_job(recipe, step, Path("."), resume=False).validate()
            elif step.name == "quantize":
                _quantize_job(recipe, step, Path(".")).validate()
            elif step.name in ("distill", "finetune", "lite"):
                if step.name == "lite":
                    _lite_config(step)
                epochs = step.settings.get("epochs", 1)
                if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
                    raise EffnetError(f"epochs must be a whole number of at least 1, got {epochs!r}")
        except (EffnetError, TypeError) as exc:
            raise EffnetError(f"{recipe.source}, line {step.line}: {step.name}: {exc}") from None


def _step_lines(node: Any) -> list[int]:
    import yaml

    if not isinstance(node, yaml.MappingNode):
        return []
    for key, value in node.value:
        if key.value == "steps" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def _key_line(node: Any, name: str) -> int:
    for key, _ in getattr(node, "value", []):
        if getattr(key, "value", None) == name:
            return key.start_mark.line + 1
    return 0


def _log(message: str) -> None:
    print(f"effnet: {message}", file=sys.stderr, flush=True)


def run_recipe(recipe: Recipe, out: str | Path, resume: bool = False) -> CompressionReport:
    """Run the recipe's steps into ``out``; returns (and writes) the combined report."""
    out = Path(out)
    state_path = out / "recipe.json"
    if out.exists() and any(out.iterdir()) and not resume:
        raise EffnetError(f"{out} is not empty; use --resume to continue a recipe there or choose another --out")
    identity = {"weights": recipe.weights, "data": recipe.data, "shared": recipe.shared}
    identity["steps"] = [{s.name: s.settings} for s in recipe.steps]
    if resume and state_path.exists():
        recorded = json.loads(state_path.read_text())
        if recorded != json.loads(json.dumps(identity)):
            raise EffnetError(f"{out} holds a recipe with other settings; resume it with the same recipe")
    elif resume and out.exists() and any(out.iterdir()):
        raise EffnetError(f"{out} holds no recipe to resume (no recipe.json)")
    out.mkdir(parents=True, exist_ok=True)
    _write_json(state_path, identity)

    current = Path(recipe.weights)
    stages: list[tuple[str, Path, CompressionReport | None]] = [("original", current, None)]
    for number, step in enumerate(recipe.steps, 1):
        folder = out / "steps" / f"{number}-{step.name}"
        _log(f"step {number}/{len(recipe.steps)}: {step.name} into {folder}")
        current, report = _run_step(recipe, step, current, folder)
        stages.append((f"{number}-{step.name}", current, report))
    report = _measure(recipe, stages, out)
    _write_json(out / "report.json", report.to_dict())
    return report


def _run_step(recipe: Recipe, step: RecipeStep, current: Path, folder: Path) -> tuple[Path, CompressionReport | None]:
    from effnet.compress.quantize_runner import run_quantize
    from effnet.compress.runner import run_prune

    done = folder / "report.json"
    if step.name == "prune":
        job = _prune_job(recipe, step, folder, resume=folder.exists())
        job.weights = str(current)
        if done.exists():
            return folder / "model.safetensors", _read(done)
        return folder / "model.safetensors", run_prune(job)
    if step.name == "quantize":
        if done.exists():
            return folder / "model.onnx", _read(done)
        shutil.rmtree(folder, ignore_errors=True)  # quantizing is short: a half-done step starts again
        job = _quantize_job(recipe, step, folder)
        job.weights = str(current)
        return folder / "model.onnx", run_quantize(job)
    if step.name == "export":
        from effnet.export import export_model
        from effnet.factory import load_model

        path = folder / "model.onnx"
        if not path.exists():
            export_model(load_model(None, current), "onnx", path, img_size=recipe.shared.get("img_size"))
        return path, None
    if step.name == "lite":
        from effnet.compress.lite import swap_and_recover

        settings = {k: v for k, v in step.settings.items() if k not in ("relu6", "remove_se")}
        return swap_and_recover(
            current,
            recipe.data,
            folder,
            teacher=recipe.weights,
            config=_lite_config(step),
            epochs=settings.pop("epochs", 1),
            alpha=settings.pop("alpha", 0.7),
            temperature=settings.pop("temperature", None),
            **settings,
            **{k: v for k, v in recipe.shared.items() if k in _TRAIN_SHARED},
        ), None
    return _train_step(recipe, step, current, folder), None


_TRAIN_SHARED = ("data_dir", "subset", "batch_size", "img_size", "workers", "device", "seed")


def _lite_config(step: RecipeStep) -> Any:
    from effnet.compress.lite import LiteSwapConfig

    return LiteSwapConfig(**{k: v for k, v in step.settings.items() if k in ("relu6", "remove_se")})


# The stage table times each stage this many runs back to back per round, so each runs with its own
# weights warm in the caches as a deployed model does (one run per round made the small int8 stage
# pay for the float stage's 13 MiB of weights: docs/benchmarks.md, "Warm caches").
STAGE_CONSECUTIVE = 20

_QUANTIZE_JOB_KEYS = ("data_dir", "subset", "batch_size", "img_size", "workers", "seed", "threads", "repeats")


def _prune_job(recipe: Recipe, step: RecipeStep, folder: Path, resume: bool) -> Any:
    from effnet.compress.runner import PruneJob

    names = {f.name for f in fields(PruneJob)}
    shared = {k: v for k, v in recipe.shared.items() if k in names}
    settings = dict(step.settings)
    return PruneJob(
        weights=recipe.weights, data=recipe.data, out=str(folder), resume=resume, **shared, **settings
    )  # fmt: skip


def _quantize_job(recipe: Recipe, step: RecipeStep, folder: Path) -> Any:
    from effnet.compress.quantize import QuantizeConfig
    from effnet.compress.quantize_runner import QuantizeJob

    settings = dict(step.settings)
    runtime = settings.pop("runtime", "onnxruntime")  # unless asked, the runtime the stage table is timed in
    tune = settings.pop("tune", False)  # every int8 setting, the fastest accurate file kept
    if not isinstance(tune, bool):
        raise EffnetError(f"tune is true or false, got {tune!r}")  # load_recipe adds where
    return QuantizeJob(
        weights=recipe.weights,
        data=recipe.data,
        out=str(folder),
        config=QuantizeConfig(**settings),
        runtime=runtime,
        tune=tune,
        **{k: v for k, v in recipe.shared.items() if k in _QUANTIZE_JOB_KEYS},
    )


def _train_step(recipe: Recipe, step: RecipeStep, current: Path, folder: Path) -> Path:
    """Fine-tune the current model, with the original as teacher for ``distill``; returns the best checkpoint."""
    best = folder / "best.safetensors"
    if (folder / "summary.json").exists() and best.exists():
        return best
    settings = dict(step.settings)
    overrides: dict[str, Any] = {
        "out": str(folder),
        "epochs": settings.pop("epochs", 1),
        "resume": (folder / "config.yaml").exists(),
        "tensorboard": False,
        **{k: v for k, v in recipe.shared.items() if k in _TRAIN_SHARED},
    }
    if step.name == "distill":
        from effnet.training.distill import distill

        temperature, alpha = settings.pop("temperature", None), settings.pop("alpha", None)
        distill(recipe.weights, str(current), recipe.data, None, temperature=temperature, alpha=alpha,
                **overrides, **settings)  # fmt: skip
    else:
        import effnet

        effnet.train({"weights": str(current), "data": recipe.data, **overrides, **settings})
    return best


def _measure(recipe: Recipe, stages: list[tuple[str, Path, CompressionReport | None]], out: Path) -> CompressionReport:
    return measure_stages(recipe.weights, recipe.data, stages, out, shared=recipe.shared)


def measure_stages(
    original: str | Path,
    data: str,
    stages: list[tuple[str, Path, CompressionReport | None]],
    out: Path,
    *,
    shared: dict[str, Any],
    device: str = "cpu",
) -> CompressionReport:
    """Every stage's top-1 (as ``effnet eval`` measures it), size, parameters and FLOPs, and every
    stage timed at batch 1 in one interleaved run: in ONNX Runtime on the CPU, or in eager PyTorch
    on ``cuda`` (where ONNX stages are left untimed). The sensitivity and quantization error the
    stages' reports hold are carried over."""
    from effnet.bench import benchmark
    from effnet.export import export_model
    from effnet.factory import load_model
    from effnet.models.summary import count_flops
    from effnet.training.eval_checkpoint import evaluate_checkpoint

    model = load_model(None, original)
    size = shared.get("img_size") or model.pretrained_meta["preprocessing"]["input_size"]
    work = out / "_measure"
    work.mkdir(parents=True, exist_ok=True)
    timed: dict[str, Path] = {}
    rows = []
    quant_error, sensitivity = [], []
    for label, path, report in stages:
        top1 = evaluate_checkpoint(
            path,
            data,
            data_dir=shared.get("data_dir"),
            workers=0,
            img_size=shared.get("img_size"),
            max_images=shared.get("test_images"),  # evenly spaced; all of them unless the recipe says
        ).top1
        params, flops = None, None
        if path.suffix == ".onnx":
            if device == "cpu":
                timed[label] = path
        else:
            stage = load_model(None, path)
            params, flops = sum(p.numel() for p in stage.parameters()), count_flops(stage, size)
            if device == "cpu":
                timed[label] = work / f"{label}.onnx"
                export_model(stage, "onnx", timed[label], img_size=size)
            else:
                timed[label] = path
        rows.append(
            CompressionPass(name=label, params=params or 0, flops=flops, size_mb=path.stat().st_size / 2**20, top1=top1)
        )
        if report is not None:
            quant_error += report.quant_error
            sensitivity += report.prune_sensitivity
    where = "ONNX Runtime" if device == "cpu" else f"PyTorch on {device}"
    _log(f"timing every stage in {where} at {size} px, batch 1, interleaved ...")
    bench = benchmark(
        [str(p) for p in timed.values()],
        runtimes=("onnxruntime",) if device == "cpu" else ("torch",),
        device=device,
        img_size=size,
        threads=shared.get("threads"),
        repeats=shared.get("repeats", 50),
        consecutive=STAGE_CONSECUTIVE,
        measure_memory=False,
    )
    _write_json(out / "bench.json", bench.to_dict())
    latency = {r.model: r.latency_ms_median for r in bench.results}
    for row in rows:
        if row.name in timed:
            row.latency_ms = latency.get(str(timed[row.name]))
            if device == "cpu":
                row.latency_ms_onnxruntime = row.latency_ms
            else:
                row.latency_ms_eager = row.latency_ms
    shutil.rmtree(work, ignore_errors=True)
    name = str(getattr(getattr(model, "config", None), "name", None) or type(model).__name__)
    return CompressionReport(model=name, passes=rows, quant_error=quant_error, prune_sensitivity=sensitivity, data=data)


def _read(path: Path) -> CompressionReport:
    return CompressionReport.from_dict(json.loads(path.read_text()))


def _write_json(path: Path, data: Any) -> None:
    from effnet.training.state import write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, data)
