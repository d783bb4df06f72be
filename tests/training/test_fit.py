"""The engine's public surface: fit on a given model, tasks, callbacks, replacing the model mid-run."""

import json

import pytest
import torch
from safetensors.torch import load_file
from tests.training.conftest import tiny_recipe

import effnet
from effnet.models.surgery import keep_channels
from effnet.training import Callback, ClassificationTask, Task, fit

pytestmark = pytest.mark.usefixtures("one_thread")


def recipe(data, out, **changes):
    r = tiny_recipe(data, out, **changes)
    r.pop("model")
    return r


def half_of_every_hidden_group(model):
    return keep_channels(
        model, {g.name: range(max(1, g.channels // 2)) for g in model.structure().groups if g.kind == "hidden"}
    )


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_fit_start(self, trainer):
        self.events.append("fit_start")

    def on_epoch_start(self, trainer, epoch):
        self.events.append(f"epoch_start {epoch}")

    def on_after_backward(self, trainer):
        self.events.append("backward")

    def on_after_step(self, trainer):
        self.events.append(f"step {trainer.global_step}")

    def on_epoch_end(self, trainer, epoch, metrics):
        metrics["recorded"] = len(self.events)
        self.events.append(f"epoch_end {epoch}")

    def on_save(self, trainer, epoch, metadata):
        metadata["note"] = f"saved at {epoch}"
        self.events.append(f"save {epoch}")

    def on_fit_end(self, trainer, result):
        self.events.append("fit_end")


def test_fit_trains_the_model_it_is_given_and_its_checkpoints_rebuild_it(image_folder, tmp_path):
    torch.manual_seed(0)
    model = half_of_every_hidden_group(effnet.create_model("efficientnet_b0", num_classes=3))
    recorder = Recorder()
    result = fit(model, image_folder, recipe(image_folder, tmp_path / "run", epochs=2), callbacks=[recorder])
    assert result.model is model and result.best_epoch in (1, 2)
    # Two epochs of two optimizer steps each, events in order, checkpoints after each epoch.
    assert recorder.events == [
        "fit_start",
        *("epoch_start 1", "backward", "step 1", "backward", "step 2", "epoch_end 1", "save 1"),
        *("epoch_start 2", "backward", "step 3", "backward", "step 4", "epoch_end 2", "save 2"),
        "fit_end",
    ]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["recorded"] for r in rows] == [6, 13]  # events before each epoch_end
    reloaded = effnet.create_model(weights=tmp_path / "run" / "last.safetensors").eval()
    assert reloaded.layout == model.layout and reloaded.pretrained_meta["classes"] == ["class_0", "class_1", "class_2"]
    assert effnet.weights.io.read_metadata(tmp_path / "run" / "last.safetensors")["note"] == "saved at 2"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # the trained model is channels-last (oneDNN rounds differently): ulp-level tolerance
        torch.testing.assert_close(reloaded(x), model.eval()(x), atol=1e-6, rtol=0)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["model"] == "efficientnet_b0" and summary["params"] == sum(p.numel() for p in model.parameters())


class ZeroGradients(Callback):
    def on_after_backward(self, trainer):
        for p in trainer.model.parameters():
            if p.grad is not None:
                p.grad.zero_()


def test_gradients_edited_after_backward_are_the_ones_applied(image_folder, tmp_path):
    model = effnet.create_model("efficientnet_lite0", num_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit(
        model,
        image_folder,
        recipe(image_folder, tmp_path / "run", epochs=1, weight_decay=0.0),
        callbacks=[ZeroGradients()],
    )
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "running" not in k and "num_batches" not in k)


class MaskFirstFilters(Callback):
    """Keeps the stem's first four filters at zero, in the model and its EMA copy (what a pruning mask does)."""

    def on_after_step(self, trainer):
        for model in (trainer.model, trainer.ema_model):
            if model is not None:
                with torch.no_grad():
                    model.stem.conv.weight[:4] = 0


def test_weights_edited_after_the_step_reach_the_ema_and_the_checkpoint(image_folder, tmp_path):
    model = effnet.create_model("efficientnet_lite0", num_classes=3)
    run = tmp_path / "run"
    fit(
        model,
        image_folder,
        recipe(image_folder, run, epochs=1, ema=True, ema_decay=0.5),
        callbacks=[MaskFirstFilters()],
    )
    saved = load_file(str(run / "last.safetensors"))  # the EMA weights are what is saved
    assert torch.count_nonzero(saved["stem.conv.weight"][:4]) == 0
    assert torch.count_nonzero(saved["stem.conv.weight"][4:]) > 0


class ScaleGradientsByStepCount(Callback):
    """A callback whose effect depends on state it keeps: resume must restore that state."""

    def __init__(self):
        self.calls = 0

    def on_after_backward(self, trainer):
        self.calls += 1
        for p in trainer.model.parameters():
            if p.grad is not None:
                p.grad.mul_(1.0 + 0.25 * self.calls)

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]


class InterruptAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_after_backward(self, trainer):
        if trainer.global_step + 1 == self.step:
            raise KeyboardInterrupt


class PruneAfterFirstEpoch(Callback):
    def on_epoch_end(self, trainer, epoch, metrics):
        if epoch == 1:
            trainer.replace_model(half_of_every_hidden_group(trainer.model))
            metrics["params"] = sum(p.numel() for p in trainer.model.parameters())


def fresh_b0():
    torch.manual_seed(0)
    return effnet.create_model("efficientnet_b0", num_classes=3)


def test_stateful_callbacks_and_a_replaced_model_resume_exactly(image_folder, tmp_path):
    settings = dict(epochs=3, lr=3e-3, ema=True)
    straight = tmp_path / "straight"
    result = fit(
        fresh_b0(),
        image_folder,
        recipe(image_folder, straight, **settings),
        callbacks=[ScaleGradientsByStepCount(), PruneAfterFirstEpoch()],
    )
    assert result.model.layout.blocks[1].hidden_channels == 48  # the replacement is what was trained and saved
    assert effnet.create_model(weights=straight / "last.safetensors").layout == result.model.layout

    resumed = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):  # in epoch 3, after the model was replaced
        fit(
            fresh_b0(),
            image_folder,
            recipe(image_folder, resumed, **settings),
            callbacks=[ScaleGradientsByStepCount(), PruneAfterFirstEpoch(), InterruptAt(5)],
        )
    fit(
        fresh_b0(),  # the unpruned network: the training state's architecture wins
        image_folder,
        recipe(image_folder, resumed, resume=True, **settings),
        callbacks=[ScaleGradientsByStepCount(), PruneAfterFirstEpoch()],
    )
    mine, reference = load_file(str(resumed / "last.safetensors")), load_file(str(straight / "last.safetensors"))
    assert mine.keys() == reference.keys()
    assert all(torch.equal(mine[k], reference[k]) for k in reference)
    rows = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[0]["params"] < sum(
        p.numel() for p in fresh_b0().parameters()
    )


def test_resuming_without_a_stateful_callback_is_refused(image_folder, tmp_path):
    run = tmp_path / "run"
    fit(fresh_b0(), image_folder, recipe(image_folder, run, epochs=1), callbacks=[ScaleGradientsByStepCount()])
    with pytest.raises(effnet.EffnetError, match="state of callback ScaleGradientsByStepCount; resume it with"):
        fit(fresh_b0(), image_folder, recipe(image_folder, run, epochs=2, resume=True))


class HalfLoss(Task):
    """A task of its own: the loss is whatever the task says (here, half the cross-entropy)."""

    def __init__(self):
        self.inner = ClassificationTask()
        self.batches = 0

    def loss(self, trainer, model, batch):
        self.batches += 1
        loss, logits = self.inner.loss(trainer, model, batch)
        return 0.5 * loss, logits


def test_the_task_owns_the_loss(image_folder, tmp_path):
    task = HalfLoss()
    torch.manual_seed(0)
    result = fit(
        effnet.create_model("efficientnet_lite0", num_classes=3),
        image_folder,
        recipe(image_folder, tmp_path / "half", epochs=1, label_smoothing=0.0),
        task=task,
    )
    torch.manual_seed(0)
    plain = fit(
        effnet.create_model("efficientnet_lite0", num_classes=3),
        image_folder,
        recipe(image_folder, tmp_path / "plain", epochs=1, label_smoothing=0.0),
    )
    assert task.batches == 2
    # Same start; AdamW's steps do not depend on the loss's scale, so every batch's loss is halved.
    assert result.history[0]["train_loss"] == pytest.approx(0.5 * plain.history[0]["train_loss"], rel=1e-4)


def test_fit_refuses_a_plain_module(image_folder, tmp_path):
    with pytest.raises(effnet.EffnetError, match="fit needs an effnet model"):
        fit(torch.nn.Linear(3, 3), image_folder, recipe(image_folder, tmp_path / "x"))


class LearnedScale(Task):
    """A task with a parameter of its own (a logit scale) that records which images it saw."""

    def __init__(self):
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.inner = ClassificationTask()
        self.indices = []

    def parameters(self):
        return [self.scale]

    def loss(self, trainer, model, batch):
        self.indices += batch.indices.tolist()
        logits = model(batch.images) * self.scale
        return self.inner.criterion(logits.float(), batch.targets), logits

    def state_dict(self):
        return {"scale": self.scale.detach().clone()}

    def load_state_dict(self, state):
        with torch.no_grad():
            self.scale.copy_(state["scale"])


class Stop(Callback):
    def on_epoch_start(self, trainer, epoch):
        if epoch == 2:
            raise KeyboardInterrupt


def test_a_tasks_parameters_are_trained_and_resumed_and_it_sees_dataset_indices(image_folder, tmp_path):
    straight = LearnedScale()
    fit(fresh_b0(), image_folder, recipe(image_folder, tmp_path / "a", epochs=2), task=straight)
    assert straight.scale.item() != 1.0  # it reached the optimizer
    # Each epoch's 16 images (18 less the dropped last batch) are distinct positions of the training set.
    first_epoch = straight.indices[:16]
    assert len(set(first_epoch)) == 16 and set(first_epoch) <= set(range(18))
    resumed = LearnedScale()
    with pytest.raises(KeyboardInterrupt):
        fit(fresh_b0(), image_folder, recipe(image_folder, tmp_path / "b", epochs=2), task=resumed, callbacks=[Stop()])
    again = LearnedScale()
    fit(fresh_b0(), image_folder, recipe(image_folder, tmp_path / "b", epochs=2, resume=True), task=again)
    assert again.scale.item() == straight.scale.item() and again.indices == straight.indices[16:]
