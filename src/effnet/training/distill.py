"""Knowledge distillation: a student learns from the labels and from a trained teacher's outputs.

The loss of a batch (Hinton, Vinyals & Dean, 2015, "Distilling the Knowledge in a Neural
Network", https://arxiv.org/abs/1503.02531) is::

    (1 - alpha) * CE(student, labels) + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))

The T^2 factor keeps the soft term's gradients on the scale of the hard term's as T changes.
With mixup/cutmix the labels are the mixed soft targets and the teacher sees the same mixed
images. Optionally, chosen stages of the student are pulled toward the teacher's feature maps
(FitNets hints, Romero et al., 2015, https://arxiv.org/abs/1412.6550): a learned 1x1
convolution maps the student's channels to the teacher's when they differ, the map is resized
to the teacher's when the sizes differ, and the mean squared error is added to the loss.

:class:`DistillationTask` is a :class:`~effnet.training.tasks.Task`, so distillation runs on the
training engine (AMP, DDP, EMA, checkpoints, exact resume); :func:`distill` is ``effnet distill``.

With ``cache_teacher`` the teacher's logits are computed once per training image and kept in the
run folder (``teacher_logits.safetensors``, row ``i`` for the image at index ``i`` of the training
set), so the teacher runs once instead of every epoch. Cached logits are only right if the
student sees the very image the teacher saw, so the cache requires ``augment="none"`` (each
image's evaluation transform) and no mixup/cutmix; other settings are refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from effnet.errors import EffnetError
from effnet.training.tasks import Batch, Task

if TYPE_CHECKING:
    from effnet.training.callbacks import Callback
    from effnet.training.engine import RecipeLike, Trainer, TrainResult

__all__ = ["TEACHER_CACHE", "DistillationTask", "distill", "kd_loss", "parse_feature_pair"]

TEACHER_CACHE = "teacher_logits.safetensors"
_CACHE_SCHEMA = "effnet.teacher_logits"
# Distillation settings of a run, recorded in its config.yaml under extra.distill (for --resume).
_DEFAULTS: dict[str, Any] = {
    "teacher": None,
    "student": None,
    "student_weights": None,
    "temperature": 4.0,
    "alpha": 0.5,
    "features": [],
    "feature_weight": 1.0,
    "cache_teacher": False,
}


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch (Hinton et al., 2015).

    >>> s, t = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]])
    >>> float(kd_loss(s, t, 2.0))
    0.0
    """
    t = float(temperature)
    log_student = F.log_softmax(student_logits.float() / t, dim=1)
    log_teacher = F.log_softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True) * t * t


def parse_feature_pair(text: str | Sequence[str]) -> tuple[str, str]:
    """``"stages.3:stages.5"`` (or a pair) -> ``("stages.3", "stages.5")``: a student stage and a teacher stage.

    >>> parse_feature_pair("stages.3:layer3")
    ('stages.3', 'layer3')
    """
    if isinstance(text, str):
        student, colon, teacher = text.partition(":")
        parts = [student, teacher] if colon else [text]
    else:
        parts = list(text)
    if len(parts) != 2 or not all(isinstance(p, str) and p.strip() for p in parts):
        raise EffnetError(f"feature pair {text!r}: expected STUDENT_STAGE:TEACHER_STAGE, e.g. stages.3:stages.3")
    return parts[0].strip(), parts[1].strip()


def _stage_names(model: nn.Module) -> list[str]:
    structure = getattr(model, "structure", None)
    return [stage.name for stage in structure().stages] if callable(structure) else []


def _check_stage(model: nn.Module, name: str, role: str) -> int:
    """The stage's output channels; an unknown name is one line listing the stages there are."""
    structure = getattr(model, "structure", None)
    stages = {stage.name: stage.out_channels for stage in structure().stages} if callable(structure) else {}
    if name not in stages:
        known = ", ".join(stages) or "none published"
        raise EffnetError(f"unknown {role} stage {name!r} in --feature; the {role}'s stages are {known}")
    return int(stages[name])


def check_settings(temperature: float, alpha: float, feature_weight: float = 1.0) -> None:
    """One line for a temperature, alpha or feature weight out of range."""
    if not (isinstance(temperature, int | float) and math.isfinite(temperature) and temperature > 0):
        raise EffnetError(f"the temperature must be a positive number, got {temperature}")
    if not (isinstance(alpha, int | float) and 0.0 <= alpha <= 1.0):
        raise EffnetError(f"alpha must be in [0, 1] (the weight of the teacher's term), got {alpha}")
    if not (isinstance(feature_weight, int | float) and math.isfinite(feature_weight) and feature_weight >= 0):
        raise EffnetError(f"the feature weight must not be negative, got {feature_weight}")


class DistillationTask(Task):
    """Cross-entropy plus the teacher's softened outputs, optionally plus FitNets feature hints.

    Args:
        teacher: a trained effnet model (an EfficientNet, a baseline, a pruned network). It runs
            in eval mode under ``no_grad`` on the training device, under the recipe's autocast,
            and its weights are never changed.
        temperature: softens both distributions (Hinton et al. use 1-20; 4 is common).
        alpha: weight of the teacher's term; 0 is plain cross-entropy, 1 ignores the labels.
        features: ``(student_stage, teacher_stage)`` pairs, e.g. ``[("stages.3", "stages.3")]``
            (names as ``model.structure().stages`` gives them), matched by mean squared error.
        feature_weight: weight of the feature term.
        label_smoothing: of the cross-entropy term.
        cache_teacher: compute the teacher's logits once per training image, in the run folder.

    Its adapters (one 1x1 convolution per feature pair whose channels differ) are trained with
    the student and saved in the training state, so ``resume`` continues them.

    >>> import effnet
    >>> teacher = effnet.create_model("efficientnet_b0", num_classes=3)
    >>> task = DistillationTask(teacher, temperature=4.0, alpha=0.7, features=[("stages.3", "stages.3")])
    """

    def __init__(
        self,
        teacher: nn.Module,
        temperature: float = 4.0,
        alpha: float = 0.5,
        features: Sequence[tuple[str, str] | str] | None = None,
        feature_weight: float = 1.0,
        label_smoothing: float = 0.0,
        cache_teacher: bool = False,
    ) -> None:
        check_settings(temperature, alpha, feature_weight)
        if not isinstance(teacher, nn.Module):
            raise EffnetError(f"the teacher must be a PyTorch model, not {type(teacher).__name__}")
        self.teacher = teacher
        self.temperature, self.alpha, self.feature_weight = float(temperature), float(alpha), float(feature_weight)
        self.features = [parse_feature_pair(pair) for pair in features or ()]
        self.cache_teacher = bool(cache_teacher)
        if self.cache_teacher and self.features:
            raise EffnetError(
                "feature distillation needs the teacher's feature maps at every step; drop --cache-teacher or --feature"
            )
        self._teacher_channels = [_check_stage(teacher, t, "teacher") for _, t in self.features]
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.adapters = nn.ModuleDict()  # str(pair index) -> 1x1 conv, for pairs whose channels differ
        self._captured: dict[str, torch.Tensor] = {}
        self._capturing = False
        self._student_hooks: list[Any] = []
        self._teacher_hooks: list[Any] = []
        self._synced: set[int] = set()  # adapter parameters whose gradients are averaged across processes
        self._input_map: tuple[torch.Tensor, torch.Tensor] | None = None
        self._logits: torch.Tensor | None = None  # the cache, row i for training image i
        self._classes_checked = False
        self.teacher_batches = 0  # teacher forward passes so far (cache included)

    # ---------------------------------------------------------------- setup
    def setup(self, trainer: Trainer) -> None:
        if not self._classes_checked:
            self._check_classes(trainer.classes)
            self._classes_checked = True
        teacher = self.teacher
        teacher.eval().requires_grad_(False)
        teacher.to(trainer.device)
        if trainer.channels_last:
            teacher.to(memory_format=torch.channels_last)
        self._input_map = _input_map(trainer.preprocessing, getattr(teacher, "pretrained_meta", None), trainer.device)
        if self.features:
            self._setup_features(trainer)
        if self.cache_teacher and self._logits is None:
            recipe = trainer.recipe
            if recipe.augment != "none" or recipe.mixup > 0 or recipe.cutmix > 0:
                raise EffnetError(
                    "the teacher-logit cache needs the same image every epoch: use augment none (each image's "
                    "evaluation transform) without mixup or cutmix, or drop --cache-teacher"
                )
            self._logits = self._load_or_compute_cache(trainer)

    def parameters(self) -> list[nn.Parameter]:
        return list(self.adapters.parameters())

    def _check_classes(self, classes: list[str]) -> None:
        count = getattr(self.teacher, "num_classes", None)
        recorded = list((getattr(self.teacher, "pretrained_meta", None) or {}).get("classes") or [])
        # create_model numbers the classes when it does not know their names: then only the count can be checked.
        named = bool(recorded) and recorded != [str(i) for i in range(len(recorded))]
        if (named and recorded != list(classes)) or (count is not None and count != len(classes)):
            mine = recorded if named else [str(i) for i in range(count or 0)]
            differ = sorted(set(mine) ^ set(classes))[:3]
            raise EffnetError(
                f"the teacher's classes differ from the data's ({len(mine)} vs {len(classes)}, e.g. {differ}); "
                "distill on the data the teacher was trained on"
            )

    def _setup_features(self, trainer: Trainer) -> None:
        student = trainer.model
        for hook in self._student_hooks:
            hook.remove()
        self._student_hooks = []
        if not self._teacher_hooks:
            for i, (_, t) in enumerate(self.features):
                module = self.teacher.get_submodule(t)
                self._teacher_hooks.append(module.register_forward_hook(self._capture(f"t{i}")))
        seed = trainer.recipe.seed
        for i, (s, _) in enumerate(self.features):
            channels = _check_stage(student, s, "student")
            self._student_hooks.append(student.get_submodule(s).register_forward_hook(self._capture(f"s{i}")))
            wanted = self._teacher_channels[i]
            key = str(i)
            current = self.adapters[key] if key in self.adapters else None
            if channels == wanted:
                if current is not None:
                    del self.adapters[key]
                continue
            if current is None or (current.in_channels, current.out_channels) != (channels, wanted):
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed + i)  # the same adapters for the same seed
                    self.adapters[key] = nn.Conv2d(channels, wanted, kernel_size=1, bias=False)
        self.adapters.to(trainer.device)
        if trainer.info.enabled:  # the adapters are outside DDP: average their gradients ourselves
            world = trainer.info.world_size
            for p in self.adapters.parameters():
                if id(p) not in self._synced:
                    p.register_hook(lambda grad, world=world: _all_reduce_mean(grad, world))
                    self._synced.add(id(p))

    def _capture(self, key: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            if self._capturing:
                self._captured[key] = output

        return hook

    def close(self) -> None:
        """Remove the feature hooks this task put on the teacher and the student."""
        for hook in [*self._teacher_hooks, *self._student_hooks]:
            hook.remove()
        self._teacher_hooks, self._student_hooks = [], []

    # ----------------------------------------------------------------- loss
    def loss(self, trainer: Trainer, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        self._captured.clear()
        self._capturing = bool(self.features)
        try:
            logits = model(batch.images)
            target = batch.soft_targets if batch.soft_targets is not None else batch.targets
            hard = self.criterion(logits.float(), target)
            need_teacher = self.alpha > 0 or self.features
            teacher_logits = self._teacher_logits(batch) if need_teacher else None
        finally:
            self._capturing = False
        loss = (1.0 - self.alpha) * hard
        if teacher_logits is not None and self.alpha > 0:
            loss = loss + self.alpha * kd_loss(logits, teacher_logits, self.temperature)
        if self.features and self.feature_weight > 0:
            loss = loss + self.feature_weight * self._feature_loss()
        self._captured.clear()
        return loss, logits

    def _teacher_logits(self, batch: Batch) -> torch.Tensor:
        if self._logits is not None:
            if batch.indices is None:
                raise EffnetError("the teacher-logit cache needs each image's dataset index (train through effnet.fit)")
            return self._logits[batch.indices.cpu()].to(batch.images.device, non_blocking=True)
        with torch.no_grad():
            self.teacher_batches += 1
            return self.teacher(self._teacher_input(batch.images))

    def _teacher_input(self, images: torch.Tensor) -> torch.Tensor:
        """The student's normalised batch, renormalised for the teacher when their mean/std differ."""
        if self._input_map is None:
            return images
        scale, shift = self._input_map
        return images * scale + shift

    def _feature_loss(self) -> torch.Tensor:
        terms = []
        for i in range(len(self.features)):
            student, teacher = self._captured[f"s{i}"], self._captured[f"t{i}"].detach()
            if str(i) in self.adapters:
                student = self.adapters[str(i)](student)
            if student.shape[-2:] != teacher.shape[-2:]:
                size = teacher.shape[-2:]
                if student.shape[-2] >= size[0] and student.shape[-1] >= size[1]:
                    student = F.adaptive_avg_pool2d(student, size)
                else:
                    student = F.interpolate(student, size=size, mode="bilinear", align_corners=False)
            terms.append(F.mse_loss(student.float(), teacher.float()))
        return torch.stack(terms).mean()

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {"adapters": dict(self.adapters.state_dict())} if len(self.adapters) else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        adapters = state.get("adapters")
        if adapters:
            try:
                self.adapters.load_state_dict(adapters)
            except RuntimeError:
                raise EffnetError(
                    "the run's feature adapters do not fit these feature pairs; resume with the same --feature"
                ) from None

    # ---------------------------------------------------------------- cache
    def _load_or_compute_cache(self, trainer: Trainer) -> torch.Tensor:
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import save_file

        from effnet.weights.io import atomic_write

        path = trainer.run_dir / TEACHER_CACHE
        identity = {
            "schema": _CACHE_SCHEMA,
            "teacher": _fingerprint(self.teacher),
            "images": len(trainer.data.train),
            "classes": list(trainer.classes),
            "preprocessing": trainer.preprocessing.to_dict(),
            "data": trainer.data.source,
        }
        identity = json.loads(json.dumps(identity))  # tuples as lists, as they come back from the file
        if trainer.is_main and not _cache_matches(path, identity):
            trainer.log(f"computing the teacher's logits for {identity['images']} images once ({path.name})")
            logits = self._compute_logits(trainer)
            meta = {"effnet_cache": json.dumps(identity)}
            atomic_write(path, lambda tmp: save_file({"logits": logits}, tmp, metadata=meta))
        if trainer.info.enabled:
            torch.distributed.barrier()  # the main process wrote it
        try:
            with safe_open(str(path), framework="pt", device="cpu") as fh:
                return fh.get_tensor("logits").float()
        except (SafetensorError, OSError) as exc:
            raise EffnetError(f"cannot read the teacher-logit cache {path}: {exc}") from None

    def _compute_logits(self, trainer: Trainer) -> torch.Tensor:
        from torch.utils.data import DataLoader

        recipe = trainer.recipe
        loader = DataLoader(trainer.data.train, batch_size=recipe.batch_size, shuffle=False, num_workers=recipe.workers)
        rows = []
        amp = trainer.amp_dtype
        with torch.no_grad(), torch.autocast(trainer.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            for images, _ in loader:
                images = images.to(trainer.device)
                if trainer.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                self.teacher_batches += 1
                rows.append(self.teacher(self._teacher_input(images)).float().cpu())
        return torch.cat(rows).contiguous()


def _cache_matches(path: Path, identity: dict[str, Any]) -> bool:
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            recorded = json.loads((fh.metadata() or {}).get("effnet_cache", "null"))
            rows = fh.get_slice("logits").get_shape()[0]
    except (SafetensorError, OSError, ValueError):
        return False
    return recorded == identity and rows == identity["images"]


def _fingerprint(model: nn.Module) -> str:
    """SHA-256 of a model's tensors (names, shapes, bytes): which teacher a cache was made with."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _input_map(
    student_pre: Any, teacher_meta: dict[str, Any] | None, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(scale, shift)`` taking the student's normalisation to the teacher's, or None when they agree."""
    recorded = (teacher_meta or {}).get("preprocessing")
    if not recorded:
        return None
    s_mean, s_std = torch.tensor(student_pre.mean), torch.tensor(student_pre.std)
    t_mean, t_std = torch.tensor(recorded["mean"], dtype=torch.float32), torch.tensor(recorded["std"])
    if torch.allclose(s_mean, t_mean, atol=1e-6) and torch.allclose(s_std, t_std.float(), atol=1e-6):
        return None
    scale = (s_std / t_std).float().view(1, -1, 1, 1).to(device)
    shift = ((s_mean - t_mean) / t_std).float().view(1, -1, 1, 1).to(device)
    return scale, shift


def _all_reduce_mean(grad: torch.Tensor, world: int) -> torch.Tensor:
    grad = grad.clone()
    torch.distributed.all_reduce(grad)
    return grad / world


# -------------------------------------------------------------------- the job
def distill(
    teacher: str | os.PathLike[str] | None = None,
    student: str | os.PathLike[str] | None = None,
    data: str | os.PathLike[str] | None = None,
    recipe: RecipeLike | None = None,
    *,
    student_weights: str | None = None,
    temperature: float | None = None,
    alpha: float | None = None,
    features: Sequence[tuple[str, str] | str] | None = None,
    feature_weight: float | None = None,
    cache_teacher: bool | None = None,
    callbacks: Sequence[Callback] = (),
    **overrides: Any,
) -> TrainResult:
    """Distil a teacher checkpoint into a student; ``effnet distill``. Returns the run's results.

    Args:
        teacher: a checkpoint (any effnet checkpoint: EfficientNet, baseline, pruned) or ``NAME:WEIGHTS``.
        student: a model name (a new network, or with ``student_weights`` such as ``"imagenet"``)
            or a checkpoint path (e.g. a pruned copy of the teacher).
        data: as for :func:`effnet.train`; its classes must be the teacher's.
        recipe: a training recipe (dict, :class:`~effnet.training.config.TrainConfig` or YAML);
            ``overrides`` replace single fields (``out``, ``epochs``, ``lr``, ``amp``, ``resume``, ...).
        temperature, alpha, features, feature_weight, cache_teacher: see :class:`DistillationTask`.

    The input size defaults to the teacher's, and a new student takes the teacher's
    preprocessing. The settings are recorded in the run's ``config.yaml`` (``extra.distill``),
    so ``distill(recipe={"out": run, "resume": True})`` continues a run.

    Example::

        effnet.training.distill.distill("runs/b0/best.safetensors", "efficientnet_lite0", "photos/",
                                        {"out": "runs/kd", "epochs": 10}, temperature=4.0, alpha=0.7)
    """
    from effnet.configs import load_yaml
    from effnet.training.config import TrainConfig

    given = {
        "teacher": os.fspath(teacher) if teacher is not None else None,
        "student": os.fspath(student) if student is not None else None,
        "student_weights": student_weights,
        "temperature": temperature,
        "alpha": alpha,
        "features": [list(parse_feature_pair(p)) for p in features] if features is not None else None,
        "feature_weight": feature_weight,
        "cache_teacher": cache_teacher,
    }
    given = {k: v for k, v in given.items() if v is not None}
    if isinstance(recipe, TrainConfig):
        settings = recipe.to_dict()
    elif isinstance(recipe, str | os.PathLike):
        settings = load_yaml(recipe)
    else:
        settings = dict(recipe or {})
    settings.update({k: v for k, v in overrides.items() if v is not None})
    if data is not None:
        settings["data"] = os.fspath(data)
    out = settings.get("out")
    recorded_path = Path(out) / "config.yaml" if out else None
    if settings.get("resume") and recorded_path is not None and not recorded_path.is_file() and not given:
        raise EffnetError(f"nothing to resume in {out} (no config.yaml); start without --resume")
    if settings.get("resume") and recorded_path is not None and recorded_path.is_file():
        recorded = load_yaml(recorded_path)
        before = (recorded.get("extra") or {}).get("distill")
        if not isinstance(before, dict):
            raise EffnetError(f"{out} holds a training run, not a distillation run; resume it with effnet train")
        changed = sorted(k for k, v in given.items() if before.get(k) != v)
        if changed:
            raise EffnetError(
                f"--resume with distillation settings that differ from the run's: {', '.join(changed)}; "
                "resume with the same ones"
            )
        given = {**before, **given}
        settings = {**recorded, **settings}
    job = {**_DEFAULTS, **given}
    check_settings(job["temperature"], job["alpha"], job["feature_weight"])
    if not job["teacher"]:
        raise EffnetError("--teacher is required: the checkpoint of a trained model")
    if not job["student"]:
        raise EffnetError("--student is required: a model name or a checkpoint path")
    pairs = [parse_feature_pair(p) for p in job["features"]]
    job["features"] = [list(p) for p in pairs]
    if job["cache_teacher"]:
        settings.setdefault("augment", "none")
        if settings["augment"] != "none" or settings.get("mixup") or settings.get("cutmix"):
            raise EffnetError(
                "--cache-teacher trains on each image's evaluation transform (the teacher's logits are computed "
                "once per image): drop --augment, --mixup and --cutmix, or drop --cache-teacher"
            )
    settings.setdefault("label_smoothing", 0.0)  # Hinton et al.'s hard term is plain cross-entropy

    teacher_model = _load_teacher(job["teacher"])
    settings.setdefault("img_size", _input_size(teacher_model))
    seed = int(settings.get("seed") or 0)
    student_model = _build_student(job["student"], job["student_weights"], teacher_model, settings, seed)
    for s, t in pairs:
        _check_stage(student_model, s, "student")
        _check_stage(teacher_model, t, "teacher")
    settings["weights"] = job["student_weights"] or (job["student"] if Path(job["student"]).is_file() else None)
    settings["extra"] = {**(settings.get("extra") or {}), "distill": job}
    task = DistillationTask(
        teacher_model,
        temperature=job["temperature"],
        alpha=job["alpha"],
        features=pairs,
        feature_weight=job["feature_weight"],
        label_smoothing=float(settings["label_smoothing"]),
        cache_teacher=job["cache_teacher"],
    )
    from effnet.training.engine import fit

    try:
        return fit(student_model, recipe=settings, task=task, callbacks=callbacks)
    finally:
        task.close()


def _load_teacher(teacher: str) -> nn.Module:
    from effnet.factory import load_model

    if Path(teacher).suffix.lower() == ".onnx":
        raise EffnetError(
            f"the teacher {teacher} is an ONNX file; distillation runs the teacher in PyTorch: give the checkpoint "
            "it was exported from"
        )
    model = load_model(teacher)
    if not hasattr(model, "classifier_name"):
        raise EffnetError(f"the teacher {teacher} is not a classifier effnet can run")
    return model


def _input_size(model: nn.Module) -> int:
    from effnet.weights.specs import Preprocessing

    meta = getattr(model, "pretrained_meta", None) or {}
    return Preprocessing.from_dict(meta["preprocessing"]).input_size


def _build_student(
    student: str, weights: str | None, teacher: nn.Module, settings: dict[str, Any], seed: int
) -> nn.Module:
    """A new network of a name (with the teacher's classes and preprocessing), or a checkpoint's."""
    from effnet.factory import create_model, split_model_argument
    from effnet.training.engine import seed_everything

    name, resolved = split_model_argument(student, weights)
    classes = list(teacher.pretrained_meta.get("classes") or [])
    seed_everything(seed)  # the initial weights of a new student depend on it
    common = {"drop_rate": settings.get("drop_rate"), "drop_path_rate": settings.get("drop_path")}
    if name is None:  # a checkpoint: its classes must be the teacher's (and so the data's)
        model = create_model(None, weights=resolved, **common)
        mine = list(model.pretrained_meta.get("classes") or [])
        if mine != classes:
            differ = sorted(set(mine) ^ set(classes))[:3]
            raise EffnetError(
                f"the student's classes differ from the teacher's ({len(mine)} vs {len(classes)}, e.g. {differ}); "
                "give a student trained on the same classes, or a model name"
            )
        return model
    model = create_model(name, weights=resolved, num_classes=len(classes), **common)
    model.pretrained_meta["classes"] = classes
    if resolved is None:  # nothing learned yet: see the images as the teacher does
        model.pretrained_meta["preprocessing"] = dict(teacher.pretrained_meta["preprocessing"])
    return model
