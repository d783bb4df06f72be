"""``effnet prune``: prune a trained classifier, fine-tune it, and measure it against its parent.

A pruning job runs in N steps (iterative pruning, Han et al., 2015; Zhu & Gupta, 2017): each
step prunes a further share of the original toward the target and, with ``finetune_epochs``,
recovers accuracy through the training engine. Every step's model and pass report is kept in
``OUT/steps/<i>/``; ``resume`` continues at the step reached (and inside a fine-tuning run at
the epoch reached). The final model and the parent are then measured in one interleaved run:
parameters, FLOPs, size on disk, sparsity, top-1 on the validation data, and batch-1 latency
in eager PyTorch and in ONNX Runtime. ``OUT/report.json`` holds those numbers (the
``effnet.compression`` schema, which ``effnet report`` reads) and ``OUT/bench.json`` the raw
timing.

A latency target ("30% faster on ONNX Runtime") is met by measuring, not by proxy: candidate
FLOP targets are pruned, exported and timed against the parent until the measured latency
ratio reaches the goal.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import nn

from effnet.compress.base import PassContext, apply_pass
from effnet.compress.prune import PruneChannelsConfig, measure_latency_scale
from effnet.compress.sparsity import PruneWeightsConfig, SparsityCallback, prunable_weights, sparsity_of
from effnet.configs import checked_fields, plain
from effnet.errors import EffnetError
from effnet.schemas import CompressionPass, CompressionReport, PassReport
from effnet.sizes import input_size_problem

__all__ = ["PruneJob", "run_prune"]

Method = Literal["structured", "unstructured"]
# With --latency-aware the cheap-to-cut stages would otherwise lose nearly all their channels.
LATENCY_AWARE_MAX_RATIO = 0.75
TargetKind = Literal["channels", "params", "flops", "latency"]


@dataclass
class PruneJob:
    """Everything that decides a pruning job (the recipe of ``effnet prune``)."""

    weights: str = ""  # the trained checkpoint to prune
    data: str = ""  # validation data (and fine-tuning data): folder, CSV, fashion-mnist, cifar10
    out: str = ""  # output folder: model.safetensors, report.json, bench.json, steps/
    method: Method = "structured"
    target: float = 0.5  # fraction removed: of target_kind (structured) or of the weights (sparsity)
    target_kind: TargetKind = "flops"  # structured only
    importance: Literal["l1", "l2", "bn_scale", "taylor"] = "l2"
    scope: Literal["global", "local"] = "global"
    round_to: int | Literal["auto"] = "auto"  # kept widths' multiple; auto: the CPU runtime's (channel_multiple)
    include_stem: bool = False  # structured: which channel groups besides the blocks' may narrow
    include_head: bool = False
    include_squeeze: bool = True
    latency_aware: bool = False  # structured, global: spend the target where ONNX Runtime time per FLOP is highest
    max_ratio: float | None = None  # structured, global: most any group loses (default 0.75 latency-aware, else 1)
    steps: int = 1  # prune -> fine-tune rounds toward the target
    finetune_epochs: int = 0  # per step; 0 measures the pruned model as it is
    data_dir: str | None = None
    val_split: float = 0.1
    subset: int | None = None  # fine-tune on at most this many images
    batch_size: int = 64
    lr: float | None = None
    img_size: int | None = None  # default: the checkpoint's input size
    bench_size: int | None = None  # input size latency is measured (and weighed) at; default: img_size
    augment: Literal["none", "flip", "randaugment", "trivialaugment"] = "flip"
    amp: Literal["off", "fp16", "bf16"] = "off"
    workers: int = 2
    device: str = "auto"
    seed: int = 0
    threads: int | None = None  # intra-op threads for the latency measurement
    repeats: int = 50  # timed runs per model and runtime
    runtimes: tuple[str, ...] = ("torch", "onnxruntime")
    sensitivity: bool = False  # measure per-unit sensitivity first and prune where it costs least
    sensitivity_ratios: tuple[float, ...] = (0.25, 0.5, 0.75)
    sensitivity_images: int = 1000  # validation images each sensitivity point is measured on
    sensitivity_file: str | None = None  # reuse a sensitivity.json measured on the same original
    distill_alpha: float = 0.0  # > 0: fine-tune with the unpruned original as teacher (this weight on its term)
    teacher: str | None = None  # another checkpoint to distil from instead (e.g. the model ``weights`` came from)
    temperature: float = 4.0  # softens teacher and student outputs when distilling
    resume: bool = False
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> PruneJob:
        problems = []
        for name in ("weights", "data", "out"):
            if not getattr(self, name):
                problems.append(f"--{name} is required")
        if not 0.0 < self.target < 1.0:
            problems.append(f"target must be a fraction in (0, 1), got {self.target}")
        if self.method == "unstructured" and self.target_kind not in ("flops",):
            problems.append("--target-kind applies to structured pruning; unstructured targets are sparsity")
        if self.round_to != "auto" and (isinstance(self.round_to, bool) or not isinstance(self.round_to, int)):
            problems.append(f"round_to must be a whole number or auto, got {self.round_to!r}")
        elif self.round_to != "auto" and not 1 <= self.round_to <= 256:
            problems.append(f"round_to must be between 1 and 256, got {self.round_to}")
        if self.steps < 1 or self.steps > 50:
            problems.append(f"steps must be between 1 and 50, got {self.steps}")
        if self.finetune_epochs < 0:
            problems.append(f"finetune_epochs must not be negative, got {self.finetune_epochs}")
        for name in ("img_size", "bench_size"):
            if getattr(self, name) is not None and input_size_problem(getattr(self, name), name):
                problems.append(input_size_problem(getattr(self, name), name))
        if self.max_ratio is not None and not 0.0 < self.max_ratio <= 1.0:
            problems.append(f"max_ratio must be a fraction in (0, 1], got {self.max_ratio}")
        if self.max_ratio is not None and (self.method != "structured" or self.scope != "global"):
            problems.append("--max-ratio caps the global threshold: structured pruning with --scope global")
        if self.latency_aware and (self.method != "structured" or self.scope != "global" or self.sensitivity):
            problems.append("--latency-aware weighs one global threshold: structured, --scope global, no --sensitivity")
        if self.repeats < 1 or self.batch_size < 1:
            problems.append("repeats and batch_size must be at least 1")
        if self.method != "structured" and (self.include_stem or self.include_head or not self.include_squeeze):
            problems.append("--include-stem, --include-head and --keep-squeeze choose channel groups (structured)")
        if self.sensitivity and self.method != "structured":
            problems.append("--sensitivity guides structured pruning; drop it for unstructured")
        if self.sensitivity and self.target_kind == "latency":
            problems.append("--sensitivity takes a channels, params or flops target, not latency")
        if self.sensitivity_file and not self.sensitivity:
            problems.append("--sensitivity-file goes with --sensitivity")
        if self.sensitivity_file and not Path(self.sensitivity_file).is_file():
            problems.append(f"sensitivity_file {self.sensitivity_file} does not exist")
        if self.teacher and not self.distill_alpha:
            problems.append("a teacher is only used with --distill-alpha")
        if self.teacher and not Path(self.teacher).is_file():
            problems.append(f"teacher {self.teacher} does not exist")
        if self.distill_alpha and not self.finetune_epochs:
            problems.append("--distill-alpha guides the recovery fine-tune; give --finetune-epochs too")
        if not 0.0 <= self.distill_alpha <= 1.0:
            problems.append(f"distill_alpha must be in [0, 1], got {self.distill_alpha}")
        if self.temperature <= 0:
            problems.append(f"temperature must be positive, got {self.temperature}")
        if self.sensitivity_images < 1:
            problems.append(f"sensitivity_images must be at least 1, got {self.sensitivity_images}")
        for ratio in self.sensitivity_ratios:
            if not 0.0 < ratio < 1.0:
                problems.append(f"sensitivity ratios must be fractions in (0, 1), got {ratio}")
        if problems:
            raise EffnetError("invalid pruning job: " + "; ".join(str(p) for p in problems))
        return self

    @property
    def multiple(self) -> int:
        """``round_to`` resolved: ``auto`` is the multiple ONNX Runtime computes in on this CPU."""
        if self.round_to == "auto":
            from effnet.compress.prune import channel_multiple

            return channel_multiple("cpu")
        return int(self.round_to)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "prune") -> PruneJob:
        return cls(**checked_fields(cls, data, source)).validate()


def _log(job: PruneJob, message: str) -> None:
    print(f"effnet: {message}", file=sys.stderr, flush=True)


def run_prune(job: PruneJob) -> CompressionReport:
    """Run a pruning job; returns (and writes) its report. The input checkpoint is never modified."""
    from effnet.factory import load_model, save_model

    job.validate()
    out = Path(job.out)
    state_path = out / "progress.json"
    if out.exists() and any(out.iterdir()) and not job.resume:
        raise EffnetError(f"{out} is not empty; use --resume to continue a pruning job there or choose another --out")
    if job.resume and not state_path.exists() and out.exists() and any(out.iterdir()):
        raise EffnetError(f"{out} holds no pruning job to resume (no progress.json)")
    original = load_model(None, job.weights).eval()
    _check_prunable(original, job)
    teacher = _teacher(job, original)
    splits, loader = _validation_data(original, job)
    out.mkdir(parents=True, exist_ok=True)
    progress = json.loads(state_path.read_text()) if state_path.exists() else {"done": 0, "top1": {}}
    if progress.get("job") not in (None, _identity(job)):
        raise EffnetError(f"{out} holds a pruning job with other settings; resume it with the same ones")
    progress["job"] = _identity(job)

    baseline_top1 = progress["top1"].get("original")
    if baseline_top1 is None:
        _log(job, f"measuring the original on {splits.source} ...")
        baseline_top1 = _top1(original, loader, splits.classes, job)
        progress["top1"]["original"] = baseline_top1
        _write_json(state_path, progress)
    model = original
    if progress["done"]:
        model = load_model(None, out / "steps" / str(progress["done"]) / "model.safetensors")
    size = _img_size(original, job)
    bench_size = job.bench_size or size
    scale: dict[str, float] | None = None
    if job.latency_aware:
        scale = progress.get("latency_scale")
        if scale is None:
            scale = measure_latency_scale(
                original,
                PruneChannelsConfig(round_to=job.multiple, **_groups(job)),
                bench_size,
                threads=job.threads,
                repeats=job.repeats,
                say=lambda text: _log(job, text),
            )
            progress["latency_scale"] = scale
            _write_json(state_path, progress)
    latency_flops: float | None = None
    if job.method == "structured" and job.target_kind == "latency":
        latency_flops = progress.get("latency_flops")
        if latency_flops is None:
            latency_flops = _flops_for_latency(original, job, bench_size, scale)
            progress["latency_flops"] = latency_flops
            _write_json(state_path, progress)

    sensitivity = None
    if job.sensitivity:
        sensitivity = _sensitivity(original, job, splits, loader, out / "sensitivity.json", size)

    for step in range(progress["done"] + 1, job.steps + 1):
        folder = out / "steps" / str(step)
        pruned_path = folder / "pruned.safetensors"
        if pruned_path.exists() and (folder / "pass.json").exists():
            pruned = load_model(None, pruned_path)
        else:
            config = _step_config(job, step, latency_flops, sensitivity, original, model, size, scale)
            pruned, report = apply_pass(model, config, PassContext(img_size=size, data=_ranking_data(job, splits)))
            _log(job, f"step {step}/{job.steps}: {_describe(report)}")
            save_model(pruned, pruned_path, sparse=job.method == "unstructured")
            _write_json(folder / "pass.json", report.to_dict())
        if job.finetune_epochs:
            pruned = _fine_tune(pruned, job, step, folder / "train", splits, teacher=teacher)
        save_model(pruned, folder / "model.safetensors", sparse=job.method == "unstructured")
        model = pruned
        progress["done"] = step
        _write_json(state_path, progress)

    final_path = save_model(model, out / "model.safetensors", sparse=job.method == "unstructured")
    top1 = _top1(model, loader, splits.classes, job)
    report = _measure(original, model, job, bench_size, baseline_top1, top1, final_path, splits.source)
    if sensitivity is not None:
        report.prune_sensitivity = sensitivity.prune_sensitivity
    _write_json(out / "report.json", report.to_dict())
    shutil.rmtree(out / "_parent", ignore_errors=True)
    return report


def _identity(job: PruneJob) -> dict[str, Any]:
    """The settings a resumed job must share with the one it continues."""
    keep = ("weights", "data", "method", "target", "target_kind", "importance", "scope", "round_to", "steps")
    identity = {k: plain(getattr(job, k)) for k in keep} | {"finetune_epochs": job.finetune_epochs}
    identity["round_to"] = job.multiple  # "auto" resumes on this machine only if it resolves alike
    if job.sensitivity:  # older jobs without it keep their identity
        identity["sensitivity"] = [plain(list(job.sensitivity_ratios)), job.sensitivity_images]
    if job.distill_alpha:
        identity["distill"] = [job.distill_alpha, job.temperature]
    if job.teacher:
        identity["teacher"] = str(job.teacher)
    if job.latency_aware:
        identity["latency_aware"] = True
    if job.max_ratio is not None:
        identity["max_ratio"] = job.max_ratio
    if job.bench_size and (job.latency_aware or job.target_kind == "latency"):
        identity["bench_size"] = job.bench_size
    groups = _groups(job)
    if groups != _groups(PruneJob()):  # jobs with the default groups keep their identity
        identity["groups"] = groups
    return identity


def _teacher(job: PruneJob, original: nn.Module) -> nn.Module:
    """The model the recovery distils from: ``job.teacher`` if given (same classes), else the original."""
    from effnet.factory import load_model

    if not (job.teacher and job.distill_alpha):
        return original
    teacher = load_model(None, job.teacher).eval()
    theirs = list(getattr(teacher, "pretrained_meta", {}).get("classes") or [])
    if theirs != list(original.pretrained_meta.get("classes") or []):
        raise EffnetError(
            f"teacher {job.teacher} has other classes than {job.weights}; distil from a model of the same data"
        )
    return teacher


def _groups(job: PruneJob) -> dict[str, bool]:
    """Which optional channel groups a structured job may narrow (PruneChannelsConfig's fields)."""
    return {k: getattr(job, k) for k in ("include_stem", "include_head", "include_squeeze")}


def _check_prunable(model: nn.Module, job: PruneJob) -> None:
    from effnet.compress.base import get_pass

    if job.method == "structured":
        reason = get_pass("prune_channels").unsupported(model)
        if reason:
            raise EffnetError(f"cannot prune {job.weights} structurally: {reason}")
    if not hasattr(model, "classifier_name"):
        raise EffnetError(f"{job.weights} is not a classifier effnet can prune")


def _validation_data(model: nn.Module, job: PruneJob) -> tuple[Any, Any]:
    from torch.utils.data import DataLoader

    from effnet.data.datasets import load_data
    from effnet.data.images import eval_transform
    from effnet.training.transforms import resized
    from effnet.weights.specs import Preprocessing

    pre = resized(Preprocessing.from_dict(model.pretrained_meta["preprocessing"]), job.img_size)
    transform = eval_transform(pre)
    splits = load_data(
        job.data,
        data_dir=job.data_dir,
        val_split=job.val_split,
        seed=job.seed,
        train_transform=transform,
        eval_transform=transform,
        subset=job.subset,
    )
    if splits.val is None or len(splits.val) == 0:
        raise EffnetError(f"{job.data} has no validation images to measure accuracy on")
    classes = list(model.pretrained_meta.get("classes") or [])
    if list(splits.classes) != classes:
        raise EffnetError(
            f"the data's classes differ from the checkpoint's ({len(splits.classes)} vs {len(classes)}, e.g. "
            f"{sorted(set(splits.classes) ^ set(classes))[:3]}); prune with the data the model was trained on"
        )
    loader = DataLoader(splits.val, batch_size=job.batch_size, num_workers=job.workers)
    return splits, loader


def _top1(model: nn.Module, loader: Any, classes: list[str], job: PruneJob) -> float:
    from effnet.devices import resolve_device
    from effnet.training.evaluate import evaluate

    return float(evaluate(model, loader, list(classes), resolve_device(job.device)).top1)


def _img_size(model: nn.Module, job: PruneJob) -> int:
    from effnet.sizes import resolve_input_size

    return resolve_input_size(model, job.img_size)


def _weight_scope(job: PruneJob) -> Literal["global", "layer"]:
    """Unstructured pruning's scope: ``--scope local`` prunes every layer by the same share."""
    return "layer" if job.scope == "local" else "global"


def _cumulative(job: PruneJob, step: int) -> float:
    """The share of the original removed after ``step`` of ``job.steps`` (equal increments)."""
    return job.target * step / job.steps


def _step_config(
    job: PruneJob,
    step: int,
    latency_flops: float | None,
    sensitivity: CompressionReport | None = None,
    original: nn.Module | None = None,
    current: nn.Module | None = None,
    size: int | None = None,
    scale: dict[str, float] | None = None,
) -> Any:
    done, goal = _cumulative(job, step - 1), _cumulative(job, step)
    if job.method == "unstructured":  # zeros already there are the smallest magnitudes
        return PruneWeightsConfig(sparsity=goal, scope=_weight_scope(job))
    if sensitivity is not None:
        assert original is not None and current is not None
        return _sensitivity_step(job, step, sensitivity, original, current, size)
    kind = job.target_kind
    if kind == "latency":
        kind = "flops"
        assert latency_flops is not None
        done, goal = latency_flops * (step - 1) / job.steps, latency_flops * step / job.steps
    # Each step removes a share of what is left so that the shares compound to the goal.
    relative = 1.0 - (1.0 - goal) / (1.0 - done)
    return PruneChannelsConfig(
        target=min(max(relative, 1e-6), 0.999),
        target_kind=kind,
        importance=job.importance,
        scope=job.scope,
        round_to=job.multiple,
        score_scale=_score_scale(scale),
        max_ratio=_max_ratio(job),
        **_groups(job),
    )


def _max_ratio(job: PruneJob) -> float:
    """The most any group may lose: as asked, else a cap for latency-aware plans, else none."""
    if job.max_ratio is not None:
        return job.max_ratio
    return LATENCY_AWARE_MAX_RATIO if job.latency_aware else 1.0


def _score_scale(latency_scale: dict[str, float] | None) -> dict[str, float]:
    """Channel-score multipliers from measured time per FLOP: expensive groups rank lower."""
    return {name: 1.0 / value for name, value in (latency_scale or {}).items()}


def _ranking_data(job: PruneJob, splits: Any) -> Any:
    """Labelled training batches for the taylor importance (None for the data-free rankings)."""
    if job.method != "structured" or job.importance != "taylor":
        return None
    import torch
    from torch.utils.data import DataLoader

    source = splits.train if splits.train is not None and len(splits.train) else splits.val
    generator = torch.Generator().manual_seed(job.seed)
    return DataLoader(source, batch_size=job.batch_size, shuffle=True, generator=generator, num_workers=0)


def _sensitivity(
    original: nn.Module, job: PruneJob, splits: Any, loader: Any, path: Path, size: int
) -> CompressionReport:
    """Per-unit sensitivity of the original on the validation images (kept in ``path`` for resume)."""
    import math

    from effnet.compress.sensitivity import prune_sensitivity

    if not path.exists() and job.sensitivity_file:
        shutil.copyfile(job.sensitivity_file, path)
    if path.exists():
        return CompressionReport.from_dict(json.loads(path.read_text()))
    batches = math.ceil(job.sensitivity_images / job.batch_size)
    _log(job, f"sensitivity: pruning each unit alone at {list(job.sensitivity_ratios)} on up to {batches} batches")
    result = prune_sensitivity(
        original,
        loader,
        ratios=job.sensitivity_ratios,
        importance="l2" if job.importance == "taylor" else job.importance,
        classes=splits.classes,
        device=_device(job),
        max_batches=batches,
        round_to=job.multiple,
        data=splits.source,
        progress=(lambda line: _log(job, f"sensitivity {line}")) if job.progress else None,
    )
    print(result.to_table(), file=sys.stderr, flush=True)
    report = result.to_report()
    _write_json(path, report.to_dict())
    return report


def _sensitivity_step(
    job: PruneJob,
    step: int,
    sensitivity: CompressionReport,
    original: nn.Module,
    current: nn.Module,
    size: int | None,
) -> PruneChannelsConfig:
    """This step's config: the widths the sensitivity picks for the step's share of the target.

    The per-unit ratios are chosen on the original for the cumulative target and turned into the
    widths each group should have after this step; the config removes exactly what separates the
    current model from them (so steps do not compound rounding).
    """
    from effnet.compress.prune import plan_channels
    from effnet.compress.sensitivity import ratios_for_target

    goal = _cumulative(job, step)
    # Widths depend only on the ratios, not on which channels go: plan them with a data-free ranking.
    planning = {"importance": "l2", "round_to": job.multiple, **_groups(job)}
    ratios, threshold = ratios_for_target(
        sensitivity,
        original,
        goal,
        job.target_kind,  # type: ignore[arg-type]
        size,
        **planning,
    )
    _log(job, f"step {step}/{job.steps}: units pruned while each loses at most {threshold:.2f} points alone")
    plan = PruneChannelsConfig(target=goal, target_kind=job.target_kind, scope="local", ratios=ratios, **planning)  # type: ignore[arg-type]
    _, details = plan_channels(original, plan, PassContext(img_size=size))  # type: ignore[arg-type]
    common = {"importance": job.importance, "round_to": job.multiple, **_groups(job)}
    structure = current.structure()  # type: ignore[operator]
    relative: dict[str, float] = {}
    for name, (_, width) in details["groups"].items():
        now = structure.group(name).channels
        if width < now:  # a hair under the width, so ceil() lands on it exactly
            relative[name] = round(1.0 - (width - 1e-3) / now, 6)
    done = _cumulative(job, step - 1)
    return PruneChannelsConfig(
        target=min(max(1.0 - (1.0 - goal) / (1.0 - done), 1e-6), 0.999),  # recorded; the ratios decide
        target_kind=job.target_kind,  # type: ignore[arg-type]
        scope="local",
        ratios={**relative, "*": 0.0},
        **common,  # type: ignore[arg-type]
    )


def _device(job: PruneJob) -> Any:
    from effnet.devices import resolve_device

    return resolve_device(job.device)


def _describe(report: PassReport) -> str:
    details = report.details
    if "sparsity" in details:
        return f"{100 * details['sparsity']:.1f}% of the weights are zero"
    before, after = report.before.params, report.after.params
    flops = ""
    if details.get("flops_before"):
        flops = f", FLOPs {details['flops_after'] / details['flops_before']:.1%} of before"
    return f"parameters {after:,} ({after / before:.1%} of before){flops}"


def _fine_tune(
    model: nn.Module, job: PruneJob, step: int, run_dir: Path, splits: Any, teacher: nn.Module | None = None
) -> nn.Module:
    """Recover accuracy through the training engine; with ``job.distill_alpha`` the unpruned
    ``teacher`` supplies soft targets (pruning plus distillation from the dense parent, as in
    Hinton et al., 2015 and the prune-then-distill schedules of Sanh et al., 2020)."""
    import copy

    from effnet.training.engine import fit

    recipe = {
        **_parent_training(job.weights),
        "data": job.data,
        "data_dir": job.data_dir,
        "val_split": job.val_split,
        "subset": job.subset,
        "out": str(run_dir),
        "epochs": job.finetune_epochs,
        "batch_size": job.batch_size,
        "lr": job.lr,
        "img_size": job.img_size,
        "augment": job.augment,
        "amp": job.amp,
        "workers": job.workers,
        "device": job.device,
        "seed": job.seed,
        "progress": job.progress,
        "tensorboard": False,
        "backbone_lr_scale": 1.0,  # a pruned network has no pretrained backbone to protect
        "freeze_bn": False,  # statistics change once earlier channels are gone
        "warmup_epochs": min(0.3, job.finetune_epochs),
        "resume": (run_dir / "config.yaml").exists(),
    }
    callbacks = []
    if job.method == "unstructured":
        callbacks.append(
            SparsityCallback(PruneWeightsConfig(sparsity=_cumulative(job, step), scope=_weight_scope(job)))
        )
    task = None
    if job.distill_alpha and teacher is not None:
        from effnet.training.distill import DistillationTask

        smoothing = recipe.get("label_smoothing", 0.1)
        # A copy: the task moves its teacher to the training device and memory format.
        task = DistillationTask(copy.deepcopy(teacher), job.temperature, job.distill_alpha, label_smoothing=smoothing)
    who = job.teacher or "the original"
    how = f" with {who} as teacher (alpha {job.distill_alpha:g}, T {job.temperature:g})" if task else ""
    _log(job, f"step {step}/{job.steps}: fine-tuning for {job.finetune_epochs} epochs{how} in {run_dir}")
    slow = _quicken_batchnorm(model)
    result = fit(model, job.data, recipe, task=task, callbacks=callbacks)
    trained = result.model if result.model is not None else model
    for module in trained.modules():  # back to the architecture's momentum (outputs are unaffected)
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and slow is not None:
            module.momentum = slow
    for callback in callbacks:
        callback.finalize(trained)
    return trained.eval()


def _quicken_batchnorm(model: nn.Module, momentum: float = 0.1) -> float | None:
    """Raise slower batch-norm momenta (TF-style 0.01) to ``momentum`` for a short recovery fine-tune.

    Pruning changes every layer's input statistics; at momentum 0.01 one recovery epoch leaves the
    running statistics near the unpruned network's (the demo's Lite0 measured 56.65% top-1 that way,
    76.15% with re-estimated statistics). Returns the momentum replaced, or None when none was slower.
    """
    replaced = None
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.momentum is not None:
            if module.momentum < momentum:
                replaced = module.momentum
                module.momentum = momentum
    return replaced


# How the parent was trained that fine-tuning its pruned copy repeats: the same crops and
# regularisation, not the engine's defaults (e.g. 0.25-1.0 crops for a model trained on 0.6-1.0).
_INHERITED = ("crop_scale", "crop_pct", "interpolation", "label_smoothing", "mixup", "cutmix")


def _parent_training(weights: str | os.PathLike[str], keys: tuple[str, ...] = _INHERITED) -> dict[str, Any]:
    """The ``keys`` of the recipe recorded in checkpoint ``weights`` that were set (none for other checkpoints)."""
    from effnet.weights.io import read_metadata

    recorded = read_metadata(weights).get("recipe") or {}
    return {k: recorded[k] for k in keys if isinstance(recorded, dict) and recorded.get(k) is not None}


def _flops_for_latency(original: nn.Module, job: PruneJob, size: int, scale: dict[str, float] | None = None) -> float:
    """The FLOPs share to remove so that ONNX Runtime latency falls by ``job.target``, found by timing."""
    from effnet.bench import benchmark

    goal = 1.0 - job.target
    low, high = 0.0, 0.95
    best = high
    for probe in range(6):
        trial = (low + high) / 2
        candidate, _ = apply_pass(
            original,
            PruneChannelsConfig(
                target=trial,
                target_kind="flops",
                importance="l2",
                round_to=job.multiple,
                score_scale=_score_scale(scale),
                max_ratio=_max_ratio(job),
                **_groups(job),
            ),
            PassContext(img_size=size),
        )
        result = benchmark(
            [("parent", original), ("candidate", candidate)],
            runtimes=("onnxruntime",),
            img_size=size,
            threads=job.threads,
            repeats=max(20, job.repeats // 2),
            warmup=5,
            measure_memory=False,
        )
        times = {r.model: r.latency_ms_median for r in result.results if r.latency_ms_median}
        ratio = times["candidate"] / times["parent"]
        _log(job, f"latency search {probe + 1}/6: {trial:.0%} fewer FLOPs -> {ratio:.2f}x the parent's latency")
        if ratio <= goal:
            best, high = trial, trial
        else:
            low = trial
    return best


def _file_mb(path: Path) -> float:
    return path.stat().st_size / 2**20


def _measure(
    original: nn.Module,
    final: nn.Module,
    job: PruneJob,
    size: int,
    top1_before: float,
    top1_after: float,
    final_path: Path,
    source: str,
) -> CompressionReport:
    """Both models measured in one interleaved run on every runtime of the job."""
    from effnet.bench import benchmark
    from effnet.factory import save_model
    from effnet.models.summary import count_flops

    out = Path(job.out)
    parent_path = save_model(original, out / "_parent" / "parent.safetensors")  # the same format, dense
    _log(job, f"timing the original and the pruned model at {size} px, batch 1, interleaved ...")
    bench = benchmark(
        [("original", original), ("pruned", final)],
        runtimes=job.runtimes,
        img_size=size,
        threads=job.threads,
        repeats=job.repeats,
        measure_memory=False,
    )
    _write_json(out / "bench.json", bench.to_dict())
    latency: dict[tuple[str, str], float | None] = {(r.model, r.runtime): r.latency_ms_median for r in bench.results}
    rows = []
    for label, model, path, top1 in (
        ("original", original, parent_path, top1_before),
        ("pruned", final, final_path, top1_after),
    ):
        names = list(prunable_weights(model, PruneWeightsConfig()))
        rows.append(
            CompressionPass(
                name=label,
                params=sum(p.numel() for p in model.parameters()),
                flops=count_flops(model, size),
                size_mb=_file_mb(path),
                top1=top1,
                latency_ms=latency.get((label, "onnxruntime")) or latency.get((label, "torch")),
                latency_ms_eager=latency.get((label, "torch")),
                latency_ms_onnxruntime=latency.get((label, "onnxruntime")),
                sparsity=sparsity_of(model, names),
            )
        )
    name = str(getattr(getattr(original, "config", None), "name", None) or type(original).__name__)
    return CompressionReport(model=name, passes=rows, data=source)


def _write_json(path: Path, data: Any) -> None:
    from effnet.training.state import write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, data)
