"""The training engine: :func:`fit` trains a model it is given; :func:`train` builds one from a recipe.

``effnet train`` and ``effnet.train`` are a thin builder over :func:`fit`. Compression plugs in
through the public surface: a :class:`~effnet.training.tasks.Task` owns the loss (classification,
distillation), :class:`~effnet.training.callbacks.Callback` objects receive the loop's events
(after backward, after the optimizer step, at epoch boundaries, on save), and
:meth:`Trainer.replace_model` swaps the network mid-run (a pruned copy) with a new optimizer,
EMA and DDP/compile wrapper.

Transfer learning follows the standard recipe (Kornblith et al., 2019, "Do Better ImageNet
Models Transfer Better?", https://arxiv.org/abs/1805.08974): a new head for the new classes,
optionally trained alone first, then the whole network at a lower backbone learning rate with
BatchNorm statistics frozen.

Never losing work is a design rule: every epoch ends with an atomic checkpoint; the training
state is written last and is the commit point; each epoch's randomness is derived from
``(seed, epoch)``, so ``--resume`` after any interruption ends where an uninterrupted run would.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import random
import re
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler

from effnet.data.datasets import DataSplits
from effnet.devices import resolve_device
from effnet.errors import EffnetError, out_of_memory_message
from effnet.factory import create_model, split_model_argument
from effnet.schemas import EpochMetrics, RunSummary
from effnet.training import distributed as D
from effnet.training.callbacks import Callback
from effnet.training.config import TrainConfig, load_yaml
from effnet.training.evaluate import EvalResult, evaluate
from effnet.training.schedule import warmup_cosine
from effnet.training.state import STATE_FILE, RunLock, load_state, save_state, write_json, write_text
from effnet.training.tasks import Batch, ClassificationTask, Task
from effnet.training.transforms import batch_mixer, override_preprocessing, resized, train_transform
from effnet.weights.io import write_checkpoint
from effnet.weights.specs import Preprocessing

DEFAULT_MODEL = "efficientnet_lite0"
_AMP = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}
# Recipe settings that may change on --resume; everything else must match the run's own config.
_RESUMABLE = {"epochs", "workers", "device", "progress", "resume", "tensorboard"}


class NonFiniteLoss(EffnetError):
    """The loss became NaN or infinite; the run stops and its last good checkpoint is kept."""


@dataclass
class TrainResult:
    run_dir: str
    best_top1: float | None
    best_epoch: int | None
    epochs: int
    history: list[dict] = field(default_factory=list)
    best_path: str = ""
    last_path: str = ""
    train_time_s: float = 0.0
    skipped_images: int = 0
    model: nn.Module | None = field(default=None, repr=False, compare=False)  # the trained network

    def to_dict(self) -> dict:
        """JSON-ready results (without the model). Epochs count from 1."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    return (seed * 1_000_003 + epoch * 1_009 + rank) % 2**63


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(backbone, head) parameters; the head is the model's classifier."""
    head = list(model.get_submodule(model.classifier_name).parameters())
    head_ids = {id(p) for p in head}
    return [p for p in model.parameters() if id(p) not in head_ids], head


def set_backbone_trainable(model: nn.Module, trainable: bool) -> None:
    backbone, _ = split_parameters(model)
    for p in backbone:
        p.requires_grad_(trainable)


def freeze_batchnorm_stats(model: nn.Module) -> None:
    """Put every BatchNorm in eval mode so its running statistics stay as pretrained."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def build_optimizer(
    model: nn.Module, cfg: TrainConfig, fine_tuning: bool, world_size: int, extra: Sequence[nn.Parameter] = ()
) -> torch.optim.Optimizer:
    """Optimizer with four groups: backbone/head x decay/no-decay (no decay on norms and biases).

    ``extra`` parameters (a task's own, e.g. distillation adapters) train at the head's rate.
    """
    global_batch = cfg.batch_size * cfg.accum_steps * world_size
    defaults = {
        "adamw": (1e-3, 0.05),
        "sgd": (0.1 * global_batch / 256, 1e-4),
        "rmsprop": (0.016 * global_batch / 256, 1e-5),
    }
    base_lr, base_wd = defaults[cfg.optimizer]
    lr = cfg.lr if cfg.lr is not None else base_lr
    wd = cfg.weight_decay if cfg.weight_decay is not None else base_wd
    backbone, head = split_parameters(model)
    backbone_lr = lr * (cfg.backbone_lr_scale if fine_tuning else 1.0)
    groups = []
    for params, group_lr in ((backbone, backbone_lr), (head, lr), (list(extra), lr)):
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        groups += [{"params": decay, "lr": group_lr, "weight_decay": wd}]
        groups += [{"params": no_decay, "lr": group_lr, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    if cfg.optimizer == "rmsprop":
        # The EfficientNet paper's RMSProp: decay 0.9, momentum 0.9, TF-style epsilon.
        return torch.optim.RMSprop(groups, lr=lr, alpha=0.9, eps=1e-3, momentum=cfg.momentum)
    return torch.optim.AdamW(groups, lr=lr)


class _Indexed(torch.utils.data.Dataset):
    """``(image, label, index)``: the index reaches the task as :attr:`Batch.indices` (e.g. to look up cached
    teacher logits)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, Any, int]:
        image, label = self.dataset[index]
        return image, label, index


def _loader(dataset: Any, batch_size: int, sampler: Any, workers: int, drop_last: bool, seed: int) -> DataLoader:
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available(),
        generator=generator,
        persistent_workers=False,
    )


def _read_metrics(path: Path, epochs_done: int) -> list[dict]:
    """Valid metric lines of the first ``epochs_done`` epochs (a line cut by a crash is dropped)."""
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get("epoch"), int) and 1 <= row["epoch"] <= epochs_done:
                rows.append(row)
    return rows


def _append_line(path: Path, row: dict) -> None:
    """Append one line; a line cut short by a crash or a full disk is dropped by :func:`_read_metrics`."""
    try:
        with open(path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        reason = "no space left on the device" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise EffnetError(
            f"could not write {path}: {reason}; the last complete epoch is kept (continue with --resume)"
        ) from None


RecipeLike = TrainConfig | dict | str | os.PathLike[str]


def fit(
    model: nn.Module,
    data: str | os.PathLike[str] | DataSplits | None = None,
    recipe: RecipeLike | None = None,
    *,
    task: Task | None = None,
    callbacks: Sequence[Callback] = (),
    **overrides: Any,
) -> TrainResult:
    """Train ``model`` (in place) on ``data`` with ``recipe``; the engine behind ``effnet train``.

    Args:
        model: an effnet model (:func:`effnet.create_model`, a pruned or otherwise edited copy,
            a baseline). Its classifier is replaced when the data has another number of classes.
        data: an image folder, CSV, ``fashion-mnist``/``cifar10`` (preprocessed to the model's
            input) or a :class:`~effnet.data.datasets.DataSplits` whose datasets already yield
            ``(image tensor, label)``; default: the recipe's ``data``.
        recipe: a :class:`TrainConfig`, a dict of its fields or a YAML file; ``overrides``
            replace single fields. Its ``model``/``weights`` only record where the model came from.
        task: what is optimised (default: :class:`~effnet.training.tasks.ClassificationTask`).
        callbacks: :class:`~effnet.training.callbacks.Callback` objects; their state is saved
            with every epoch and restored on ``resume=True``.

    Returns the run's :class:`TrainResult`; ``result.model`` is the trained network (a new
    object if a callback called :meth:`Trainer.replace_model`).

    Example::

        model = effnet.create_model("efficientnet_lite0", weights="imagenet")
        effnet.fit(model, "photos/", {"out": "runs/x", "epochs": 3}, callbacks=[MyCallback()])
    """
    if not all(hasattr(model, a) for a in ("classifier_name", "reset_classifier", "arch_dict")):
        raise EffnetError(f"fit needs an effnet model (from effnet.create_model), not a plain {type(model).__name__}")
    given = {} if data is None or isinstance(data, DataSplits) else {"data": os.fspath(data)}
    splits = data if isinstance(data, DataSplits) else None
    if splits is not None:
        given["data"] = splits.source
    cfg = _recipe(recipe if recipe is not None else {}, {**overrides, **given, "model": _model_name(model)})
    meta = getattr(model, "pretrained_meta", None) or {}
    return _launch(
        cfg,
        lambda: model,
        splits,
        task if task is not None else ClassificationTask(cfg.label_smoothing),
        [*_recipe_callbacks(cfg), *callbacks],
        fine_tuning=bool(meta.get("weights")),
    )


def train(config: RecipeLike, *, callbacks: Sequence[Callback] = (), **overrides: Any) -> TrainResult:
    """Train or fine-tune the model a recipe names; returns the run's results.

    ``config`` is a :class:`TrainConfig`, a dict of its fields, or a YAML file; ``overrides``
    replace single fields; ``callbacks`` as in :func:`fit`. With ``resume=True`` the run
    directory's own ``config.yaml`` supplies every setting not given, so
    ``{"out": "runs/fm", "resume": True}`` alone continues a run.
    Example::

        effnet.train({"model": "efficientnet_lite0", "weights": "imagenet",
                      "data": "fashion-mnist", "out": "runs/fm", "epochs": 3})
    """
    cfg = _recipe(config, overrides)

    def build() -> nn.Module:
        seed_everything(cfg.seed)  # the initial weights of a from-scratch model depend on it
        name, weights = split_model_argument(cfg.model, cfg.weights)
        if name is None and not (weights and Path(weights).is_file()):
            name = DEFAULT_MODEL  # a checkpoint file names its own architecture; anything else needs one
        return create_model(name, weights=weights, drop_rate=cfg.drop_rate, drop_path_rate=cfg.drop_path)

    task = ClassificationTask(cfg.label_smoothing)
    return _launch(cfg, build, None, task, [*_recipe_callbacks(cfg), *callbacks], fine_tuning=cfg.weights is not None)


def _recipe_callbacks(cfg: TrainConfig) -> list[Callback]:
    """Callbacks a recipe asks for by name (so ``effnet train`` flags can turn them on)."""
    callbacks: list[Callback] = []
    if cfg.bn_l1 > 0:
        from effnet.compress.prune import BatchNormL1

        callbacks.append(BatchNormL1(cfg.bn_l1))
    return callbacks


def _recipe(config: RecipeLike, overrides: dict[str, Any]) -> TrainConfig:
    """The validated recipe; on resume, the run directory's config.yaml fills what is not given."""
    source = "config"
    if isinstance(config, TrainConfig):
        data = config.to_dict()
    elif isinstance(config, dict):
        data = dict(config)
    else:
        source = os.fspath(config)
        data = load_yaml(config)
    data.update({k: v for k, v in overrides.items() if v is not None})
    out = data.get("out")
    if data.get("resume") and out and (Path(out) / "config.yaml").is_file():
        recorded = load_yaml(Path(out) / "config.yaml")
        data = {**recorded, **data}
    return TrainConfig.from_dict(data, source=source).validate()


def _model_name(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return str(getattr(config, "name", None) or getattr(model, "baseline_name", None) or type(model).__name__)


def _launch(
    cfg: TrainConfig,
    build: Callable[[], nn.Module],
    splits: DataSplits | None,
    task: Task,
    callbacks: Sequence[Callback],
    fine_tuning: bool,
) -> TrainResult:
    device = resolve_device(cfg.device)
    info = D.init_distributed(device.type)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    run_dir = Path(cfg.out)
    try:
        lock = RunLock(run_dir) if info.is_main else contextlib.nullcontext()
        with lock:
            trainer = Trainer(cfg, device, info, run_dir, task, list(callbacks))
            if trainer.is_main:
                trainer._check_run_dir()
            trainer._build(build(), splits, fine_tuning)
            return trainer._run()
    finally:
        D.cleanup_distributed()


class Trainer:
    """One training run, as tasks and callbacks see it.

    Attributes they may read: ``recipe`` (the :class:`TrainConfig`), ``device``, ``run_dir``,
    ``is_main`` (rank 0, the process that writes files), ``model`` (the network being trained,
    unwrapped), ``ema`` (the ``AveragedModel`` or None) and ``ema_model`` (its network),
    ``optimizer``, ``scheduler``, ``scaler``, ``classes``, ``preprocessing``, ``data``,
    ``epoch`` (1-based, the epoch being trained), ``global_step`` (optimizer steps so far) and
    ``steps_per_epoch``. To change the network itself call :meth:`replace_model`.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        device: torch.device,
        info: D.DistInfo,
        run_dir: Path,
        task: Task,
        callbacks: list[Callback],
    ) -> None:
        self.recipe, self.device, self.info, self.run_dir = cfg, device, info, run_dir
        self.task, self.callbacks = task, callbacks
        self.is_main = info.is_main
        self.state_path = run_dir / STATE_FILE
        self.epoch = 0
        self.global_step = 0

    def log(self, message: str) -> None:
        """One line on stderr, from the main process only."""
        if self.is_main:
            print(f"effnet: {message}", file=sys.stderr, flush=True)

    @property
    def ema_model(self) -> nn.Module | None:
        return self.ema.module if self.ema is not None else None

    def _callback_keys(self) -> dict[str, Callback]:
        """Callbacks by class name (``Name#2`` for a second one): how their saved state finds them."""
        keys: dict[str, Callback] = {}
        for callback in self.callbacks:
            name = type(callback).__name__
            count = sum(1 for k in keys if k.split("#")[0] == name)
            keys[f"{name}#{count + 1}" if count else name] = callback
        return keys

    def _emit(self, event: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, event)(self, *args)

    # ----------------------------------------------------------------- setup
    def _check_run_dir(self) -> None:
        cfg = self.recipe
        existing = (self.run_dir / "last.safetensors").exists() or self.state_path.exists()
        started = (self.run_dir / "config.yaml").exists()  # written when a run begins its first epoch
        if cfg.resume and not self.state_path.exists() and not started:
            raise EffnetError(f"nothing to resume in {self.run_dir} (no {STATE_FILE}); start without --resume")
        if not cfg.resume and existing:
            raise EffnetError(
                f"{self.run_dir} already holds a training run; use --resume to continue it or choose a new --out"
            )
        if cfg.resume:
            recorded_path = self.run_dir / "config.yaml"
            if recorded_path.exists():
                recorded = load_yaml(recorded_path)
                mine = cfg.to_dict()
                changed = sorted(k for k in recorded if k not in _RESUMABLE and recorded.get(k) != mine.get(k))
                if changed:
                    raise EffnetError(
                        f"--resume with settings that differ from the run's config.yaml: {', '.join(changed)}; "
                        "resume with the same recipe (only epochs, workers and device may change)"
                    )

    def _build(self, model: nn.Module, splits: DataSplits | None, fine_tuning: bool) -> None:
        from effnet.data.datasets import load_data

        cfg, info = self.recipe, self.info
        meta = getattr(model, "pretrained_meta", None) or {}
        if meta.get("preprocessing"):
            pre = Preprocessing.from_dict(meta["preprocessing"])
        else:
            pre = Preprocessing.default_for(cfg.img_size or getattr(getattr(model, "config", None), "resolution", 224))
        self.preprocessing = override_preprocessing(
            resized(pre, cfg.img_size), cfg.crop_pct, cfg.interpolation, cfg.mean, cfg.std
        )
        Preprocessing.from_dict(self.preprocessing.to_dict())  # the checks a checkpoint's metadata must pass
        if splits is None:
            splits = load_data(
                cfg.data,
                data_dir=cfg.data_dir,
                val_split=cfg.val_split,
                seed=cfg.seed,
                strict=cfg.strict,
                train_transform=train_transform(self.preprocessing, cfg.augment, tuple(cfg.crop_scale)),
                eval_transform=_eval_transform(self.preprocessing),
                subset=cfg.subset,
            )
        self.data = splits
        if self.data.train is None or len(self.data.train) == 0:
            raise EffnetError(f"{cfg.data} has no training images")
        if self.data.skipped:
            for message in self.data.skipped[:5]:
                self.log(f"warning: skipped {message}")
            self.log(f"warning: {len(self.data.skipped)} unreadable images skipped (use --strict to stop instead)")
        self.classes = list(self.data.classes)
        if model.num_classes != len(self.classes):
            torch.manual_seed(cfg.seed)
            model.reset_classifier(len(self.classes))
        self.fine_tuning = fine_tuning
        self.freeze_bn = cfg.freeze_bn if cfg.freeze_bn is not None else fine_tuning
        self.channels_last = cfg.channels_last if cfg.channels_last is not None else self.device.type == "cpu"
        self.sampler = DistributedSampler(
            self.data.train, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=cfg.seed
        )
        drop_last = len(self.data.train) // info.world_size > cfg.batch_size
        self.train_loader = _loader(
            _Indexed(self.data.train), cfg.batch_size, self.sampler, cfg.workers, drop_last, cfg.seed
        )
        self.val_loader = (
            _loader(self.data.val, cfg.batch_size, None, cfg.workers, False, cfg.seed) if self.data.val else None
        )
        self.steps_per_epoch = math.ceil(len(self.train_loader) / cfg.accum_steps)
        self.amp_dtype = _AMP[cfg.amp]
        if self.amp_dtype is torch.float16 and self.device.type == "cpu":
            self.log("note: fp16 autocast on CPU is slow on most processors; bf16 is usually the better choice")
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype is torch.float16)
        self.mixer = batch_mixer(cfg.mixup, cfg.cutmix, len(self.classes))
        self.start_epoch, self.best_top1, self.best_epoch = 0, None, None
        self.backbone_on = True
        self._install(model)

    def _install(self, model: nn.Module) -> None:
        """Make ``model`` the one trained: on the device, with its own optimizer, schedule and EMA."""
        cfg = self.recipe
        if cfg.sync_bn and self.info.enabled:
            model = D.convert_sync_batchnorm(model, self.device.type)
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        self.task.setup(self)  # before the optimizer: the task may create parameters for this model
        self.optimizer = build_optimizer(model, cfg, self.fine_tuning, self.info.world_size, self.task.parameters())
        base_lr = max(g["lr"] for g in self.optimizer.param_groups)
        self.scheduler = warmup_cosine(
            self.optimizer,
            total_steps=self.steps_per_epoch * cfg.epochs,
            warmup_steps=int(round(cfg.warmup_epochs * self.steps_per_epoch)),
            min_lr_ratio=cfg.min_lr / base_lr if base_lr > 0 else 0.0,
        )
        _fast_forward(self.scheduler, self.global_step)
        self.ema = (
            AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
            if cfg.ema
            else None
        )
        self.step_fn_model: nn.Module = model

    def replace_model(self, model: nn.Module) -> None:
        """Train ``model`` from now on, e.g. a pruned copy of :attr:`model`.

        It gets a new optimizer (momentum and Adam statistics start afresh), the learning-rate
        schedule continues at the current step, the EMA restarts from its weights, and the
        DDP/compile wrappers are rebuilt. Call it from a callback event; the training state
        records the new architecture, so ``resume`` rebuilds it.
        """
        if not hasattr(model, "arch_dict") or model.num_classes != len(self.classes):
            raise EffnetError(f"the replacement model must be an effnet model with {len(self.classes)} classes")
        self._install(model)
        self._wrap(self.backbone_on)
        self._train_mode()

    def _model_from_arch(self, arch: dict[str, Any]) -> nn.Module:
        """The network a training state records (it differs when a callback replaced the model)."""
        from effnet.models.config import EfficientNetConfig
        from effnet.models.efficientnet import EfficientNet

        if not isinstance(arch, dict) or "family" in arch:
            raise EffnetError(f"the training state in {self.run_dir} records another model; cannot resume")
        try:
            model = EfficientNet(EfficientNetConfig.from_dict(arch))
        except EffnetError as exc:
            raise EffnetError(f"the training state in {self.run_dir} records an invalid architecture: {exc}") from None
        model.pretrained_meta = dict(getattr(self.model, "pretrained_meta", None) or {})
        return model

    def _wrap(self, trainable_backbone: bool) -> None:
        """(Re)build the DDP wrapper; DDP only syncs parameters that required grad when it was built."""
        set_backbone_trainable(self.model, trainable_backbone)
        base = torch.compile(self.model) if self.recipe.compile else self.model
        if self.info.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            base = DistributedDataParallel(base, device_ids=ids)
        self.step_fn_model = base

    def _train_mode(self) -> None:
        self.step_fn_model.train()
        if self.freeze_bn or not self.backbone_on:
            freeze_batchnorm_stats(self.model)

    def _metadata(self, epoch: int, metrics: dict) -> dict:
        return {
            "arch": self.model.arch_dict(),
            "classes": self.classes,
            "preprocessing": self.preprocessing.to_dict(),
            "epoch": epoch,
            "metrics": metrics,
            "recipe": self.recipe.to_dict(),
        }

    def _eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def _state(self, epoch_done: int) -> dict:
        return {
            "epoch": epoch_done,
            "global_step": self.global_step,
            "arch": self.model.arch_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "best_top1": self.best_top1,
            "best_epoch": self.best_epoch,
            "classes": self.classes,
            "task": self.task.state_dict(),
            "callbacks": {key: c.state_dict() for key, c in self._callback_keys().items() if c.state_dict()},
        }

    def _resume(self) -> None:
        if not self.state_path.exists():
            # The run was stopped before its first epoch was committed: resuming is starting over.
            self.log(f"no epoch of the run in {self.run_dir} was completed; starting it from the beginning")
            return
        state = load_state(self.state_path)
        if state.get("classes") != self.classes:
            raise EffnetError(f"the data's classes differ from those of the run in {self.run_dir}; cannot resume")
        saved = state.get("callbacks") or {}
        mine = self._callback_keys()
        missing = sorted(set(saved) - set(mine))  # callbacks without state may come and go
        if missing:
            raise EffnetError(
                f"the run in {self.run_dir} holds the state of callback {missing[0]}; resume it with that callback"
            )
        self.start_epoch = int(state["epoch"])
        self.global_step = int(state.get("global_step", self.start_epoch * self.steps_per_epoch))
        arch = state.get("arch")
        if arch is not None and arch != self.model.arch_dict():
            self._install(self._model_from_arch(arch))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.task.load_state_dict(state.get("task") or {})
        for key, callback_state in saved.items():
            mine[key].load_state_dict(callback_state)
        self.best_top1, self.best_epoch = state.get("best_top1"), state.get("best_epoch")
        self.log(f"resuming {self.run_dir} after epoch {self.start_epoch}")

    # ------------------------------------------------------------------ loop
    def _run(self) -> TrainResult:
        cfg = self.recipe
        if cfg.resume:
            self._resume()
        history = _read_metrics(self.run_dir / "metrics.jsonl", self.start_epoch) if self.is_main else []
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            for stale in self.run_dir.glob(".*.tmp"):  # atomic_write's leftovers from a killed run (we hold the lock)
                stale.unlink(missing_ok=True)
            write_text(self.run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            # Drop lines of epochs that will be trained again (a crash after the metrics, before the state).
            write_text(self.run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
        writer = self._tensorboard()
        started = time.monotonic()
        self.backbone_on = not (cfg.freeze_backbone and (cfg.unfreeze_at is None or self.start_epoch < cfg.unfreeze_at))
        self._wrap(self.backbone_on)
        self._emit("on_fit_start")
        epoch = self.start_epoch
        # Ctrl-C and out-of-memory are handled for the whole loop: in training, validation, saving
        # and between epochs alike.
        try:
            for epoch in range(self.start_epoch, cfg.epochs):
                if cfg.freeze_backbone and cfg.unfreeze_at is not None and epoch == cfg.unfreeze_at:
                    self.log(f"epoch {epoch + 1}: unfreezing the backbone")
                    self.backbone_on = True
                    self._wrap(True)
                row = self._epoch(epoch)
                history.append(row)
                if writer is not None:
                    for key, value in row.items():
                        if key != "epoch" and isinstance(value, int | float):
                            writer.add_scalar(key, value, row["epoch"])
                    writer.flush()
        except KeyboardInterrupt:
            self._save_interrupted(epoch)
            raise
        except torch.cuda.OutOfMemoryError:  # torch.OutOfMemoryError since torch 2.5
            raise EffnetError(out_of_memory_message(cfg.batch_size, self.device)) from None
        finally:
            if writer is not None:
                writer.close()
        result = TrainResult(
            run_dir=str(self.run_dir),
            best_top1=self.best_top1,
            best_epoch=self.best_epoch,
            epochs=cfg.epochs,
            history=history,
            best_path=str(self.run_dir / "best.safetensors"),
            last_path=str(self.run_dir / "last.safetensors"),
            train_time_s=time.monotonic() - started,
            skipped_images=len(self.data.skipped),
            model=self.model,
        )
        if self.is_main:
            self._write_summary(result)
        self._emit("on_fit_end", result)
        return result

    def _tensorboard(self) -> Any:
        if not (self.is_main and self.recipe.tensorboard):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.log("warning: tensorboard is not installed; no event files (pip install tensorboard)")
            return None
        return SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=(self.start_epoch + 1) or None)

    def _save_interrupted(self, epoch: int) -> None:
        """Ctrl-C: keep the weights so far beside the last complete epoch's checkpoint."""
        if not self.is_main:
            return
        meta = self._metadata(epoch + 1, {"interrupted": True})
        self._emit("on_save", epoch + 1, meta)
        path = write_checkpoint(self.run_dir / "interrupted.safetensors", self._eval_model().state_dict(), meta)
        self.log(
            f"interrupted in epoch {epoch + 1}: weights so far saved to {path}; the last complete epoch is in "
            f"{self.run_dir / 'last.safetensors'} (continue with --resume)"
        )

    def _epoch(self, epoch: int) -> dict:
        cfg, info = self.recipe, self.info
        # All randomness of an epoch comes from (seed, epoch): resume replays it exactly.
        seed_everything(_epoch_seed(cfg.seed, epoch, info.rank))
        self.sampler.set_epoch(epoch)
        self.train_loader.generator.manual_seed(_epoch_seed(cfg.seed, epoch, info.rank))
        self.epoch = epoch + 1
        self._emit("on_epoch_start", self.epoch)
        self._train_mode()
        started = time.monotonic()
        seen, loss_sum, correct = 0, 0.0, 0
        bar = self._progress(epoch)
        micro = 0
        try:
            for images, targets, indices in self.train_loader:
                images = images.to(self.device, non_blocking=True)
                targets = targets.to(self.device, non_blocking=True)
                if self.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                batch = Batch(images, targets, indices=indices)
                if self.mixer is not None:
                    batch.images, batch.soft_targets = self.mixer(images, targets)
                micro += 1
                last_micro = micro % cfg.accum_steps == 0 or micro == len(self.train_loader)
                model = self.step_fn_model
                sync = contextlib.nullcontext()
                if info.enabled and not last_micro:
                    sync = model.no_sync()
                with sync:
                    with torch.autocast(
                        self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
                    ):
                        loss, logits = self.task.loss(self, model, batch)
                    bad = not bool(torch.isfinite(loss))
                    if D.any_rank(bad, info):
                        raise NonFiniteLoss(
                            f"the loss became {loss.item()} in epoch {epoch + 1} after {seen} images; stopped. The "
                            f"last good checkpoint is in {self.run_dir}. Try a lower --lr, --grad-clip 1.0 or "
                            "--amp bf16/off"
                        )
                    self.scaler.scale(loss / cfg.accum_steps).backward()
                if last_micro:
                    self._step()
                n = targets.shape[0]
                seen += n
                loss_sum += loss.item() * n
                correct += (logits.detach().argmax(dim=1) == targets).sum().item()
                if bar is not None:
                    elapsed = max(time.monotonic() - started, 1e-9)
                    bar.set_postfix(
                        loss=f"{loss_sum / seen:.3f}",
                        acc=f"{100 * correct / seen:.1f}%",
                        img_s=f"{seen * info.world_size / elapsed:.0f}",
                        refresh=False,
                    )
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        elapsed = time.monotonic() - started
        train_loss, train_top1 = _reduce_train_stats(loss_sum, correct, seen, info)
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "train_top1": train_top1,
            "val_loss": None,
            "val_top1": None,
            "val_top5": None,
            "lr": max(g["lr"] for g in self.optimizer.param_groups),
            "images_per_s": seen * info.world_size / max(elapsed, 1e-9),
            "epoch_time_s": elapsed,
        }
        last_epoch = epoch == cfg.epochs - 1
        evaluated: EvalResult | None = None
        if self.is_main and self.val_loader is not None and ((epoch + 1) % cfg.eval_every == 0 or last_epoch):
            evaluated = evaluate(
                self._eval_model(), self.val_loader, self.classes, self.device, self.amp_dtype, self.channels_last
            )
            row.update(val_loss=evaluated.loss, val_top1=evaluated.top1, val_top5=evaluated.top5)
        self._emit("on_epoch_end", epoch + 1, row)
        if self.is_main:
            self._save(epoch, row, evaluated)
            self.log(_epoch_line(row, cfg.epochs))
        if info.enabled:
            torch.distributed.barrier()
        return row

    def _step(self) -> None:
        cfg = self.recipe
        if cfg.grad_clip or self.callbacks:
            self.scaler.unscale_(self.optimizer)  # callbacks and clipping see true gradients
        self._emit("on_after_backward")
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_([*self.model.parameters(), *self.task.parameters()], cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():
            # GradScaler skips steps whose gradients overflowed; the schedule still advances.
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
            self.scheduler.step()
        self.global_step += 1
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self._emit("on_after_step")

    def _save(self, epoch: int, row: dict, evaluated: EvalResult | None) -> None:
        weights = self._eval_model().state_dict()
        meta = self._metadata(epoch + 1, row)
        self._emit("on_save", epoch + 1, meta)
        write_checkpoint(self.run_dir / "last.safetensors", weights, meta)
        score = row["val_top1"] if row["val_top1"] is not None else None
        improved = score is not None and (self.best_top1 is None or score > self.best_top1)
        if improved or (self.val_loader is None):
            self.best_top1, self.best_epoch = score, epoch + 1
            write_checkpoint(self.run_dir / "best.safetensors", weights, meta)
        if evaluated is not None:
            write_json(self.run_dir / "eval_last.json", evaluated.to_dict())
        _append_line(self.run_dir / "metrics.jsonl", EpochMetrics.from_row(row).to_dict())
        save_state(self.state_path, self._state(epoch + 1))  # the commit point of this epoch

    def _write_summary(self, result: TrainResult) -> None:
        from effnet.models.summary import count_flops, count_params

        model = self._eval_model()
        try:
            flops = count_flops(model, self.preprocessing.input_size)
        except Exception:  # noqa: BLE001 - FLOPs are informative only; never fail a finished run
            flops = None
        best = self.run_dir / "best.safetensors"
        summary = RunSummary(
            model=_model_name(self.model),
            params=count_params(model),
            flops=flops,
            size_mb=best.stat().st_size / 2**20 if best.exists() else None,  # MiB, as effnet bench
            best_val_top1=result.best_top1,
            best_epoch=result.best_epoch,
            epochs=self.recipe.epochs,
            classes=self.classes,
            img_size=self.preprocessing.input_size,
            train_time_s=result.train_time_s,
            skipped_images=result.skipped_images,
            data=self.data.source,
        )
        write_json(self.run_dir / "summary.json", summary.to_dict())

    def _progress(self, epoch: int) -> Any:
        if not (self.is_main and self.recipe.progress):
            return None
        from tqdm import tqdm

        return tqdm(
            total=len(self.train_loader),
            desc=f"epoch {epoch + 1}/{self.recipe.epochs}",
            unit="batch",
            leave=False,
            file=sys.stderr,
            dynamic_ncols=True,
        )


def _fast_forward(scheduler: torch.optim.lr_scheduler.LambdaLR, steps: int) -> None:
    """Move a fresh LambdaLR to ``steps`` (a replaced model continues the schedule where it was)."""
    if steps <= 0:
        return
    scheduler.last_epoch = steps
    rates = [base * factor(steps) for base, factor in zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=True)]
    for group, lr in zip(scheduler.optimizer.param_groups, rates, strict=True):
        group["lr"] = lr
    scheduler._last_lr = rates


def _eval_transform(pre: Preprocessing) -> Any:
    from effnet.data.images import eval_transform

    return eval_transform(pre)


def _reduce_train_stats(loss_sum: float, correct: int, seen: int, info: D.DistInfo) -> tuple[float, float]:
    if info.enabled:
        t = torch.tensor([loss_sum, float(correct), float(seen)], dtype=torch.float64)
        torch.distributed.all_reduce(t)
        loss_sum, correct, seen = t[0].item(), int(t[1].item()), int(t[2].item())
    return loss_sum / max(seen, 1), 100.0 * correct / max(seen, 1)


def _epoch_line(row: dict, epochs: int) -> str:
    text = f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.4f}, acc {row['train_top1']:.2f}%"
    if row["val_top1"] is not None:
        text += f"; val loss {row['val_loss']:.4f}, top-1 {row['val_top1']:.2f}%, top-5 {row['val_top5']:.2f}%"
    return text + f"; {row['images_per_s']:.0f} img/s, {row['epoch_time_s']:.0f}s"


__all__ = ["NonFiniteLoss", "TrainResult", "Trainer", "fit", "train"]
