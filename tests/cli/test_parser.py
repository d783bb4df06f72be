"""The command line's surface: one-line usage errors, help on every flag, the listing, and a
start-up that does not import PyTorch for help, listing and the version."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

import effnet
from effnet.cli import COMMANDS, build_parser, main
from effnet.models.baselines import BASELINES

# Bad invocations of every subcommand (and of none): argparse type errors, values out of range,
# missing required arguments, unknown flags, invalid choices, missing values.
BAD_INVOCATIONS = [
    ([], "effnet: error: the following arguments are required: COMMAND"),
    (["nosuch"], "effnet: error: argument COMMAND: invalid choice: 'nosuch'"),
    (["predict"], "effnet predict: error: the following arguments are required: IMAGE_OR_DIR"),
    (["predict", "x.jpg", "--topk", "0"], "effnet predict: error: argument --topk: expected a number of at least 1"),
    (["predict", "x.jpg", "--batch-size", "two"], "effnet predict: error: argument --batch-size: expected a whole"),
    (["predict", "x.jpg", "--bogus"], "effnet predict: error: unrecognized arguments: --bogus"),
    (["info"], "effnet info: error: the following arguments are required: name"),
    (["info", "efficientnet_b0", "extra"], "effnet info: error: unrecognized arguments: extra"),
    (["list", "--bogus"], "effnet list: error: unrecognized arguments: --bogus"),
    (["train", "--epochs", "0"], "effnet train: error: argument --epochs: expected a number of at least 1, got 0"),
    (["train", "--batch-size", "0"], "effnet train: error: argument --batch-size: expected a number of at least 1"),
    (
        ["train", "--img-size", "5000"],
        "effnet train: error: argument --img-size: the image size must be between 8 and 2048 pixels, got 5000",
    ),
    (["train", "--lr", "fast"], "effnet train: error: argument --lr: invalid float value: 'fast'"),
    (["train", "--optimizer", "lion"], "effnet train: error: argument --optimizer: invalid choice: 'lion'"),
    (["train", "--mean", "0.5"], "effnet train: error: argument --mean: expected 3 arguments"),
    (["train", "--data"], "effnet train: error: argument --data: expected one argument"),
    (["train", "--bogus"], "effnet train: error: unrecognized arguments: --bogus"),
    (["eval"], "effnet eval: error: the following arguments are required: --weights, --data"),
    (["eval", "--weights", "w", "--data", "d", "--batch-size", "0"], "effnet eval: error: argument --batch-size"),
    (["eval", "--weights", "w", "--data", "d", "--img-size", "0"], "effnet eval: error: argument --img-size"),
    (["demo", "--subset", "0"], "effnet demo: error: argument --subset: expected a number of at least 1"),
    (["demo", "--epochs", "x"], "effnet demo: error: argument --epochs: expected a whole number, got 'x'"),
    (["report"], "effnet report: error: the following arguments are required: RUN_OR_REPORT"),
    (["report", "run", "--out"], "effnet report: error: argument --out: expected one argument"),
    (["bench"], "effnet bench: error: the following arguments are required: MODEL"),
    (["bench", "m", "--batch-sizes", "1,x"], "effnet bench: error: argument --batch-sizes: expected comma-separated"),
    (["bench", "m", "--runtime", "tensorrt"], "effnet bench: error: argument --runtime: expected some of torch"),
    (["bench", "m", "--precision", "int8"], "effnet bench: error: argument --precision: invalid choice: 'int8'"),
    (["bench", "m", "--repeats", "0"], "effnet bench: error: argument --repeats: expected a number of at least 1"),
    (["export"], "effnet export: error: the following arguments are required: --weights, --out"),
    (["export", "--weights", "w", "--out", "o", "--format", "tflite"], "effnet export: error: argument --format"),
    (["export", "--weights", "w", "--out", "o", "--opset", "0"], "effnet export: error: argument --opset"),
]


@pytest.mark.parametrize("argv, start", BAD_INVOCATIONS, ids=[" ".join(a) or "(none)" for a, _ in BAD_INVOCATIONS])
def test_a_bad_invocation_is_one_line_and_exit_status_2(capsys, argv, start):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.endswith("\n"), err  # no usage block above the message
    assert err.startswith(start), err
    command = "effnet" if start.startswith("effnet:") else f"effnet {argv[0]}"
    assert err.rstrip().endswith(f"see '{command} --help'")


def test_a_bad_flag_is_one_line_from_the_real_command_too():
    for argv in (["train", "--epochs", "0"], ["bench", "--threads"]):
        proc = subprocess.run([sys.executable, "-m", "effnet", *argv], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and proc.stdout == ""
        assert len(proc.stderr.splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith(f"effnet {argv[0]}: error: argument ")


def test_help_is_still_the_whole_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert out.startswith("usage: effnet train") and "--weight-decay" in out and "--eval-every" in out


def _parsers() -> list[argparse.ArgumentParser]:
    """``effnet`` and each of its commands' parsers."""
    top = build_parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    return [top, *sub.choices.values()]


def test_every_option_of_every_command_has_help_and_no_rst_markup():
    problems = []
    for parser in _parsers():
        for text in (parser.description, parser.epilog):
            if text and "``" in text:
                problems.append(f"{parser.prog}: backticks in {text[:60]!r}")
        for action in parser._actions:
            name = "/".join(action.option_strings) or action.dest
            if isinstance(action, argparse._SubParsersAction):
                helps = {choice.dest: choice.help for choice in action._choices_actions}
            else:
                helps = {name: action.help}
            for item, text in helps.items():
                if not text or text == argparse.SUPPRESS:
                    problems.append(f"{parser.prog} {item}: no help")
                elif "``" in text:
                    problems.append(f"{parser.prog} {item}: backticks in {text!r}")
    assert not problems, "\n".join(problems)
    assert len(_parsers()) == 1 + len(COMMANDS)  # effnet and every one of its commands were walked


def test_help_does_not_promise_commands_that_do_not_exist():
    commands = {p.prog.split()[1] for p in _parsers()[1:]}
    for parser in _parsers():
        text = parser.format_help().lower()
        # A word about compression may appear once the command that does it exists.
        for word, command in (
            ("compress", "compress"),
            ("prun", "prune"),
            ("quantiz", "quantize"),
            ("distil", "distill"),
        ):
            if command not in commands:
                assert word not in text, f"{parser.prog} --help mentions {word!r}"


def test_list_shows_the_baselines_train_accepts(capsys):
    assert main(["list", "--json"]) == 0
    rows = {r["model"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(effnet.list_models(baselines=True))
    for name in BASELINES:
        assert rows[name]["baseline"] is True and rows[name]["weights"] == ["tv_in1k"]
        assert rows[name]["resolution"] == 224
    assert rows["efficientnet_b0"]["baseline"] is False
    assert main(["list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert "torchvision baseline" in lines["resnet18"] and "torchvision baseline" not in lines["efficientnet_b0"]
    assert "shufflenet_v2_x1_0" in lines and "mobilenet_v3_small" in lines


# Each invocation runs in one fresh interpreter; after each, no PyTorch (or other heavy library)
# may have been imported.
_NO_TORCH = """
import sys
from effnet.cli import main
heavy = ("torch", "torchvision", "numpy", "onnx", "onnxruntime", "matplotlib", "PIL", "safetensors")
for argv in {argvs!r}:
    try:
        main(argv)
    except SystemExit as exc:
        assert exc.code == 0, (argv, exc.code)
    loaded = [m for m in heavy if m in sys.modules]
    assert not loaded, f"effnet {{' '.join(argv)}} imported {{loaded}}"
print("ok")
"""


def test_help_list_and_version_do_not_import_torch():
    commands = [p.prog.split()[1] for p in _parsers()[1:]]
    argvs = [["--help"], ["--version"], ["list"], ["list", "--json"], *[[c, "--help"] for c in commands]]
    proc = subprocess.run(
        [sys.executable, "-c", _NO_TORCH.format(argvs=argvs)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.rstrip().endswith("ok")


def test_import_effnet_is_light_and_its_api_loads_on_use():
    code = (
        "import sys, effnet\n"
        "assert 'torch' not in sys.modules\n"
        "from effnet import *\n"  # every name in __all__ resolves
        "assert 'torch' in sys.modules\n"
        "assert sorted(effnet.__all__) == sorted(set(effnet.__all__) & set(dir(effnet)))\n"
        "model = effnet.create_model('efficientnet_lite0', num_classes=3)\n"
        "assert isinstance(model, EfficientNet) and model.config.num_classes == 3\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        effnet.nonexistent  # noqa: B018 - the lookup is the test
