import json

import pytest
import torch
from safetensors.torch import load_file
from tests.training.conftest import tiny_recipe

import effnet
from effnet.errors import EffnetError
from effnet.schemas import EpochMetrics, EvalResult, RunSummary
from effnet.training import engine
from effnet.training.callbacks import Callback


def weights_of(run_dir, name="last.safetensors"):
    return load_file(str(run_dir / name))


class InterruptAtStep(Callback):
    """Ctrl-C just before the optimizer's ``step``-th step (default: epoch 2's first)."""

    def __init__(self, step: int = 3) -> None:
        self.step = step

    def on_after_backward(self, trainer):
        if trainer.global_step + 1 == self.step:
            raise KeyboardInterrupt


def train_interrupted_at_step(recipe: dict, step: int = 3) -> None:
    with pytest.raises(KeyboardInterrupt):
        effnet.train(recipe, callbacks=[InterruptAtStep(step)])


def test_fine_tune_writes_a_complete_run(image_folder, tmp_path):
    run = tmp_path / "run"
    result = effnet.train(tiny_recipe(image_folder, run, weights="imagenet", tensorboard=True, lr=3e-3))
    assert {p.name for p in run.iterdir()} >= {
        "best.safetensors",
        "last.safetensors",
        "train_state.safetensors",
        "metrics.jsonl",
        "config.yaml",
        "summary.json",
        "tensorboard",
    }
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[-1]["val_top1"] is not None
    assert rows[1]["train_loss"] < rows[0]["train_loss"]
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "tensorboard").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["classes"] == ["class_0", "class_1", "class_2"] and summary["img_size"] == 32
    # Every JSON file of the run carries its schema and reads back through it (as effnet report does).
    assert RunSummary.from_dict(summary).data.startswith(f"folder:{image_folder}")
    assert [EpochMetrics.from_dict(r).epoch for r in rows] == [1, 2]
    evaluated = json.loads((run / "eval_last.json").read_text())
    assert [d["schema"] for d in (summary, rows[0], evaluated)] == ["effnet.summary", "effnet.metrics", "effnet.eval"]
    assert EvalResult.from_dict(evaluated).n == sum(c.n for c in EvalResult.from_dict(evaluated).per_class)
    assert result.best_top1 == max(r["val_top1"] for r in rows)
    # The checkpoint rebuilds itself and carries classes and preprocessing to predict/eval.
    model = effnet.create_model(weights=run / "best.safetensors")
    assert model.pretrained_meta["classes"] == ["class_0", "class_1", "class_2"]
    assert model.pretrained_meta["preprocessing"]["input_size"] == 32
    assert model.pretrained_meta["preprocessing"]["mean"] == [0.5, 0.5, 0.5]  # Lite0's, from its weight spec


def test_interrupted_run_resumes_to_the_same_weights(image_folder, tmp_path, monkeypatch):
    recipe = dict(augment="trivialaugment", drop_path=0.2, lr=3e-3, epochs=3)
    effnet.train(tiny_recipe(image_folder, tmp_path / "straight", **recipe))

    train_interrupted_at_step(tiny_recipe(image_folder, tmp_path / "resumed", **recipe))
    assert (tmp_path / "resumed" / "interrupted.safetensors").exists()
    effnet.train(tiny_recipe(image_folder, tmp_path / "resumed", resume=True, **recipe))

    straight, resumed = weights_of(tmp_path / "straight"), weights_of(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_existing_run_is_not_overwritten_and_resume_needs_a_run(image_folder, tmp_path):
    run = tmp_path / "run"
    effnet.train(tiny_recipe(image_folder, run, epochs=1))
    before = (run / "last.safetensors").read_bytes()
    with pytest.raises(EffnetError, match="already holds a training run"):
        effnet.train(tiny_recipe(image_folder, run, epochs=1))
    assert (run / "last.safetensors").read_bytes() == before
    with pytest.raises(EffnetError, match="nothing to resume"):
        effnet.train(tiny_recipe(image_folder, tmp_path / "fresh", resume=True))
    with pytest.raises(EffnetError, match="differ from the run's config.yaml: lr"):
        effnet.train(tiny_recipe(image_folder, run, epochs=2, resume=True, lr=0.5))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(image_folder, tmp_path, monkeypatch):
    run = tmp_path / "run"
    original = torch.nn.CrossEntropyLoss.forward
    calls = {"n": 0}

    def poisoned(self, logits, target):
        calls["n"] += 1
        loss = original(self, logits, target)
        return loss * float("nan") if calls["n"] > 2 else loss  # the first epoch has two steps

    monkeypatch.setattr(torch.nn.CrossEntropyLoss, "forward", poisoned)
    with pytest.raises(engine.NonFiniteLoss, match="the loss became nan in epoch 2"):
        effnet.train(tiny_recipe(image_folder, run, epochs=3))
    kept = effnet.create_model(weights=run / "last.safetensors")
    assert all(torch.isfinite(p).all() for p in kept.parameters())
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == 1


def test_frozen_backbone_trains_only_the_head_then_unfreezes(image_folder, tmp_path):
    pretrained = effnet.create_model("efficientnet_lite0", weights="imagenet").state_dict()
    run = tmp_path / "frozen"
    effnet.train(tiny_recipe(image_folder, run, weights="imagenet", epochs=1, freeze_backbone=True, lr=1e-2))
    after = weights_of(run)
    assert torch.equal(after["stem.conv.weight"], pretrained["stem.conv.weight"])
    # BatchNorm statistics stay frozen while fine-tuning.
    assert torch.equal(after["stages.3.1.dw.bn.running_var"], pretrained["stages.3.1.dw.bn.running_var"])
    run2 = tmp_path / "unfrozen"
    effnet.train(tiny_recipe(image_folder, run2, weights="imagenet", epochs=2, freeze_backbone=True, unfreeze_at=1))
    after2 = weights_of(run2)
    assert not torch.equal(after2["stem.conv.weight"], pretrained["stem.conv.weight"])
    assert torch.equal(after2["stages.3.1.dw.bn.running_var"], pretrained["stages.3.1.dw.bn.running_var"])


def test_backbone_learning_rate_is_scaled_when_fine_tuning():
    model = effnet.create_model("efficientnet_lite0", num_classes=3)
    cfg = effnet.TrainConfig(data="d", out="o", lr=0.01, backbone_lr_scale=0.1)
    opt = engine.build_optimizer(model, cfg, fine_tuning=True, world_size=1)
    assert sorted({g["lr"] for g in opt.param_groups}) == pytest.approx([0.001, 0.01])
    assert all(g["weight_decay"] == 0.0 for g in opt.param_groups if all(p.ndim == 1 for p in g["params"]))


def test_recipe_features_together(image_folder, tmp_path):
    """EMA, mixup/cutmix, RandAugment, clipping, accumulation, channels-last and bf16 in one run."""
    result = effnet.train(
        tiny_recipe(
            image_folder,
            tmp_path / "run",
            epochs=1,
            ema=True,
            ema_decay=0.9,
            mixup=0.2,
            cutmix=1.0,
            augment="randaugment",
            grad_clip=1.0,
            accum_steps=2,
            channels_last=True,
            amp="bf16",
            optimizer="sgd",
            label_smoothing=0.1,
        )
    )
    assert result.history[0]["val_top1"] is not None
    assert all(torch.isfinite(t).all() for t in weights_of(tmp_path / "run").values() if t.is_floating_point())


def test_fp16_with_loss_scaling_runs_on_cpu(image_folder, tmp_path):
    # fp16 convolutions are emulated on most CPUs and slow: the smallest baseline at 16 px.
    result = effnet.train(
        tiny_recipe(
            image_folder,
            tmp_path / "run",
            epochs=1,
            amp="fp16",
            optimizer="rmsprop",
            model="mobilenet_v3_small",
            img_size=16,
        )
    )
    assert result.history[0]["train_loss"] > 0


def test_resnet_baseline_through_the_same_engine(image_folder, tmp_path):
    result = effnet.train(tiny_recipe(image_folder, tmp_path / "run", model="resnet18", epochs=1))
    model = effnet.create_model(weights=tmp_path / "run" / "best.safetensors")
    assert type(model).__name__ == "EffnetResNet" and model.num_classes == 3
    assert result.history[0]["train_top1"] >= 0


def test_compiled_training_saves_plain_checkpoints_and_resumes(image_folder, tmp_path, monkeypatch):
    """``compile=True`` goes through torch.compile; checkpoints hold the plain module's keys.

    Inductor's C++ build takes minutes on 2 cores, so the graph is captured by Dynamo and run by
    its eager backend: the wrapping, re-wrapping at unfreezing, saving and resuming are the same.
    """
    recipe = dict(epochs=2, freeze_backbone=True, unfreeze_at=1, lr=3e-3)
    effnet.train(tiny_recipe(image_folder, tmp_path / "plain", **recipe))

    calls = []
    real_compile = torch.compile

    def eager_compile(model, **kwargs):
        calls.append(type(model).__name__)
        return real_compile(model, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    run = tmp_path / "compiled"
    train_interrupted_at_step(tiny_recipe(image_folder, run, compile=True, **recipe))
    effnet.train(tiny_recipe(image_folder, run, compile=True, resume=True, **recipe))

    assert calls and set(calls) == {"EfficientNet"}
    plain, compiled = weights_of(tmp_path / "plain"), weights_of(run)
    assert plain.keys() == compiled.keys() and not any("_orig_mod" in k for k in compiled)
    for key in plain:
        assert torch.allclose(plain[key], compiled[key], atol=1e-5), key
    assert effnet.create_model(weights=run / "best.safetensors").num_classes == 3
