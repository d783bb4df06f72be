"""The training recipe: every setting of ``effnet train``, as a validated dataclass.

A recipe is the third kind of config (beside the architecture and the weight spec). It comes
from a YAML file, command-line flags, or Python; flags override the file, unknown keys are
rejected by name, and the resolved recipe is written to the run directory.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from effnet.configs import checked_fields, load_yaml
from effnet.errors import EffnetError
from effnet.sizes import input_size_problem
from effnet.weights.specs import Interpolation

Optimizer = Literal["sgd", "adamw", "rmsprop"]
Amp = Literal["off", "fp16", "bf16"]
Augment = Literal["none", "flip", "randaugment", "trivialaugment"]


@dataclass
class TrainConfig:
    """Everything that decides a training run. Defaults are a sound fine-tuning recipe."""

    data: str = ""  # image folder, CSV of path,label, or fashion-mnist / cifar10
    out: str = ""  # run directory: checkpoints, metrics.jsonl, TensorBoard events, config.yaml
    model: str | None = None  # default: the architecture a checkpoint in ``weights`` records, else efficientnet_lite0
    weights: str | None = None  # imagenet | a tag | a checkpoint path; None trains from scratch
    data_dir: str | None = None  # where a built-in dataset's files are
    val_split: float = 0.1  # held out from a flat DIR/<class>/* folder or a CSV
    subset: int | None = None  # at most this many training images (quick runs, the demo)
    strict: bool = False  # an unreadable image is an error instead of a counted warning
    epochs: int = 10
    batch_size: int = 64  # per process; the global batch under torchrun is this times the world size
    img_size: int | None = None  # default: the weights' input size, else the model's resolution
    # Preprocessing overrides; each defaults to the pretrained weights' registry entry.
    crop_pct: float | None = None  # evaluation centre crop as a fraction of the resized side (1 = no crop)
    interpolation: Interpolation | None = None  # resize filter
    mean: tuple[float, float, float] | None = None  # per-channel normalisation
    std: tuple[float, float, float] | None = None
    lr: float | None = None  # default per optimizer: adamw 1e-3, sgd 0.1 and rmsprop 0.016 per 256 images
    optimizer: Optimizer = "adamw"
    weight_decay: float | None = None  # default: adamw 0.05, sgd 1e-4, rmsprop 1e-5 (never on norms/biases)
    momentum: float = 0.9
    warmup_epochs: float = 1.0  # linear warm-up, then cosine decay to min_lr
    min_lr: float = 0.0
    label_smoothing: float = 0.1
    augment: Augment = "trivialaugment"  # "none" turns off random crops and flips too
    crop_scale: tuple[float, float] = (0.25, 1.0)  # RandomResizedCrop area range
    mixup: float = 0.0  # Beta(alpha, alpha) for mixup; 0 disables
    cutmix: float = 0.0
    ema: bool = False  # keep an exponential moving average of the weights and evaluate/save it
    ema_decay: float = 0.9998
    drop_rate: float | None = None  # dropout before the classifier (model default if None)
    drop_path: float | None = None  # stochastic depth (model default if None)
    grad_clip: float | None = None  # max gradient norm
    bn_l1: float = 0.0  # network-slimming L1 penalty on batch-norm scales (0 = off), to make channels prunable
    accum_steps: int = 1  # gradient accumulation
    # Default: on when training on a CPU, where it measured 1.6-1.8x faster for EfficientNet
    # (docs/benchmarks.md); off on GPUs until measured there.
    channels_last: bool | None = None
    compile: bool = False  # torch.compile the model
    amp: Amp = "off"
    freeze_backbone: bool = False  # train the new head only...
    unfreeze_at: int | None = None  # ...until this epoch (0-based), then the whole network
    backbone_lr_scale: float = 0.1  # backbone learning rate relative to the head when fine-tuning
    freeze_bn: bool | None = None  # keep BatchNorm statistics frozen; default: on when fine-tuning
    sync_bn: bool = False  # synchronise BatchNorm statistics across processes (torchrun)
    workers: int = 2
    seed: int = 0
    resume: bool = False
    device: str = "auto"
    progress: bool = True  # a progress bar on stderr
    tensorboard: bool = True
    eval_every: int = 1  # evaluate on the validation split every N epochs (and after the last)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes stored with the run

    def validate(self) -> TrainConfig:
        """Check ranges and combinations; raise one EffnetError naming every problem."""
        problems = []
        if not self.data:
            problems.append("--data is required")
        if not self.out:
            problems.append("--out is required")
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "accum_steps": self.accum_steps}
        problems += [f"{k} must be at least 1, got {v}" for k, v in positive.items() if v < 1]
        if self.lr is not None and not self.lr > 0:
            problems.append(f"lr must be positive, got {self.lr}")
        if self.img_size is not None and input_size_problem(self.img_size, "img_size"):
            problems.append(input_size_problem(self.img_size, "img_size"))
        if not 0.0 < self.val_split < 1.0:
            problems.append(f"val_split must be between 0 and 1, got {self.val_split}")
        if self.subset is not None and self.subset < 2:
            problems.append(f"subset must be at least 2, got {self.subset}")
        for name in (
            "label_smoothing",
            "mixup",
            "cutmix",
            "min_lr",
            "warmup_epochs",
            "weight_decay",
            "momentum",
            "bn_l1",
        ):
            value = getattr(self, name)
            if value is not None and value < 0:
                problems.append(f"{name} must not be negative, got {value}")
        if not 0.0 <= self.label_smoothing < 1.0:
            problems.append(f"label_smoothing must be below 1, got {self.label_smoothing}")
        if not 0.0 < self.ema_decay < 1.0:
            problems.append(f"ema_decay must be between 0 and 1, got {self.ema_decay}")
        if not 0.0 < self.crop_scale[0] <= self.crop_scale[1] <= 1.0:
            problems.append(f"crop_scale must satisfy 0 < low <= high <= 1, got {list(self.crop_scale)}")
        if self.crop_pct is not None and not 0.1 <= self.crop_pct <= 1.0:
            problems.append(f"crop_pct must be in [0.1, 1], got {self.crop_pct}")
        if self.std is not None and not all(v > 0 for v in self.std):
            problems.append(f"std must be positive, got {list(self.std)}")
        if self.unfreeze_at is not None and not self.freeze_backbone:
            problems.append("unfreeze_at needs freeze_backbone")
        if self.unfreeze_at is not None and not 0 <= self.unfreeze_at < self.epochs:
            problems.append(f"unfreeze_at must be an epoch in [0, {self.epochs}), got {self.unfreeze_at}")
        if self.workers < 0:
            problems.append(f"workers must not be negative, got {self.workers}")
        if problems:
            raise EffnetError("invalid training config: " + "; ".join(problems))
        return self

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for name in ("crop_scale", "mean", "std"):
            if data[name] is not None:
                data[name] = list(data[name])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> TrainConfig:
        """Build from plain data, checking key names and value types (no code is ever evaluated)."""
        return cls(**checked_fields(cls, data, source))


def resolve_config(file: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """The recipe from a YAML file (if any) with ``overrides`` (e.g. command-line flags) on top."""
    data = load_yaml(file) if file else {}
    source = str(file) if file else "config"
    merged = {**data, **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig.from_dict(merged, source=source).validate()
