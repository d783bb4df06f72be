"""Knowledge distillation: the loss by hand, the teacher untouched, the logit cache, feature adapters, the CLI."""

import json
import math
import re

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from tests.training.conftest import make_image_folder, tiny_recipe

import effnet
from effnet.cli import main
from effnet.compress import apply_pass
from effnet.data.datasets import load_data
from effnet.data.images import eval_transform
from effnet.training import Batch, Callback, DistillationTask, fit
from effnet.training.distill import TEACHER_CACHE, _input_map, kd_loss
from effnet.training.state import load_state
from effnet.weights.io import read_metadata
from effnet.weights.specs import Preprocessing

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["--epochs", "1", "--batch-size", "8", "--workers", "0", "--no-progress", "--no-tensorboard"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A B0 teacher trained for one epoch on a tiny 3-class folder at 32 px."""
    root = tmp_path_factory.mktemp("distill")
    data = make_image_folder(root / "data", classes=3, per_class=8, size=32)
    torch.manual_seed(0)
    effnet.train({**tiny_recipe(data, root / "teacher", model="efficientnet_b0", epochs=1)})
    return data, root / "teacher" / "best.safetensors"


def recipe(data, out, **changes):
    r = tiny_recipe(data, out, **{"epochs": 1, "label_smoothing": 0.0, **changes})
    r.pop("model")
    return r


def student():
    torch.manual_seed(0)
    return effnet.create_model("efficientnet_lite0", num_classes=3)


def teacher_of(path):
    return effnet.create_model(weights=path)


class Fixed(torch.nn.Module):
    """A 'network' whose output is a given tensor (a parameter, so a gradient can be looked for)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.nn.Parameter(logits.clone())

    def forward(self, images):
        return self.logits * 1.0


S = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 2.0]])
T = torch.tensor([[0.5, 1.0, 3.0], [2.0, 0.0, -1.0]])
LABELS = torch.tensor([1, 2])


def by_hand(alpha, temperature):
    """(1 - a) CE + a T^2 KL(p_t || p_s), batch mean, from the definitions with Python floats."""

    def softmax(row, t):
        e = [math.exp(v / t) for v in row]
        return [v / sum(e) for v in e]

    ce = kl = 0.0
    for s, t, y in zip(S.tolist(), T.tolist(), LABELS.tolist(), strict=True):
        ce += -math.log(softmax(s, 1.0)[y])
        ps, pt = softmax(s, temperature), softmax(t, temperature)
        kl += sum(q * math.log(q / p) for q, p in zip(pt, ps, strict=True))
    n = len(LABELS)
    return (1 - alpha) * ce / n + alpha * temperature**2 * kl / n


@pytest.mark.parametrize("alpha, temperature", [(0.5, 4.0), (0.9, 2.0), (1.0, 1.0), (0.0, 4.0)])
def test_the_loss_is_hintons_computed_by_hand(alpha, temperature):
    task = DistillationTask(Fixed(T), temperature=temperature, alpha=alpha)
    student_net = Fixed(S)
    loss, logits = task.loss(None, student_net, Batch(torch.zeros(2, 3, 8, 8), LABELS))
    assert loss.item() == pytest.approx(by_hand(alpha, temperature), rel=1e-6)
    assert torch.equal(logits, S)
    if alpha == 0:  # plain cross-entropy, and the teacher is not even run
        assert loss.item() == pytest.approx(F.cross_entropy(S, LABELS).item(), rel=1e-6)
        assert task.teacher_batches == 0
    loss.backward()  # the student gets gradients, the teacher none
    assert student_net.logits.grad is not None and student_net.logits.grad.abs().sum() > 0
    assert task.teacher.logits.grad is None
    assert float(kd_loss(S, S, temperature)) == pytest.approx(0.0, abs=1e-7)


def test_mixed_batches_use_the_soft_targets_and_the_teacher_sees_the_mixed_images():
    seen = []
    teacher = Fixed(T)
    teacher.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    task = DistillationTask(teacher, temperature=2.0, alpha=0.5)
    soft = torch.tensor([[0.3, 0.7, 0.0], [0.0, 0.4, 0.6]])
    images = torch.randn(2, 3, 4, 4)
    loss, _ = task.loss(None, Fixed(S), Batch(images, LABELS, soft_targets=soft))
    expected = 0.5 * F.cross_entropy(S, soft) + 0.5 * kd_loss(S, T, 2.0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6) and seen[0] is images


def test_the_teacher_sees_the_batch_normalised_as_it_was_trained():
    student_pre = Preprocessing(32, 32, "bilinear", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    teacher_pre = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}  # TF-style, as Lite0's
    scale, shift = _input_map(student_pre, {"preprocessing": teacher_pre}, torch.device("cpu"))
    pixels = torch.rand(2, 3, 4, 4)
    as_student = (pixels - torch.tensor(student_pre.mean).view(1, 3, 1, 1)) / torch.tensor(student_pre.std).view(
        1, 3, 1, 1
    )
    torch.testing.assert_close(as_student * scale + shift, (pixels - 0.5) / 0.5)
    assert _input_map(student_pre, {"preprocessing": student_pre.to_dict()}, torch.device("cpu")) is None


def test_distilling_trains_the_student_and_leaves_the_teacher_untouched(trained, tmp_path):
    data, weights = trained
    teacher = teacher_of(weights)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    task = DistillationTask(teacher, temperature=4.0, alpha=0.7)
    model = student()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, data, recipe(data, tmp_path / "kd"), task=task)
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics too
    assert not teacher.training and all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert any(not torch.equal(start[k], v) for k, v in model.state_dict().items())
    assert task.teacher_batches == 2  # live: once per training batch (18 images, batches of 8, last dropped)


def test_the_cache_holds_the_live_teachers_logits_and_the_teacher_runs_once(trained, tmp_path):
    data, weights = trained
    teacher = teacher_of(weights)
    calls = []
    teacher.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    run = tmp_path / "cached"
    task = DistillationTask(teacher, cache_teacher=True)
    fit(student(), data, recipe(data, run, epochs=2), task=task)
    assert calls == [8, 8, 2]  # each of the 18 training images once, for both epochs

    pre = Preprocessing.from_dict(read_metadata(run / "last.safetensors")["preprocessing"])
    splits = load_data(data, val_split=0.25, train_transform=eval_transform(pre), eval_transform=eval_transform(pre))
    images = torch.stack([splits.train[i][0] for i in range(len(splits.train))])
    with torch.no_grad():
        live = teacher.eval()(images.contiguous(memory_format=torch.channels_last))
    with safe_open(str(run / TEACHER_CACHE), framework="pt") as fh:
        cached = fh.get_tensor("logits")
    torch.testing.assert_close(cached, live, atol=1e-5, rtol=0)  # row i is training image i

    calls.clear()  # resuming reads the file: the teacher does not run again
    fit(student(), data, recipe(data, run, epochs=3, resume=True), task=DistillationTask(teacher, cache_teacher=True))
    assert calls == []


def test_the_cache_refuses_augmentation_before_writing_anything(trained, tmp_path):
    data, weights = trained
    with pytest.raises(effnet.EffnetError, match="needs the same image every epoch: use augment none"):
        fit(
            student(),
            data,
            recipe(data, tmp_path / "aug", augment="trivialaugment"),
            task=DistillationTask(teacher_of(weights), cache_teacher=True),
        )
    assert not (tmp_path / "aug").exists()


class StopAt(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_start(self, trainer, epoch):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_feature_adapters_are_trained_and_resume_exactly(trained, tmp_path):
    data, weights = trained
    pairs = [("stages.3", "stages.5")]  # Lite0's 80 channels at stride 16 -> B0's 192 at stride 32

    def task():
        return DistillationTask(teacher_of(weights), features=pairs, feature_weight=0.5)

    straight = task()
    fit(student(), data, recipe(data, tmp_path / "straight", epochs=2), task=straight)
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the recipe's seed: how the adapter started
        initial = torch.nn.Conv2d(80, 192, 1, bias=False).weight
    trained_adapter = straight.adapters["0"].weight.detach()
    assert trained_adapter.shape == initial.shape and not torch.allclose(trained_adapter, initial)

    first = task()
    with pytest.raises(KeyboardInterrupt):  # as Ctrl-C would, after the first epoch is saved
        fit(student(), data, recipe(data, tmp_path / "resumed", epochs=2), task=first, callbacks=[StopAt(2)])
    saved = load_state(tmp_path / "resumed" / "train_state.safetensors")["task"]["adapters"]["0.weight"]
    assert torch.equal(saved, first.adapters["0"].weight.detach())
    second = task()
    fit(student(), data, recipe(data, tmp_path / "resumed", epochs=2, resume=True), task=second)
    assert torch.equal(second.adapters["0"].weight, straight.adapters["0"].weight)
    mine, reference = (load_file(str(tmp_path / r / "last.safetensors")) for r in ("resumed", "straight"))
    assert all(torch.equal(mine[k], reference[k]) for k in reference)


def test_the_command_distils_into_a_name_and_a_checkpoint_and_resumes(trained, tmp_path, capsys):
    data, weights = trained
    before = weights.read_bytes()
    argv = ["distill", "--teacher", str(weights), "--data", str(data), *FAST]
    out = tmp_path / "r18"
    assert main([*argv, "--student", "resnet18", "--out", str(out), "--temperature", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["epochs"] == 1 and (out / "best.safetensors").exists()
    reloaded = effnet.create_model(weights=out / "best.safetensors")
    assert reloaded.baseline_name == "resnet18"
    assert reloaded.pretrained_meta["classes"] == [f"class_{i}" for i in range(3)]
    # The run folder names its settings: resuming needs only --out (and more epochs).
    assert main(["distill", "--out", str(out), "--resume", "--epochs", "2", "--no-progress"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert main(["distill", "--out", str(out), "--resume", "--epochs", "3", "--alpha", "0.9"]) == 1
    assert "distillation settings that differ from the run's: alpha" in capsys.readouterr().err

    # A pruned copy of the teacher as the student, with a feature hint between the same stages.
    teacher = effnet.create_model(weights=weights)
    pruned, _ = apply_pass(teacher, "prune_channels", target=0.5)
    pruned_path = effnet.save_model(pruned, tmp_path / "pruned.safetensors")
    out = tmp_path / "pruned-kd"
    assert main([*argv, "--student", str(pruned_path), "--out", str(out), "--feature", "stages.4:stages.4"]) == 0
    assert "weights in" in capsys.readouterr().out
    assert effnet.create_model(weights=out / "last.safetensors").layout == pruned.layout
    assert weights.read_bytes() == before


def four_classes(tmp_path):
    return make_image_folder(tmp_path / "four", classes=4, per_class=4, size=32)


def other_student(tmp_path):
    return str(effnet.save_model(effnet.create_model("efficientnet_lite0", num_classes=4), tmp_path / "s.safetensors"))


def onnx_teacher(tmp_path):
    path = tmp_path / "teacher.onnx"
    path.write_bytes(b"\x08\x07")
    return str(path)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda tmp, argv: argv.__setitem__(4, str(four_classes(tmp))), r"teacher's classes differ from the data's"),
        (lambda tmp, argv: argv.__setitem__(6, other_student(tmp)), r"the student's classes differ from the teacher's"),
        (lambda tmp, argv: argv.extend(["--temperature", "0"]), r"temperature must be a positive number, got 0"),
        (lambda tmp, argv: argv.extend(["--alpha", "1.5"]), r"alpha must be in \[0, 1\]"),
        (lambda tmp, argv: argv.extend(["--feature", "stages.9:stages.3"]), r"unknown student stage 'stages.9'"),
        (lambda tmp, argv: argv.extend(["--feature", "stages.3:layer3"]), r"unknown teacher stage 'layer3'"),
        (lambda tmp, argv: argv.__setitem__(2, onnx_teacher(tmp)), r"is an ONNX file; distillation runs the teacher"),
        (lambda tmp, argv: argv.extend(["--cache-teacher", "--mixup", "0.2"]), r"--cache-teacher trains on each"),
    ],
    ids=["data-classes", "student-classes", "temperature", "alpha", "student-stage", "teacher-stage", "onnx", "cache"],
)
def test_bad_input_is_one_line_and_writes_nothing(trained, tmp_path, capsys, change, message):
    data, weights = trained
    out = tmp_path / "out"
    argv = ["distill", "--teacher", str(weights), "--data", str(data), "--student", "efficientnet_lite0"]
    argv += ["--out", str(out), *FAST]
    change(tmp_path, argv)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert re.search(message, err) and err.count("\n") == 1, err
    assert not out.exists()
