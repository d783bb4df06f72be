"""``effnet compress --recipe``: steps chained on one model, one report, resume, one-line recipe errors."""

import json
import textwrap

import pytest

import effnet
from effnet.cli import main
from effnet.compress.recipe import load_recipe
from effnet.schemas import CompressionReport

SHARED = "img_size: 32\nbatch_size: 8\nworkers: 0\nthreads: 1\nrepeats: 2\n"


def _recipe(tmp_path, weights, data, steps, shared=SHARED):
    path = tmp_path / "recipe.yaml"
    path.write_text(f"weights: {weights}\ndata: {data}\n{shared}steps:\n" + textwrap.dedent(steps))
    return path


def test_prune_distill_quantize_in_one_report_then_resume(trained, tmp_path, capsys):
    data, weights = trained
    before = weights.read_bytes()
    steps = """\
      - prune: {target: 0.3, target_kind: flops, finetune_epochs: 1}
      - distill: {epochs: 1, temperature: 2.0, alpha: 0.5}
      - quantize: {calib_images: 16}
    """
    recipe = _recipe(tmp_path, weights, data, steps)
    out = tmp_path / "out"
    assert main(["compress", "--recipe", str(recipe), "--out", str(out)]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "1-prune" in printed and "3-quantize" in printed
    assert weights.read_bytes() == before

    report = CompressionReport.from_dict(json.loads((out / "report.json").read_text()))
    assert [row.name for row in report.passes] == ["original", "1-prune", "2-distill", "3-quantize"]
    original, pruned, distilled, quantized = report.passes
    assert pruned.flops <= 0.72 * original.flops and distilled.params == pruned.params
    assert quantized.size_mb < 0.35 * distilled.size_mb and quantized.params == 0
    assert all(row.top1 is not None and row.latency_ms_onnxruntime for row in report.passes)
    assert report.quant_error  # from the quantize step
    stages = json.loads((out / "bench.json").read_text())  # each stage timed back to back, warm
    assert stages["consecutive"] == 20 and all(r["repeats"] == 2 for r in stages["results"])
    assert (out / "steps" / "2-distill" / "best.safetensors").exists()
    assert (out / "steps" / "3-quantize" / "model.onnx").exists()

    # Interrupted before the last step: --resume runs it alone.
    prune_model = out / "steps" / "1-prune" / "model.safetensors"
    stamp = prune_model.stat().st_mtime_ns
    (out / "report.json").unlink()
    for path in sorted((out / "steps" / "3-quantize").iterdir()):
        path.unlink()
    assert main(["compress", "--recipe", str(recipe), "--out", str(out), "--resume"]) == 0
    capsys.readouterr()
    assert prune_model.stat().st_mtime_ns == stamp and (out / "report.json").exists()
    # Without --resume nothing is overwritten; with other settings the resume is refused.
    assert main(["compress", "--recipe", str(recipe), "--out", str(out)]) == 1
    assert "not empty" in capsys.readouterr().err
    other = _recipe(tmp_path, weights, data, steps.replace("0.3", "0.4"))
    assert main(["compress", "--recipe", str(other), "--out", str(out), "--resume"]) == 1
    assert "other settings" in capsys.readouterr().err


def test_finetune_then_export(trained, tmp_path, capsys):
    data, weights = trained
    recipe = _recipe(tmp_path, weights, data, "  - finetune: {epochs: 1, lr: 0.001}\n  - export: {}\n")
    out = tmp_path / "out"
    assert main(["compress", "--recipe", str(recipe), "--out", str(out), "--json"]) == 0, capsys.readouterr().err
    report = CompressionReport.from_dict(json.loads(capsys.readouterr().out))
    assert [row.name for row in report.passes] == ["original", "1-finetune", "2-export"]
    assert report.passes[1].params == report.passes[0].params and report.passes[2].latency_ms_onnxruntime
    assert (out / "steps" / "2-export" / "model.onnx").exists()


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ("  - prune: {target: 0.5}\n  - shrink: {}\n", r"line \d+: unknown step 'shrink'"),
        ("  - prune: {target: 0.5, colour: red}\n", r"line \d+: unknown prune setting 'colour'; prune takes"),
        ("  - quantize: {}\n  - prune: {}\n", r"line \d+: prune comes after quantize"),
        ("  - prune: {target: 1.5}\n", r"line \d+: prune: invalid pruning job: target must be a fraction"),
        ("  - prune: {distill_alpha: 0.7}\n", r"line \d+: prune: invalid pruning job: --distill-alpha guides"),
        ("  - quantize: {calib_images: 2}\n", r"line \d+: quantize: invalid quantize settings"),
        ("  - quantize: {runtime: torch}\n", r"line \d+: quantize: invalid quantization job: runtime 'torch' is not"),
        ("  - distill: {epochs: 0}\n", r"line \d+: distill: epochs must be"),
    ],
)
def test_a_bad_recipe_names_its_line(trained, tmp_path, capsys, steps, message):
    data, weights = trained
    recipe = _recipe(tmp_path, weights, data, steps)
    assert main(["compress", "--recipe", str(recipe), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and __import__("re").search(message, err), err
    assert not (tmp_path / "o").exists()


def test_the_line_is_the_step_s_line(trained, tmp_path):
    data, weights = trained
    recipe = _recipe(tmp_path, weights, data, "  - prune: {target: 0.5}\n  - shrink: {}\n", shared="")
    with pytest.raises(effnet.EffnetError, match="line 5: unknown step 'shrink'"):
        load_recipe(recipe)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(f"weights: {weights}\ndata: {data}\nspeed: fast\nsteps: []\n")
    with pytest.raises(effnet.EffnetError, match="line 3: unknown setting 'speed'"):
        load_recipe(unknown)


def test_the_quantize_step_chooses_its_runtime_only_when_asked(trained, tmp_path):
    from pathlib import Path

    from effnet.compress.recipe import _quantize_job

    data, weights = trained
    recipe = load_recipe(_recipe(tmp_path, weights, data, "  - quantize: {runtime: auto, observer: entropy}\n"))
    job = _quantize_job(recipe, recipe.steps[0], Path("q"))
    assert job.runtime == "auto" and job.config.observer == "entropy"
    plain = load_recipe(_recipe(tmp_path, weights, data, "  - quantize: {}\n"))
    assert _quantize_job(plain, plain.steps[0], Path("q")).runtime == "onnxruntime"
    assert not _quantize_job(plain, plain.steps[0], Path("q")).tune
    tuned = load_recipe(_recipe(tmp_path, weights, data, "  - quantize: {tune: true}\n"))
    assert _quantize_job(tuned, tuned.steps[0], Path("q")).tune
    with pytest.raises(effnet.EffnetError, match="--tune tries one scale per tensor"):
        load_recipe(_recipe(tmp_path, weights, data, "  - quantize: {tune: true, per_channel: false}\n"))
    with pytest.raises(effnet.EffnetError, match="line 9: quantize: tune is true or false, got 'often'"):
        load_recipe(_recipe(tmp_path, weights, data, "  - quantize: {tune: often}\n"))


def test_the_example_recipe_is_valid(tmp_path, monkeypatch):
    from pathlib import Path

    examples = Path(__file__).parents[2] / "examples"
    recipe = load_recipe(examples / "compress-lite0.yaml")
    assert [step.name for step in recipe.steps] == ["prune", "distill", "quantize"]
    recipe = load_recipe(examples / "compress-b0.yaml")
    assert [step.name for step in recipe.steps] == ["lite", "prune", "quantize"]


def test_a_quantize_step_takes_every_setting_of_the_quantize_pass():
    from dataclasses import fields

    from effnet.compress.quantize import QuantizeConfig
    from effnet.compress.recipe import _QUANTIZE_KEYS

    # error_images only sizes the report's per-layer error; everything else decides the file.
    assert {f.name for f in fields(QuantizeConfig)} - set(_QUANTIZE_KEYS) == {"error_images"}
