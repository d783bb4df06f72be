"""``effnet compress --auto``: the fastest (or smallest) model within an allowed accuracy drop.

An accuracy-aware search in the spirit of AMC (He et al., 2018, https://arxiv.org/abs/1802.03494)
and NNCF's accuracy-aware training, kept small enough for a CPU: each candidate is a real model,
fine-tuned and measured, never an estimate.

1. The original is quantized as it is (static int8 on the CPU; cheap, and often the whole answer),
   with per-channel weight scales and, as a second candidate, one scale per layer (``-tensor``:
   faster kernels, some accuracy lost; every int8 candidate below comes in both).
   With ``lite_epochs`` the original also gets EfficientNet-Lite's swap (ReLU6 for SiLU, no
   squeeze-excitation; :mod:`effnet.compress.lite`), fine-tuned with the original as teacher and
   quantized; when it stays within the allowed drop, the pruning rungs start from it.
2. A ladder of structured-pruning targets (fractions of FLOPs removed, mildest first) is climbed,
   each rung pruned from the original with ratios guided by one per-unit sensitivity analysis
   (measured once, shared by every rung), fine-tuned, and quantized. The climb stops at the first
   rung whose pruned float model already loses more than the allowed drop: harsher rungs would
   only lose more.
3. Every candidate and the original are measured in one run (top-1 as ``effnet eval`` measures it,
   size on disk, and batch-1 latency timed interleaved on the deployment runtime), and the best
   candidate within ``max_accuracy_drop`` of the original by the objective is chosen.
4. With ``runtime="auto"``, a chosen int8 file is measured once more in ONNX Runtime and OpenVINO
   (as ``effnet quantize --runtime auto`` does) and records the faster accurate one, where
   ``predict``/``eval``/``bench`` then run it; the candidates themselves are compared in ONNX Runtime.

``OUT/report.json`` holds one row per candidate (``effnet report`` draws it, with the Pareto
front), ``OUT/auto.json`` the search (each candidate's drop, whether it met the constraint, the
choice and the front) and ``OUT/model.safetensors`` or ``OUT/model.onnx`` the chosen model. A
constraint no candidate meets is reported, with the closest candidate, and the original returned.
The search resumes with ``resume=True``: finished candidates are kept.

The constraint is checked on the data's evaluation split (a built-in dataset's test split, a
folder's ``val/``): give a folder with its own ``val/`` to keep the final test images unseen.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from effnet.errors import EffnetError
from effnet.schemas import CompressionPass, CompressionReport

__all__ = ["AutoJob", "AutoResult", "choose", "run_auto"]

Objective = Literal["latency", "size"]


@dataclass
class AutoJob:
    """Everything that decides an automatic compression search."""

    weights: str = ""  # the trained checkpoint
    data: str = ""  # its data: fine-tuning, calibration and the accuracy constraint
    out: str = ""
    max_accuracy_drop: float = 1.0  # top-1 points below the original
    objective: Objective = "latency"
    device: str = "cpu"  # where the model will run: cpu (ONNX Runtime, int8) or cuda (PyTorch)
    targets: tuple[float, ...] = (0.3, 0.5, 0.7)  # fractions of FLOPs pruned away, mildest first
    finetune_epochs: int = 1  # after each pruning
    distill_alpha: float = 0.0  # > 0: that fine-tune distils from the original (weight of its soft targets)
    sensitivity: bool = True  # guide pruning ratios by per-unit sensitivity
    quantize: bool = True  # int8 candidates (CPU only)
    per_tensor: bool = True  # each int8 candidate also with one weight scale per layer
    family: tuple[str, ...] = ()  # smaller members trained instead: NAME or NAME:WEIGHTS
    family_epochs: int = 2  # their training budget on the same data
    lite_epochs: int = 0  # > 0: also EfficientNet-Lite's swap (ReLU6, no SE), fine-tuned this long
    data_dir: str | None = None
    subset: int | None = None
    batch_size: int = 64
    img_size: int | None = None
    workers: int = 2
    seed: int = 0
    threads: int | None = None
    repeats: int = 50
    runtime: str = "onnxruntime"  # "auto": the chosen int8 file runs where it measures fastest (ORT or OpenVINO)
    resume: bool = False

    def validate(self) -> AutoJob:
        problems = []
        for name in ("weights", "data", "out"):
            if not getattr(self, name):
                problems.append(f"--{name.replace('_', '-')} is required")
        if not 0.0 <= self.max_accuracy_drop < 100.0:
            problems.append(f"max accuracy drop must be in [0, 100) points, got {self.max_accuracy_drop}")
        if self.objective not in ("latency", "size"):
            problems.append(f"objective must be latency or size, got {self.objective!r}")
        if self.device not in ("cpu", "cuda"):
            problems.append(f"device must be cpu or cuda, got {self.device!r}")
        if not self.targets or any(not 0.0 < t < 1.0 for t in self.targets):
            problems.append(f"pruning targets must be fractions in (0, 1), got {list(self.targets)}")
        if list(self.targets) != sorted(set(self.targets)):
            problems.append(f"pruning targets must rise from mildest to harshest, got {list(self.targets)}")
        if self.finetune_epochs < 0:
            problems.append(f"finetune epochs must be 0 or more, got {self.finetune_epochs}")
        if not 0.0 <= self.distill_alpha <= 1.0:
            problems.append(f"distill alpha must be in [0, 1], got {self.distill_alpha}")
        if self.distill_alpha and not self.finetune_epochs:
            problems.append("distillation needs fine-tuning epochs after pruning (--finetune-epochs)")
        if self.lite_epochs < 0:
            problems.append(f"lite epochs must be 0 or more, got {self.lite_epochs}")
        if self.family_epochs < 1:
            problems.append(f"family epochs must be at least 1, got {self.family_epochs}")
        if self.runtime not in ("onnxruntime", "auto"):
            problems.append(f"runtime must be onnxruntime or auto, got {self.runtime!r}")
        elif self.runtime == "auto" and self.device != "cpu":
            problems.append("--runtime auto chooses where an int8 file runs on the CPU; drop it with --device cuda")
        problems += [_family_problem(member) for member in self.family if _family_problem(member)]
        if problems:
            raise EffnetError("invalid --auto search: " + "; ".join(problems))
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise EffnetError("--device cuda: no CUDA GPU is visible here; search for --device cpu instead")
        if str(self.weights).lower().endswith(".onnx"):
            raise EffnetError(f"{self.weights} is an ONNX file; search from the checkpoint it was exported from")
        if not Path(self.weights).is_file():
            raise EffnetError(f"{self.weights}: no such checkpoint")
        return self


@dataclass
class Candidate:
    name: str
    path: str
    kind: str  # "original", "quantize", "lite", "lite+quantize", "prune", "prune+quantize", "scale", "scale+quantize"
    target: float | None = None  # fraction of FLOPs pruned
    top1: float | None = None
    drop: float | None = None
    latency_ms: float | None = None
    size_mb: float | None = None
    feasible: bool = False


@dataclass
class AutoResult:
    """The search's outcome: every candidate, the choice and whether it met the constraint."""

    objective: Objective
    max_accuracy_drop: float
    device: str
    candidates: list[Candidate] = field(default_factory=list)
    chosen: str = "original"
    met: bool = False  # a compressed candidate stayed within the drop
    closest: str | None = None  # when none did: the compressed candidate with the smallest drop
    pareto: list[str] = field(default_factory=list)  # the accuracy/objective front, cheapest first
    runtime: str | None = None  # where OUT/model.onnx runs (None when the choice is a checkpoint)
    runtimes_measured: dict[str, dict[str, Any]] = field(default_factory=dict)  # with --runtime auto
    report: CompressionReport | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("report")
        return {"schema": "effnet.auto", **data}

    def summary(self) -> str:
        by_name = {c.name: c for c in self.candidates}
        base = by_name["original"]
        unit = "latency" if self.objective == "latency" else "size"
        if not self.met:
            closest = by_name.get(self.closest or "")
            detail = f"; the closest, {closest.name}, lost {closest.drop:.2f}" if closest and closest.drop else ""
            return (
                f"no compressed candidate stayed within {self.max_accuracy_drop:g} point(s) of the original's top-1"
                f"{detail}; the original is returned"
            )
        chosen = by_name[self.chosen]
        ratio = _ratio(chosen, base, self.objective)
        line = (
            f"chose {chosen.name}: top-1 {chosen.top1:.2f}% ({-(chosen.drop or 0):+.2f} points), "
            f"{unit} {ratio:.2f}x the original's ({1 / ratio:.2f}x {'faster' if unit == 'latency' else 'smaller'})"
            if ratio
            else f"chose {chosen.name}"
        )
        if self.runtimes_measured:
            timed = ", ".join(
                f"{r} {m['latency_ms']:.3f} ms, top-1 {m['top1']:.2f}%" for r, m in self.runtimes_measured.items()
            )
            line += f"; it runs on {self.runtime} ({timed})"
        return line


def _ratio(candidate: Candidate, base: Candidate, objective: Objective) -> float | None:
    mine, theirs = (
        (candidate.latency_ms, base.latency_ms) if objective == "latency" else (candidate.size_mb, base.size_mb)
    )
    return mine / theirs if mine and theirs else None


def _log(message: str) -> None:
    print(f"effnet: {message}", file=sys.stderr, flush=True)


def choose(candidates: list[Candidate], objective: Objective, max_drop: float) -> tuple[str, bool, str | None]:
    """``(chosen, met, closest)``: the best candidate by ``objective`` whose drop is within
    ``max_drop``; when no compressed candidate is, the original and the one closest to the bound."""
    key = "latency_ms" if objective == "latency" else "size_mb"
    for c in candidates:
        c.feasible = c.top1 is not None and c.drop is not None and c.drop <= max_drop + 1e-9
    compressed = [c for c in candidates if c.kind != "original" and getattr(c, key) is not None]
    feasible = [c for c in compressed if c.feasible]
    if feasible:
        best = min(feasible, key=lambda c: (getattr(c, key), c.drop))
        return best.name, True, None
    closest = min(compressed, key=lambda c: c.drop if c.drop is not None else float("inf"), default=None)
    return "original", False, closest.name if closest else None


def pareto_names(candidates: list[Candidate], objective: Objective) -> list[str]:
    """The candidates no other beats on both top-1 and the objective, cheapest first."""
    key = "latency_ms" if objective == "latency" else "size_mb"
    points = sorted(
        (c for c in candidates if c.top1 is not None and getattr(c, key) is not None),
        key=lambda c: (getattr(c, key), -c.top1),
    )
    front, best = [], -float("inf")
    for c in points:
        if c.top1 > best:
            front.append(c.name)
            best = c.top1
    return front


def run_auto(job: AutoJob) -> AutoResult:
    """Run the search into ``job.out``; returns (and writes) its result. The input is never modified."""
    job.validate()
    out = Path(job.out)
    state_path = out / "auto.json"
    identity = _identity(job)
    if out.exists() and any(out.iterdir()):
        if not job.resume:
            raise EffnetError(f"{out} is not empty; use --resume to continue a search there or choose another --out")
        if not (out / "search.json").exists():
            raise EffnetError(f"{out} holds no search to resume (no search.json)")
        if json.loads((out / "search.json").read_text()) != identity:
            raise EffnetError(f"{out} holds a search with other settings; resume it with the same ones")
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "search.json", identity)

    stages: list[tuple[str, Path, CompressionReport | None]] = [("original", Path(job.weights), None)]
    kinds: dict[str, tuple[str, float | None]] = {"original": ("original", None)}

    def int8(weights: Path, label: str, kind: str, target: float | None) -> None:
        """The int8 candidates of ``weights``: per-channel, and per-tensor with ``job.per_tensor``."""
        if not (job.quantize and job.device == "cpu"):
            return
        prefix = "" if label == "original" else f"{label}+"
        folder = "int8" if label == "original" else label.replace(":", "-") + "-int8"
        for grid in ("", "-tensor") if job.per_tensor else ("",):
            path, report = _quantized(job, weights, out / "candidates" / f"{folder}{grid}", per_channel=not grid)
            stages.append((f"{prefix}int8{grid}", path, report))
            kinds[f"{prefix}int8{grid}"] = (kind, target)

    int8(Path(job.weights), "original", "quantize", None)

    source, offset = Path(job.weights), 0.0  # what the rungs prune, and its top-1 below the original's
    if job.lite_epochs:
        lite = _lite(job, out / "candidates" / "lite")
        stages.append(("lite", lite, None))
        kinds["lite"] = ("lite", None)
        int8(lite, "lite", "lite+quantize", None)
        lite_drop = _top1_drop(job, lite)
        if lite_drop <= job.max_accuracy_drop:
            _log(f"lite scores {-lite_drop:+.2f} points against the original: the pruning rungs start from it")
            source, offset = lite, lite_drop
        else:
            _log(f"lite lost {lite_drop:.2f} points: the pruning rungs start from the original")

    sensitivity_file: Path | None = None
    for target in job.targets:
        label = f"prune{round(target * 100)}" if source == Path(job.weights) else f"lite-prune{round(target * 100)}"
        folder = out / "candidates" / label
        _log(f"candidate {label}: {target:.0%} of the FLOPs pruned, {job.finetune_epochs} fine-tuning epoch(s)")
        report = _pruned(job, target, folder, sensitivity_file, source if source != Path(job.weights) else None)
        if job.sensitivity and sensitivity_file is None:
            sensitivity_file = folder / "sensitivity.json"
        pruned = folder / "model.safetensors"
        stages.append((label, pruned, report))
        kinds[label] = ("prune", target)
        before, after = report.passes[0].top1, report.passes[-1].top1
        drop = (before or 0.0) - (after or 0.0) + offset
        int8(pruned, label, "prune+quantize", target)
        if drop > job.max_accuracy_drop:
            _log(f"{label} lost {drop:.2f} points on the validation images: harsher pruning is not tried")
            break

    for member in job.family:
        label = f"scale:{member.split(':')[0]}"
        folder = out / "candidates" / label.replace(":", "-")
        path = _trained(job, member, folder)
        stages.append((label, path, None))
        kinds[label] = ("scale", None)
        int8(path, label, "scale+quantize", None)

    _log(f"measuring the original and {len(stages) - 1} candidate(s) in one run ...")
    shared = {k: getattr(job, k) for k in ("data_dir", "img_size", "threads", "repeats")}
    report = _measure(job, stages, out, shared)
    result = _result(job, report, stages, kinds)
    _write_json(out / "report.json", report.to_dict())
    _copy_choice(result, out)
    chosen_path = Path(next(c.path for c in result.candidates if c.name == result.chosen))
    if chosen_path.suffix == ".onnx":
        result.runtime = "onnxruntime"
        if job.runtime == "auto":
            from effnet.compress.quantize_runner import choose_file_runtime

            _log(f"choosing the runtime of {result.chosen}: ONNX Runtime or OpenVINO, measured here ...")
            result.runtime, result.runtimes_measured = choose_file_runtime(
                out / "model.onnx", job.data, data_dir=job.data_dir, img_size=job.img_size, threads=job.threads,
                repeats=job.repeats,
            )  # fmt: skip
    _write_json(state_path, result.to_dict())
    return result


def _measure(
    job: AutoJob, stages: list[tuple[str, Path, CompressionReport | None]], out: Path, shared: dict[str, Any]
) -> CompressionReport:
    from effnet.compress.recipe import measure_stages

    report = measure_stages(job.weights, job.data, stages, out, shared=shared, device=job.device)
    # One sensitivity table, not one per rung: every rung measured the same original.
    seen, unique = set(), []
    for row in report.prune_sensitivity:
        key = json.dumps(row.to_dict(), sort_keys=True)
        if key not in seen:
            seen.add(key)
            unique.append(row)
    report.prune_sensitivity = unique
    return report


def _result(
    job: AutoJob,
    report: CompressionReport,
    stages: list[tuple[str, Path, CompressionReport | None]],
    kinds: dict[str, tuple[str, float | None]],
) -> AutoResult:
    rows: dict[str, CompressionPass] = {row.name: row for row in report.passes}
    base = rows["original"].top1
    candidates = []
    for label, path, _ in stages:
        row = rows[label]
        kind, target = kinds[label]
        drop = None if base is None or row.top1 is None else round(base - row.top1, 4)
        candidates.append(
            Candidate(label, str(path), kind, target, row.top1, drop, row.latency_ms, row.size_mb)  # fmt: skip
        )
    chosen, met, closest = choose(candidates, job.objective, job.max_accuracy_drop)
    return AutoResult(
        objective=job.objective,
        max_accuracy_drop=job.max_accuracy_drop,
        device=job.device,
        candidates=candidates,
        chosen=chosen,
        met=met,
        closest=closest,
        pareto=pareto_names(candidates, job.objective),
        report=report,
    )


def _copy_choice(result: AutoResult, out: Path) -> None:
    chosen = next(c for c in result.candidates if c.name == result.chosen)
    source = Path(chosen.path)
    for stale in (out / "model.safetensors", out / "model.onnx"):
        stale.unlink(missing_ok=True)
    shutil.copyfile(source, out / f"model{source.suffix}")


def _lite(job: AutoJob, folder: Path) -> Path:
    """EfficientNet-Lite's swap of the original, fine-tuned ``lite_epochs`` with the original as teacher."""
    from effnet.compress.lite import swap_and_recover

    _log(f"candidate lite: ReLU6 for SiLU, no squeeze-excitation, {job.lite_epochs} fine-tuning epoch(s)")
    return swap_and_recover(
        job.weights,
        job.data,
        folder,
        epochs=job.lite_epochs,
        alpha=job.distill_alpha or 0.7,  # the swap loses most of the accuracy: always learn from the original
        **{k: getattr(job, k) for k in ("data_dir", "subset", "batch_size", "img_size", "workers", "seed")},
        device="auto" if job.device == "cpu" else job.device,
    )


def _top1_drop(job: AutoJob, weights: Path) -> float:
    """Top-1 points ``weights`` lies below the original on the evaluation split (as ``effnet eval`` measures)."""
    from effnet.training.eval_checkpoint import evaluate_checkpoint

    def top1(path: str | Path) -> float:
        return evaluate_checkpoint(path, job.data, data_dir=job.data_dir, workers=0, img_size=job.img_size).top1

    return top1(job.weights) - top1(weights)


def _pruned(
    job: AutoJob, target: float, folder: Path, sensitivity_file: Path | None, source: Path | None = None
) -> CompressionReport:
    from effnet.compress.prune import channel_multiple
    from effnet.compress.runner import PruneJob, run_prune

    if (folder / "report.json").exists():
        return CompressionReport.from_dict(json.loads((folder / "report.json").read_text()))
    prune = PruneJob(
        weights=str(source or job.weights),
        data=job.data,
        out=str(folder),
        target=target,
        target_kind="flops",
        round_to=channel_multiple(job.device),  # the widths the deployment device computes in
        finetune_epochs=job.finetune_epochs,
        distill_alpha=job.distill_alpha,
        teacher=job.weights if job.distill_alpha and source else None,  # a lite rung still learns from the original
        sensitivity=job.sensitivity,
        sensitivity_file=str(sensitivity_file) if sensitivity_file else None,
        data_dir=job.data_dir,
        subset=job.subset,
        batch_size=job.batch_size,
        img_size=job.img_size,
        workers=job.workers,
        device="auto" if job.device == "cpu" else job.device,  # train where it is fastest; time where it runs
        seed=job.seed,
        threads=job.threads,
        repeats=min(job.repeats, 10),  # the search's own timing comes later, all candidates interleaved
        runtimes=("onnxruntime",) if job.device == "cpu" else ("torch",),
        resume=folder.exists(),
    )
    return run_prune(prune)


def _quantized(job: AutoJob, weights: Path, folder: Path, per_channel: bool = True) -> tuple[Path, CompressionReport]:
    from effnet.compress.quantize import QuantizeConfig
    from effnet.compress.quantize_runner import QuantizeJob, run_quantize

    if (folder / "report.json").exists():
        return folder / "model.onnx", CompressionReport.from_dict(json.loads((folder / "report.json").read_text()))
    shutil.rmtree(folder, ignore_errors=True)  # quantizing is short: a half-done candidate starts again
    grid = "per-channel" if per_channel else "per-tensor"
    _log(f"candidate {folder.name}: static int8 ({grid} weights) of {weights}")
    config = QuantizeConfig(calib_images=max(16, min(256, job.subset or 256)), per_channel=per_channel)
    quantize = QuantizeJob(
        weights=str(weights),
        data=job.data,
        out=str(folder),
        config=config,
        runtime="onnxruntime",  # the runtime every candidate is measured on
        data_dir=job.data_dir,
        subset=job.subset,
        batch_size=job.batch_size,
        img_size=job.img_size,
        workers=job.workers,
        seed=job.seed,
        threads=job.threads,
        repeats=min(job.repeats, 10),
    )
    return folder / "model.onnx", run_quantize(quantize)


def _family_problem(member: str) -> str | None:
    from effnet.models.config import get_config

    name = member.split(":")[0]
    try:
        get_config(name)
    except EffnetError:
        from effnet.models.baselines import is_baseline

        if not is_baseline(name):
            return f"--family {member}: unknown model {name!r} (effnet list shows the names)"
    return None


# What a family member repeats from the original's recipe besides what pruned rungs repeat.
_FAMILY_INHERITED = ("augment", "optimizer", "lr", "weight_decay", "warmup_epochs", "drop_rate", "drop_path")


def _trained(job: AutoJob, member: str, folder: Path) -> Path:
    """Train a family member on the job's data at ``family_epochs``: the scale-instead-of-compress row.

    It repeats the original's recorded recipe (optimizer, learning rate, augmentation, crops,
    regularisation) so that only the network differs. With ``distill_alpha`` the member learns
    from the original as teacher too (Hinton et al., 2015), the same help the pruned rungs get.
    """
    import effnet
    from effnet.compress.runner import _INHERITED, _parent_training
    from effnet.training.distill import distill

    best = folder / "best.safetensors"
    if (folder / "summary.json").exists() and best.exists():
        return best
    name, _, weights = member.partition(":")
    teacher = " with the original as teacher" if job.distill_alpha else ""
    _log(f"candidate scale:{name}: trained on {job.data} for {job.family_epochs} epoch(s)"
         + (f" from {weights} weights" if weights else " from scratch") + teacher)  # fmt: skip
    recipe = {
        **_parent_training(job.weights, _INHERITED + _FAMILY_INHERITED),
        "data": job.data,
        "out": str(folder),
        "epochs": job.family_epochs,
        "resume": (folder / "config.yaml").exists(),
        "tensorboard": False,
        **{k: getattr(job, k) for k in ("data_dir", "subset", "batch_size", "img_size", "workers", "seed")},
        "device": "auto" if job.device == "cpu" else job.device,
    }
    if job.distill_alpha:
        distill(job.weights, name, recipe=recipe, student_weights=weights or None, alpha=job.distill_alpha)
    else:
        effnet.train({"model": name, "weights": weights or None, **recipe})
    return best


def _identity(job: AutoJob) -> dict[str, Any]:
    keep = ("weights", "data", "max_accuracy_drop", "objective", "device", "targets", "finetune_epochs")
    keep += ("sensitivity", "quantize", "family", "family_epochs", "subset", "img_size", "seed")
    from effnet.configs import plain

    identity = {k: plain(getattr(job, k)) for k in keep}
    if job.lite_epochs:  # searches without it keep their identity
        identity["lite_epochs"] = job.lite_epochs
    if job.distill_alpha:  # searches without it keep their identity
        identity["distill_alpha"] = job.distill_alpha
    if not job.per_tensor:  # searches from before the per-tensor candidates gain them on resume
        identity["per_tensor"] = False
    return identity  # not the runtime: its choice is made again at the end of every run


def _write_json(path: Path, data: Any) -> None:
    from effnet.training.state import write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, data)
