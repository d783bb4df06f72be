"""Compound-coefficient search: the small grid search that found EfficientNet's alpha, beta and gamma.

Tan & Le (2019), "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks",
section 3.3 (https://arxiv.org/abs/1905.11946): with phi fixed at 1, search depth alpha, width
beta and resolution gamma, each at least 1, under ``alpha * beta**2 * gamma**2 ~= 2`` (FLOPs grow
about 2x per unit of phi), train each candidate, and keep the best; the family is then
``scaled_config(phi, alpha, beta, gamma)``. The paper searched on ImageNet and found
(1.2, 1.1, 1.15); :func:`scale_search` runs the same search on your data with a short budget
and adds what the paper's FLOPs leave out: the latency of each candidate on your hardware.

>>> [(c.alpha, c.beta, c.gamma) for c in grid_candidates(max_candidates=3)]
[(1.2, 1.1, 1.15), (2.1, 1.0, 1.0), (1.0, 1.4, 1.0)]
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from effnet.errors import EffnetError
from effnet.models.config import PAPER_COEFFICIENTS, EfficientNetConfig, get_config
from effnet.models.scaling import scaled_config
from effnet.sizes import input_size_problem
from effnet.training.config import TrainConfig

PAPER = "Tan & Le 2019, section 3.3, https://arxiv.org/abs/1905.11946"
FLOPS_RATIO = 2.0  # the constraint's right-hand side: FLOPs double per unit of phi
RESULT_FILE = "scale_search.json"
TRAIN_BASE_SIZE = 64  # the side the base trains at by default: B0 at 64 px is affordable on a CPU
# Settings that may change on --resume; the others decide the candidates and their results.
_RESUMABLE = {"workers", "device", "progress", "runtime", "threads", "repeats", "latency_device"}


@dataclass(frozen=True)
class Candidate:
    """One (alpha, beta, gamma) of the grid: depth, width and resolution multipliers at phi = 1."""

    alpha: float
    beta: float
    gamma: float

    @property
    def product(self) -> float:
        """``alpha * beta**2 * gamma**2``: how much the FLOPs grow per unit of phi."""
        return self.alpha * self.beta**2 * self.gamma**2

    def config(self, base: str = "efficientnet_b0") -> EfficientNetConfig:
        """The phi = 1 member of this candidate's family."""
        return scaled_config(1.0, self.alpha, self.beta, self.gamma, base=base)


def _grid(step: float, high: float) -> list[float]:
    """1, 1 + step, ... up to ``high``, rounded so that 1.15 is 1.15 and not 1.1500000000000001."""
    count = int(math.floor((high - 1.0) / step + 1e-9))
    return [round(1.0 + i * step, 6) for i in range(count + 1)]


def _flops_shares(c: Candidate) -> tuple[float, float, float]:
    """How the FLOPs growth splits between depth, width and resolution (the shares sum to about 1)."""
    total = math.log(FLOPS_RATIO)
    return math.log(c.alpha) / total, 2 * math.log(c.beta) / total, 2 * math.log(c.gamma) / total


def grid_candidates(
    step: float = 0.05, grid_max: float = 1.4, tolerance: float = 0.1, max_candidates: int = 6
) -> list[Candidate]:
    """The candidates of the search: grid points near the constraint, spread out, the paper's first.

    beta and gamma run over ``1, 1 + step, ..., grid_max``; alpha over the same steps up to
    ``2 + tolerance`` (it takes whatever FLOPs budget width and resolution leave). A triple is
    kept when ``|alpha * beta**2 * gamma**2 - 2| <= tolerance``: the paper's own point has a
    product of 1.92, so the constraint is "about 2", not exactly 2. Of those, at most
    ``max_candidates`` are chosen by farthest-point sampling on how each splits the 2x FLOPs
    between depth, width and resolution (:func:`_flops_shares`): it starts from the paper's
    (1.2, 1.1, 1.15) when that point is on the grid and within the tolerance (else from the most
    balanced split), then repeatedly adds the candidate farthest from all chosen so far, so
    pure depth, pure width and pure resolution scaling come next, then mixtures between them.
    Ties go to the smaller (alpha, beta, gamma).

    >>> [round(c.product, 3) for c in grid_candidates(max_candidates=2)]
    [1.92, 2.1]
    """
    if not (math.isfinite(step) and step > 0) or not (math.isfinite(grid_max) and grid_max >= 1 + step - 1e-9):
        raise EffnetError(
            f"empty grid: --grid-step {step:g} with --grid-max {grid_max:g} gives no value above 1; "
            "use a step in (0, grid_max - 1]"
        )
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise EffnetError(f"tolerance must be zero or positive, got {tolerance:g}")
    if max_candidates < 1:
        raise EffnetError(f"max_candidates must be at least 1, got {max_candidates}")
    widths = _grid(step, grid_max)
    depths = _grid(step, FLOPS_RATIO + tolerance)
    pool = [
        Candidate(a, b, g)
        for a in depths
        for b in widths
        for g in widths
        if abs(a * b * b * g * g - FLOPS_RATIO) <= tolerance + 1e-9
    ]
    if not pool:
        raise EffnetError(
            f"no (alpha, beta, gamma) on the grid (step {step:g}, up to {grid_max:g}) has alpha*beta^2*gamma^2 "
            f"within {tolerance:g} of {FLOPS_RATIO:g}; raise --tolerance or use a finer --grid-step"
        )
    paper = Candidate(*PAPER_COEFFICIENTS)
    if paper in pool:
        first = paper
    else:
        first = min(pool, key=lambda c: math.dist(_flops_shares(c), (1 / 3, 1 / 3, 1 / 3)))
    chosen = [first]
    shares = {c: _flops_shares(c) for c in pool}
    while len(chosen) < min(max_candidates, len(pool)):
        rest = [c for c in pool if c not in chosen]
        chosen.append(max(rest, key=lambda c: (min(math.dist(shares[c], shares[s]) for s in chosen), _neg(c))))
    return chosen


def _neg(c: Candidate) -> tuple[float, float, float]:
    return -c.alpha, -c.beta, -c.gamma


@dataclass
class CandidateResult:
    """What the search measured for one candidate; one entry of ``scale_search.json``."""

    index: int
    alpha: float
    beta: float
    gamma: float
    product: float  # alpha * beta**2 * gamma**2
    depth_mult: float  # relative to the base: alpha at phi = 1
    width_mult: float  # beta
    resolution_mult: float  # gamma
    name: str  # the member's model name: `effnet train --model NAME` builds it
    resolution: int  # its own input side, where params, FLOPs and latency are measured
    train_img_size: int  # the side it was trained at (resolution times img_scale)
    run: str  # its training run folder
    top1: float | None = None  # best validation top-1 (%) of the short training run
    params: int | None = None
    flops: int | None = None  # one image at ``resolution`` (2 per multiply-add)
    latency_ms: float | None = None  # batch 1, median, all candidates timed interleaved
    latency_error: str | None = None


@dataclass
class ScaleSearchResult:
    """The whole search: settings, per-candidate results and the best by top-1."""

    out: str
    settings: dict[str, Any]
    candidates: list[CandidateResult]
    best: int | None  # index of the candidate with the highest top-1 (fewer FLOPs break ties)
    latency: dict[str, Any]

    def ranked(self) -> list[CandidateResult]:
        """Candidates by top-1, best first; equal top-1 goes to fewer FLOPs."""
        return sorted(self.candidates, key=_rank_key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "paper": PAPER,
            "constraint": f"alpha * beta^2 * gamma^2 = {FLOPS_RATIO:g} +- {self.settings['tolerance']:g}, phi = 1",
            "settings": self.settings,
            "latency": self.latency,
            "best": self.best,
            "candidates": [asdict(c) for c in self.candidates],
        }


def _rank_key(c: CandidateResult) -> tuple[float, float, int]:
    return (-c.top1 if c.top1 is not None else math.inf, c.flops if c.flops is not None else math.inf, c.index)


def scale_search(
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    base: str = "efficientnet_b0",
    grid_step: float = 0.05,
    grid_max: float = 1.4,
    tolerance: float = 0.1,
    max_candidates: int = 6,
    epochs: int = 1,
    subset: int | None = None,
    img_scale: float | None = None,
    batch_size: int = 64,
    lr: float | None = None,
    augment: str = "flip",
    data_dir: str | os.PathLike[str] | None = None,
    val_split: float = 0.1,
    workers: int = 2,
    device: str = "auto",
    seed: int = 0,
    runtime: str = "onnxruntime",
    latency_device: str = "cpu",
    threads: int | None = None,
    repeats: int = 50,
    resume: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> ScaleSearchResult:
    """Search (alpha, beta, gamma) at phi = 1 on ``data`` (Tan & Le 2019, section 3.3).

    Each candidate of :func:`grid_candidates` becomes ``scaled_config(1, alpha, beta, gamma,
    base=base)``, is trained from scratch by :func:`effnet.training.engine.fit` for ``epochs``
    (its run in ``out/runs/<index>/``) at its own resolution times ``img_scale`` (default: the
    base trains at 64 px), and is scored by validation top-1. Parameters and FLOPs are counted
    at the candidate's own resolution; batch-1 latency is timed there too, for all candidates
    interleaved in one :func:`effnet.bench.benchmark` run on ``runtime`` (``onnxruntime`` or
    ``torch``) on ``latency_device``. ``out/scale_search.json`` holds the results; ``resume``
    continues a search, skipping candidates whose runs finished. The training recipe is the
    engine's, with warm-up over the first tenth of the budget. Bad input raises one
    :class:`EffnetError` before anything is written.

    Example::

        result = scale_search("photos/", "runs/search", subset=4000, epochs=1)
        best = result.candidates[result.best]
        effnet.create_model(f"efficientnet_b0_phi2_a{best.alpha:g}_b{best.beta:g}_g{best.gamma:g}")
    """
    import torch

    from effnet.data.datasets import load_data
    from effnet.factory import create_model
    from effnet.models.efficientnet import EfficientNet
    from effnet.models.summary import count_flops, count_params
    from effnet.training.engine import fit
    from effnet.training.state import write_json

    say = log or (lambda message: print(f"effnet: {message}", file=sys.stderr, flush=True))
    base_cfg = get_config(base)
    candidates = grid_candidates(grid_step, grid_max, tolerance, max_candidates)
    if img_scale is None:
        img_scale = TRAIN_BASE_SIZE / base_cfg.resolution
    if not (math.isfinite(img_scale) and 0 < img_scale <= 1):
        raise EffnetError(f"img_scale must be in (0, 1], got {img_scale:g}")
    if runtime not in ("onnxruntime", "torch"):
        raise EffnetError(f"runtime must be onnxruntime or torch, got {runtime!r}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("repeats", repeats)):
        if value < 1:
            raise EffnetError(f"{name} must be at least 1, got {value}")
    configs = [c.config(base_cfg.name) for c in candidates]
    sizes = [max(1, int(round(cfg.resolution * img_scale))) for cfg in configs]
    for cfg, size in zip(configs, sizes, strict=True):
        problem = input_size_problem(size, f"{cfg.name}'s training size ({cfg.resolution} px x {img_scale:g})")
        if problem:
            raise EffnetError(f"{problem}; change --img-scale")
    out_dir = Path(out)
    settings = {
        "data": os.fspath(data),
        "data_dir": None if data_dir is None else os.fspath(data_dir),
        "base": base_cfg.name,
        "grid_step": grid_step,
        "grid_max": grid_max,
        "tolerance": tolerance,
        "max_candidates": max_candidates,
        "epochs": epochs,
        "subset": subset,
        "img_scale": img_scale,
        "batch_size": batch_size,
        "lr": lr,
        "augment": augment,
        "val_split": val_split,
        "seed": seed,
        "workers": workers,
        "device": device,
        "runtime": runtime,
        "latency_device": latency_device,
        "threads": threads,
        "repeats": repeats,
        "progress": progress,
    }
    recipe = {
        "data": settings["data"],
        "data_dir": settings["data_dir"],
        "epochs": epochs,
        "batch_size": batch_size,
        "subset": subset,
        "lr": lr,
        "augment": augment,
        "warmup_epochs": 0.1 * epochs,
        "val_split": val_split,
        "workers": workers,
        "device": device,
        "seed": seed,
        "progress": progress,
        "tensorboard": False,
    }
    TrainConfig.from_dict({**recipe, "out": str(out_dir / "runs" / "0"), "img_size": sizes[0]}).validate()
    _check_out_dir(out_dir, resume, settings)
    splits = load_data(data, data_dir=data_dir, val_split=val_split, seed=seed, subset=subset)
    if not splits.val:
        raise EffnetError(f"{data} has no validation images; the search ranks candidates by validation top-1")
    num_classes = len(splits.classes)

    results = []
    for index, (cand, cfg, size) in enumerate(zip(candidates, configs, sizes, strict=True)):
        with torch.device("meta"):  # counting needs shapes only
            shape_only = EfficientNet(cfg.replace(num_classes=num_classes))
        results.append(
            CandidateResult(
                index=index,
                alpha=cand.alpha,
                beta=cand.beta,
                gamma=cand.gamma,
                product=round(cand.product, 6),
                depth_mult=cand.alpha,
                width_mult=cand.beta,
                resolution_mult=cand.gamma,
                name=cfg.name,
                resolution=cfg.resolution,
                train_img_size=size,
                run=str(out_dir / "runs" / str(index)),
                params=count_params(shape_only),
                flops=count_flops(shape_only, cfg.resolution, cfg.in_chans),
            )
        )
    result = ScaleSearchResult(str(out_dir), settings, results, None, {})
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / RESULT_FILE, result.to_dict())

    for row, cfg in zip(results, configs, strict=True):
        run_dir = Path(row.run)
        finished = _finished_summary(run_dir)
        if finished is not None:
            top1 = finished.get("best_val_top1")
            row.top1 = float(top1) if isinstance(top1, int | float) else None
            say(f"candidate {row.index + 1}/{len(results)}: {row.name} finished earlier, skipped")
        else:
            started = (run_dir / "config.yaml").is_file()
            say(
                f"candidate {row.index + 1}/{len(results)}: alpha {row.alpha:g}, beta {row.beta:g}, "
                f"gamma {row.gamma:g} ({row.name}), training at {row.train_img_size} px"
                + (" (resuming)" if started else "")
            )
            torch.manual_seed(seed)  # every candidate starts from the same random stream
            model = create_model(cfg, num_classes=num_classes)
            trained = fit(
                model, recipe={**recipe, "out": str(run_dir), "img_size": row.train_img_size, "resume": started}
            )
            row.top1 = trained.best_top1
        write_json(out_dir / RESULT_FILE, result.to_dict())

    result.latency = _measure_latency(results, configs, num_classes, runtime, latency_device, threads, repeats, say)
    ranked = result.ranked()
    result.best = ranked[0].index if ranked and ranked[0].top1 is not None else None
    write_json(out_dir / RESULT_FILE, result.to_dict())
    return result


def _check_out_dir(out_dir: Path, resume: bool, settings: dict[str, Any]) -> None:
    """A new search needs an empty --out; ``resume`` needs one holding a search with the same settings."""
    if out_dir.exists() and not out_dir.is_dir():
        raise EffnetError(f"--out {out_dir} is a file, not a directory")
    holds = out_dir.is_dir() and any(out_dir.iterdir())
    if not resume:
        if holds:
            raise EffnetError(
                f"{out_dir} is not empty; use --resume to continue the search there or choose a new --out"
            )
        return
    if not holds:
        return  # nothing to resume: start the search
    path = out_dir / RESULT_FILE
    try:
        recorded = json.loads(path.read_text())["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        raise EffnetError(
            f"{out_dir} holds no scale search ({RESULT_FILE} missing or unreadable); choose a new --out"
        ) from None
    changed = sorted(k for k in settings if k not in _RESUMABLE and recorded.get(k) != settings[k])
    if changed:
        raise EffnetError(
            f"--resume with settings that differ from the search in {out_dir}: {', '.join(changed)}; "
            "resume with the same settings (only workers, device and the latency settings may change)"
        )


def _finished_summary(run_dir: Path) -> dict[str, Any] | None:
    """The summary of a training run that completed (the engine writes summary.json last), else None."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def _measure_latency(
    results: list[CandidateResult],
    configs: list[EfficientNetConfig],
    num_classes: int,
    runtime: str,
    device: str,
    threads: int | None,
    repeats: int,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Batch-1 latency of every candidate at its own resolution, timed interleaved in one run.

    Fresh networks are timed: weights do not change a dense network's latency, and each module then
    records its own resolution as its input size.
    """
    from effnet.bench import benchmark
    from effnet.factory import create_model

    models = [(row.name, create_model(cfg, num_classes=num_classes)) for row, cfg in zip(results, configs, strict=True)]
    say(f"timing {len(models)} candidates at batch 1 on {runtime}, interleaved")
    report = benchmark(
        models,
        device=device,
        threads=threads,
        runtimes=(runtime,),
        warmup=max(1, repeats // 5),
        repeats=repeats,
        measure_memory=False,
        log=say,
    )
    for row, bench_row in zip(results, report.results, strict=True):
        row.latency_ms = bench_row.latency_ms_median
        row.latency_error = bench_row.error
    return {
        "runtime": runtime,
        "batch_size": 1,
        "device": report.device,
        "cpu": report.cpu,
        "threads": report.threads,
        "warmup": report.warmup,
        "repeats": report.repeats,
        "torch_version": report.torch_version,
        "onnxruntime_version": report.onnxruntime_version,
    }


__all__ = ["PAPER", "Candidate", "CandidateResult", "ScaleSearchResult", "grid_candidates", "scale_search"]
