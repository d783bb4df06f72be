"""``scale_search`` and ``effnet scale-search``: the compound-coefficient grid search (Tan & Le 2019, §3.3)."""

import itertools
import json
import math

import pytest
import torch
from tests.training.conftest import make_image_folder

import effnet
import effnet.training.engine as engine
from effnet.cli import main
from effnet.models.efficientnet import EfficientNet
from effnet.models.summary import count_flops, count_params
from effnet.training.scale_search import Candidate, grid_candidates, scale_search

PAPER = Candidate(1.2, 1.1, 1.15)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on shared cores two threads wait on each other (measured 8x slower here)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _on_grid(value: float, step: float) -> bool:
    return math.isclose((value - 1.0) / step, round((value - 1.0) / step), abs_tol=1e-6)


@pytest.mark.parametrize(
    "step, grid_max, tolerance", [(0.05, 1.4, 0.1), (0.1, 1.4, 0.1), (0.05, 1.3, 0.05), (0.02, 1.2, 0.03)]
)
def test_every_candidate_satisfies_the_constraint_and_the_pool_is_complete(step, grid_max, tolerance):
    pool = grid_candidates(step, grid_max, tolerance, max_candidates=10_000)
    for c in pool:
        assert abs(c.alpha * c.beta**2 * c.gamma**2 - 2) <= tolerance + 1e-9
        assert min(c.alpha, c.beta, c.gamma) >= 1 and max(c.beta, c.gamma) <= grid_max + 1e-9
        assert all(_on_grid(v, step) for v in (c.alpha, c.beta, c.gamma))
    assert len(set(pool)) == len(pool)
    # An independent enumeration finds exactly the same triples.
    values = [1 + i * step for i in range(200)]
    expected = {
        (round(a, 6), round(b, 6), round(g, 6))
        for a, b, g in itertools.product(values, repeat=3)
        if b <= grid_max + 1e-9 and g <= grid_max + 1e-9 and abs(a * b * b * g * g - 2) <= tolerance + 1e-9
    }
    assert {(c.alpha, c.beta, c.gamma) for c in pool} == expected


def test_the_paper_point_comes_first_when_on_the_grid_and_within_tolerance():
    chosen = grid_candidates(0.05, 1.4, 0.1, max_candidates=6)
    assert chosen[0] == PAPER and len(chosen) == 6
    assert PAPER.product == pytest.approx(1.92, abs=1e-3)  # hence "about 2": a tolerance of 0.05 leaves it out
    assert PAPER not in grid_candidates(0.05, 1.4, 0.05, max_candidates=10_000)
    assert PAPER not in grid_candidates(0.1, 1.4, 0.1, max_candidates=10_000)  # 1.15 is not on a 0.1 grid


def test_candidates_are_spread_out_single_dimensions_first():
    chosen = grid_candidates(0.05, 1.4, 0.1, max_candidates=4)
    # after the paper's point: all depth, all width, all resolution
    assert set(chosen[1:]) == {Candidate(2.1, 1.0, 1.0), Candidate(1.0, 1.4, 1.0), Candidate(1.0, 1.0, 1.4)}
    assert grid_candidates(0.05, 1.4, 0.1, max_candidates=3) == chosen[:3]  # a prefix: stable as N grows


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"grid_step": 0.5}, "empty grid"),
        ({"grid_step": 0.3, "grid_max": 1.3, "tolerance": 0.001}, "no (alpha, beta, gamma) on the grid"),
        ({"tolerance": -0.1}, "tolerance must be zero or positive"),
        ({"img_scale": 0.01}, "change --img-scale"),
        ({"base": "efficientnet_b0_phi-1"}, "registered model"),
        ({"val_split": 1.5}, "val_split must be between 0 and 1"),
        ({"subset": 1}, "subset must be at least 2"),
    ],
)
def test_bad_settings_are_one_line_and_write_nothing(tmp_path, kwargs, message):
    data = make_image_folder(tmp_path / "data", classes=2, per_class=2)
    out = tmp_path / "search"
    with pytest.raises(effnet.EffnetError) as info:
        scale_search(data, out, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not out.exists()


def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "search"
    assert main(["scale-search", "--data", str(tmp_path / "nope"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such file or directory" in err
    assert not out.exists()

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    data = make_image_folder(tmp_path / "data", classes=2, per_class=2)
    assert main(["scale-search", "--data", str(data), "--out", str(taken)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not empty" in err and "--resume" in err
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]


def test_tiny_search_end_to_end_then_resume_skips_finished_candidates(tmp_path, capsys, monkeypatch):
    data = make_image_folder(tmp_path / "data", classes=2, per_class=6)
    out = tmp_path / "search"
    argv = [
        "scale-search", "--data", str(data), "--out", str(out), "--base", "efficientnet_lite0",
        "--max-candidates", "2", "--img-scale", "0.125", "--batch-size", "4", "--workers", "0",
        "--val-split", "0.25", "--device", "cpu", "--runtime", "torch", "--repeats", "1", "--threads", "1",
    ]  # fmt: skip
    trained = []
    real_fit = engine.fit

    def counting_fit(model, *args, **kwargs):
        trained.append((kwargs["recipe"]["out"], kwargs["recipe"]["resume"]))
        return real_fit(model, *args, **kwargs)

    monkeypatch.setattr(engine, "fit", counting_fit)
    assert main(argv) == 0
    out_text = capsys.readouterr().out
    record = json.loads((out / "scale_search.json").read_text())
    rows = record["candidates"]
    assert [r["index"] for r in rows] == [0, 1] and len(trained) == 2
    assert (rows[0]["alpha"], rows[0]["beta"], rows[0]["gamma"]) == (1.2, 1.1, 1.15)
    assert "1905.11946" in record["paper"] and record["settings"]["max_candidates"] == 2
    base_flops = count_flops(EfficientNet(effnet.get_config("efficientnet_lite0").replace(num_classes=2)), 224)
    for row in rows:
        config = effnet.get_config(row["name"])  # the name builds the candidate's phi = 1 member
        assert (config.depth_mult, config.width_mult) == pytest.approx((row["alpha"], row["beta"]))
        assert row["product"] == pytest.approx(row["alpha"] * row["beta"] ** 2 * row["gamma"] ** 2)
        assert abs(row["product"] - 2) <= 0.1 + 1e-9
        multipliers = (row["depth_mult"], row["width_mult"], row["resolution_mult"])
        assert multipliers == (row["alpha"], row["beta"], row["gamma"])
        assert row["resolution"] == config.resolution and row["train_img_size"] == round(config.resolution * 0.125)
        model = EfficientNet(config.replace(num_classes=2))
        assert row["params"] == count_params(model)
        assert row["flops"] == count_flops(model, config.resolution)  # at its own resolution, not the training one
        assert 1.5 < row["flops"] / base_flops < 3  # phi = 1 about doubles the base's FLOPs
        assert 0 <= row["top1"] <= 100 and row["latency_ms"] > 0 and row["latency_error"] is None
        summary = json.loads((out / "runs" / str(row["index"]) / "summary.json").read_text())
        assert summary["best_val_top1"] == row["top1"] and summary["img_size"] == row["train_img_size"]
        assert summary["model"] == row["name"]
    best = max(rows, key=lambda r: (r["top1"], -r["flops"]))
    assert record["best"] == best["index"]
    assert record["latency"]["runtime"] == "torch" and record["latency"]["batch_size"] == 1
    lines = out_text.splitlines()
    assert lines[0].split()[:2] == ["best", "k"] and lines[2].startswith("*")  # best first, marked
    assert f"best: alpha {best['alpha']:g}" in out_text

    # --resume with everything finished trains nothing and keeps the results.
    trained.clear()
    assert main([*argv, "--resume"]) == 0
    capsys.readouterr()
    assert trained == []
    again = json.loads((out / "scale_search.json").read_text())
    assert [r["top1"] for r in again["candidates"]] == [r["top1"] for r in rows]

    # A run that did not finish is continued; the finished one is still skipped.
    (out / "runs" / "1" / "summary.json").unlink()
    assert main([*argv, "--resume"]) == 0
    capsys.readouterr()
    assert trained == [(str(out / "runs" / "1"), True)]
    assert json.loads((out / "scale_search.json").read_text())["candidates"][1]["top1"] == rows[1]["top1"]

    # Resuming with settings that change the candidates or their results is refused.
    changed = [*argv, "--resume", "--max-candidates", "3"]
    assert main(changed) == 1
    assert "max_candidates" in capsys.readouterr().err
