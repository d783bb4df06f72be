"""``effnet prune`` as a user runs it: prune, fine-tune, measure, resume; bad input in one line."""

import json
import re
import subprocess
import sys

import pytest
from tests.training.conftest import make_image_folder

import effnet
from effnet.cli import main
from effnet.compress import PassContext, PruneWeightsConfig
from effnet.compress.prune import PruneChannelsConfig, plan_channels
from effnet.compress.sparsity import prunable_weights
from effnet.schemas import BenchReport, CompressionReport, PassReport

FAST = ["--workers", "0", "--batch-size", "8", "--repeats", "3", "--no-progress", "--threads", "1"]


def test_structured_pruning_in_steps_with_fine_tuning_then_resume(trained, tmp_path, capsys):
    data, weights = trained
    before = weights.read_bytes()
    out = tmp_path / "out"
    argv = ["prune", "--weights", str(weights), "--data", str(data), "--out", str(out), "--target", "0.5"]
    assert main([*argv, "--steps", "2", "--finetune-epochs", "1", *FAST]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "original" in printed and "pruned" in printed
    assert weights.read_bytes() == before  # the input checkpoint is untouched

    report = CompressionReport.from_dict(json.loads((out / "report.json").read_text()))
    original, pruned = report.passes
    assert pruned.flops <= 0.52 * original.flops and pruned.params < original.params
    assert pruned.size_mb < original.size_mb and original.top1 is not None and pruned.top1 is not None
    assert original.latency_ms_eager and original.latency_ms_onnxruntime and pruned.latency_ms_onnxruntime
    bench = BenchReport.from_dict(json.loads((out / "bench.json").read_text()))
    assert {(r.model, r.runtime) for r in bench.results} == {
        (m, rt) for m in ("original", "pruned") for rt in ("torch", "onnxruntime")
    }
    for step in (1, 2):
        PassReport.from_dict(json.loads((out / "steps" / str(step) / "pass.json").read_text()))
        assert (out / "steps" / str(step) / "train" / "last.safetensors").exists()
    model = effnet.create_model(weights=out / "model.safetensors")
    assert sum(p.numel() for p in model.parameters()) == pruned.params

    # Everything is done: --resume only measures again; without it, nothing is overwritten.
    mtime = (out / "steps" / "2" / "model.safetensors").stat().st_mtime
    assert main([*argv, "--steps", "2", "--finetune-epochs", "1", "--resume", *FAST]) == 0
    assert (out / "steps" / "2" / "model.safetensors").stat().st_mtime == mtime  # no step was redone
    capsys.readouterr()
    assert main([*argv, "--steps", "2", *FAST]) == 1
    assert "is not empty; use --resume" in capsys.readouterr().err
    assert main([*argv, "--steps", "3", "--finetune-epochs", "1", "--resume", *FAST]) == 1
    assert "other settings" in capsys.readouterr().err


def test_unstructured_pruning_shrinks_the_file_not_the_shapes(trained, tmp_path, capsys):
    data, weights = trained
    out = tmp_path / "sparse"
    argv = ["prune", "--weights", str(weights), "--data", str(data), "--out", str(out), "--method", "unstructured"]
    assert main([*argv, "--target", "0.8", "--json", *FAST]) == 0, capsys.readouterr().err
    report = CompressionReport.from_dict(json.loads(capsys.readouterr().out))
    original, pruned = report.passes
    assert pruned.params == original.params and pruned.flops == original.flops
    assert pruned.sparsity == pytest.approx(0.8, abs=0.01) and original.sparsity < 0.01
    assert pruned.size_mb < 0.4 * original.size_mb
    # --scope local: every layer loses the same share (global LAMP scores prune big layers harder).
    local = tmp_path / "sparse-local"
    argv = ["prune", "--weights", str(weights), "--data", str(data), "--out", str(local), "--method", "unstructured"]
    assert main([*argv, "--target", "0.8", "--scope", "local", *FAST]) == 0, capsys.readouterr().err
    capsys.readouterr()
    model = effnet.create_model(weights=str(local / "model.safetensors"))
    names = list(prunable_weights(model, PruneWeightsConfig()))
    shares = [float((dict(model.named_parameters())[n] == 0).float().mean()) for n in names]
    assert min(shares) > 0.75 and max(shares) < 0.85


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--target", "1.5"], r"target must be a fraction in \(0, 1\)"),
        (["--method", "unstructured", "--target-kind", "channels"], "applies to structured pruning"),
        (["--method", "unstructured", "--sensitivity"], "guides structured pruning"),
        (["--distill-alpha", "0.7"], "give --finetune-epochs too"),
        (["--round-to", "0"], "round_to must be between 1 and 256"),
        (["--distill-alpha", "1.5", "--finetune-epochs", "1"], r"distill_alpha must be in \[0, 1\]"),
        (["--method", "unstructured", "--keep-squeeze"], "choose channel groups"),
        (["--teacher", "t.safetensors"], "a teacher is only used with --distill-alpha"),
        (["--latency-aware", "--scope", "local"], "--latency-aware weighs one global threshold"),
        (["--max-ratio", "0"], r"max_ratio must be a fraction in \(0, 1\]"),
        (["--max-ratio", "0.5", "--scope", "local"], "--max-ratio caps the global threshold"),
        (["--teacher", "none.safetensors", "--distill-alpha", "0.5", "--finetune-epochs", "1"], "does not exist"),
    ],
)
def test_bad_settings_are_one_line(trained, tmp_path, capsys, extra, message):
    data, weights = trained
    argv = ["prune", "--weights", str(weights), "--data", str(data), "--out", str(tmp_path / "o"), *extra]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert re.search(message, err) and err.count("\n") == 1 and not (tmp_path / "o").exists()


def test_what_cannot_be_pruned_is_refused_before_any_work(trained, tmp_path, capsys):
    data, _ = trained
    resnet = effnet.save_model(effnet.create_model("resnet18", num_classes=3), tmp_path / "r.safetensors")
    argv = ["prune", "--weights", str(resnet), "--data", str(data), "--out", str(tmp_path / "r"), *FAST]
    assert main(argv) == 1
    assert "cannot prune" in capsys.readouterr().err and not (tmp_path / "r").exists()
    other = make_image_folder(tmp_path / "other", classes=4, per_class=4, size=32)
    _, weights = trained
    argv = ["prune", "--weights", str(weights), "--data", str(other), "--out", str(tmp_path / "x"), *FAST]
    assert main(argv) == 1
    assert "classes differ" in capsys.readouterr().err and not (tmp_path / "x").exists()
    other_teacher = effnet.save_model(effnet.create_model("efficientnet_b0", num_classes=4), tmp_path / "t.safetensors")
    argv = ["prune", "--weights", str(weights), "--data", str(data), "--out", str(tmp_path / "t"), "--teacher",
            str(other_teacher), "--distill-alpha", "0.5", "--finetune-epochs", "1", *FAST]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "has other classes" in err and err.count("\n") == 1 and not (tmp_path / "t").exists()


def test_the_report_reads_the_pruning_report(trained, tmp_path):
    data, weights = trained
    out = tmp_path / "out"
    assert main(["prune", "--weights", str(weights), "--data", str(data), "--out", str(out), *FAST]) == 0
    html = tmp_path / "report.html"
    done = subprocess.run(
        [sys.executable, "-m", "effnet", "report", str(out / "report.json"), "--out", str(html)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "pruned" in html.read_text()


def test_taylor_importance_ranks_on_training_batches(trained, tmp_path, capsys):
    data, weights = trained
    out = tmp_path / "out"
    argv = ["prune", "--weights", str(weights), "--data", str(data), "--out", str(out), "--importance", "taylor"]
    assert main([*argv, *FAST]) == 0, capsys.readouterr().err
    config = PassReport.from_dict(json.loads((out / "steps" / "1" / "pass.json").read_text())).config
    assert config["importance"] == "taylor"
    original, pruned = CompressionReport.from_dict(json.loads((out / "report.json").read_text())).passes
    assert pruned.flops <= 0.52 * original.flops


def test_sensitivity_decides_where_channels_go(trained, tmp_path, capsys):
    data, weights = trained
    out = tmp_path / "out"
    argv = ["prune", "--weights", str(weights), "--data", str(data), "--out", str(out), "--target", "0.3"]
    assert main([*argv, "--sensitivity", *FAST]) == 0, capsys.readouterr().err
    assert "top-1@0.25" in capsys.readouterr().err  # the table
    report = CompressionReport.from_dict(json.loads((out / "report.json").read_text()))
    original, pruned = report.passes
    assert pruned.flops <= 0.72 * original.flops
    units = [record.layer for record in report.prune_sensitivity]
    assert "stages.1.*.hidden" in units and all(len(r.ratios) == 4 for r in report.prune_sensitivity)
    assert CompressionReport.from_dict(json.loads((out / "sensitivity.json").read_text())).prune_sensitivity
    config = PassReport.from_dict(json.loads((out / "steps" / "1" / "pass.json").read_text())).config
    assert config["scope"] == "local" and list(config["ratios"])[-1] == "*"

    # A second job reuses the measured sensitivity instead of measuring it again: the same widths.
    again = tmp_path / "again"
    reuse = ["--sensitivity", "--sensitivity-file", str(out / "sensitivity.json"), *FAST]
    argv = [a if a != str(out) else str(again) for a in argv]
    assert main([*argv, *reuse]) == 0, capsys.readouterr().err
    assert "pruning each unit alone" not in capsys.readouterr().err
    first = PassReport.from_dict(json.loads((out / "steps" / "1" / "pass.json").read_text())).details["groups"]
    second = PassReport.from_dict(json.loads((again / "steps" / "1" / "pass.json").read_text())).details["groups"]
    assert first == second
    third = [a if a != str(again) else str(tmp_path / "third") for a in argv]
    assert main([*third, "--sensitivity-file", str(out / "sensitivity.json")]) == 1
    assert "--sensitivity-file goes with --sensitivity" in capsys.readouterr().err


@pytest.mark.parametrize("sensitivity", [False, True])
def test_the_groups_to_narrow_are_chosen(trained, tmp_path, capsys, sensitivity):
    data, weights = trained
    out = tmp_path / "out"
    argv = ["prune", "--weights", str(weights), "--data", str(data), "--out", str(out), "--target", "0.5",
            "--round-to", "8", "--keep-squeeze", "--include-stem", "--include-head", *FAST]  # fmt: skip
    assert main([*argv, *(["--sensitivity"] if sensitivity else [])]) == 0, capsys.readouterr().err
    capsys.readouterr()
    details = PassReport.from_dict(json.loads((out / "steps" / "1" / "pass.json").read_text())).details
    groups = details["groups"]
    assert not any(name.endswith(".squeeze") for name in groups)  # left alone, not even candidates
    assert "stem" in groups and "head" in groups
    original = effnet.create_model(weights=weights)
    pruned = effnet.create_model(weights=out / "model.safetensors")
    assert [b.se_channels for b in pruned.layout.blocks] == [b.se_channels for b in original.layout.blocks]
    assert pruned.layout.head_channels < original.layout.head_channels
    # The groups are part of the job: resuming with others is refused.
    other = [a for a in argv if a not in ("--keep-squeeze", "--include-stem", "--include-head")]
    assert main([*other, "--resume"]) == 1
    assert "other settings" in capsys.readouterr().err


def test_resume_continues_at_the_step_reached(trained, tmp_path, capsys):
    """A job stopped after its first step (step 2 never written) resumes with step 2 only."""
    import shutil

    data, weights = trained
    out = tmp_path / "out"
    argv = ["prune", "--weights", str(weights), "--data", str(data), "--out", str(out), "--steps", "2", *FAST]
    assert main(argv) == 0
    progress = json.loads((out / "progress.json").read_text())
    shutil.rmtree(out / "steps" / "2")
    (out / "report.json").unlink()
    (out / "progress.json").write_text(json.dumps({**progress, "done": 1}))
    step1 = (out / "steps" / "1" / "model.safetensors").stat().st_mtime
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 0
    err = capsys.readouterr().err
    assert "step 2/2" in err and "step 1/2" not in err
    assert (out / "steps" / "1" / "model.safetensors").stat().st_mtime == step1
    assert (out / "steps" / "2" / "model.safetensors").exists() and (out / "report.json").exists()


def test_fine_tuning_repeats_the_parents_crops_and_regularisation(monkeypatch):
    from effnet.compress.runner import _parent_training

    recorded = {"recipe": {"crop_scale": [0.6, 1.0], "crop_pct": 1.0, "label_smoothing": 0.0, "lr": 5.0, "mixup": None}}
    monkeypatch.setattr("effnet.weights.io.read_metadata", lambda path: recorded)
    # The crops and smoothing come from the parent; its learning rate and unset options do not.
    assert _parent_training("parent.safetensors") == {
        "crop_scale": [0.6, 1.0],
        "crop_pct": 1.0,
        "label_smoothing": 0.0,
    }
    monkeypatch.setattr("effnet.weights.io.read_metadata", lambda path: {})
    assert _parent_training("parent.safetensors") == {}


def test_recovery_fine_tuning_uses_a_quicker_batch_norm_momentum():
    from torch import nn

    from effnet.compress.runner import _quicken_batchnorm

    model = effnet.create_model("efficientnet_lite0", num_classes=3)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.momentum = 0.01  # TensorFlow's averaging, as TF-ported checkpoints carry it
    assert _quicken_batchnorm(model) == 0.01
    assert {m.momentum for m in norms} == {0.1}
    assert _quicken_batchnorm(model) is None  # nothing slower left


def test_recovery_can_distill_from_the_unpruned_original(trained, tmp_path, capsys, monkeypatch):
    import effnet.training.distill as distill

    made = []

    class Spy(distill.DistillationTask):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(distill, "DistillationTask", Spy)
    data, weights = trained
    before = weights.read_bytes()
    out = tmp_path / "kd"
    argv = ["prune", "--weights", str(weights), "--data", str(data), "--out", str(out), "--target", "0.5"]
    argv += ["--finetune-epochs", "1", "--distill-alpha", "0.7", "--temperature", "2", *FAST]
    assert main(argv) == 0, capsys.readouterr().err
    assert "with the original as teacher (alpha 0.7, T 2)" in capsys.readouterr().err
    (task,) = made
    assert task.alpha == 0.7 and task.temperature == 2.0 and task.teacher_batches > 0
    # The teacher is the unpruned original: as many parameters as the checkpoint, which is untouched.
    original = effnet.create_model(weights=weights)
    assert sum(p.numel() for p in task.teacher.parameters()) == sum(p.numel() for p in original.parameters())
    assert weights.read_bytes() == before
    pruned = effnet.create_model(weights=out / "model.safetensors")
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in original.parameters())


def test_latency_aware_pruning_cuts_where_time_per_flop_is_highest(trained, tmp_path, capsys, monkeypatch):
    """The measured time per FLOP (here stubbed: stage 1's FLOPs cost 4x) steers the global cut,
    within the cap, and latency is measured at --bench-size."""
    from effnet.compress import runner
    from effnet.compress.prune import prunable_groups

    data, weights = trained
    seen = {}

    def fake_scale(model, config, img_size, **kwargs):
        seen["size"] = img_size
        names = [g.name for g in prunable_groups(model, config) if g.kind != "squeeze"]
        return {name: (4.0 if name.startswith("stages.1.") and name.endswith(".hidden") else 1.0) for name in names}

    monkeypatch.setattr(runner, "measure_latency_scale", fake_scale)
    out = tmp_path / "out"
    argv = ["prune", "--weights", str(weights), "--data", str(data), "--out", str(out), "--target", "0.4",
            "--round-to", "8", "--latency-aware", "--bench-size", "48", *FAST]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    assert seen["size"] == 48
    progress = json.loads((out / "progress.json").read_text())
    assert progress["latency_scale"]["stages.1.0.hidden"] == 4.0 and progress["job"]["latency_aware"]
    groups = PassReport.from_dict(json.loads((out / "steps" / "1" / "pass.json").read_text())).details["groups"]
    plain = PruneChannelsConfig(target=0.4, target_kind="flops", round_to=8)
    baseline = plan_channels(effnet.create_model(weights=weights), plain, PassContext(img_size=32))[1]["groups"]
    for name in ("stages.1.0.hidden", "stages.1.1.hidden"):
        assert groups[name][1] < baseline[name][1] and groups[name][1] >= groups[name][0] / 4
    bench = BenchReport.from_dict(json.loads((out / "bench.json").read_text()))
    assert {r.img_size for r in bench.results} == {48}
    capsys.readouterr()
    assert main([*[a for a in argv if a != "--latency-aware"], "--resume"]) == 1  # part of the job
    assert "other settings" in capsys.readouterr().err
