import numpy as np
import pytest
import torch
from torch import nn

from effnet.bench.measure import TensorMemoryTracker, interleaved_timings, peak_memory_mb, percentile, tensor_bytes


def test_percentile_agrees_with_numpy():
    samples = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 7.5]
    for q in (0, 10, 50, 90, 100):
        assert percentile(samples, q) == pytest.approx(np.percentile(samples, q))


def test_candidates_are_timed_round_robin_and_a_failure_drops_only_that_one():
    calls = []
    failures = {}

    def make(name, fail_on=None):
        def run():
            calls.append(name)
            if len([c for c in calls if c == name]) == fail_on:
                raise RuntimeError("boom")

        return run

    ticks = iter(range(10_000))
    samples = interleaved_timings(
        {"a": make("a"), "b": make("b"), "c": make("c", fail_on=4)},
        repeats=5,
        warmup=2,
        on_error=lambda key, exc: failures.setdefault(key, str(exc)),
        clock=lambda: float(next(ticks)),  # a fake clock: 1 s per call
    )
    assert calls[:9] == ["a", "b", "c"] * 3
    assert calls[9:] == ["a", "b", "c"] + ["a", "b"] * 3  # c failed on its 4th call (2nd timed)
    assert failures == {"c": "boom"}
    assert samples["a"] == samples["b"] == [1000.0] * 5 and samples["c"] == [1000.0]


def test_consecutive_runs_go_back_to_back_in_each_round_and_stop_at_repeats():
    calls = []

    def make(name):
        return lambda: calls.append(name)

    ticks = iter(range(10_000))
    samples = interleaved_timings(
        {"a": make("a"), "b": make("b")},
        repeats=5,
        warmup=1,
        on_error=lambda key, exc: None,
        clock=lambda: float(next(ticks)),
        consecutive=3,
    )
    assert calls == ["a", "b"] + ["a"] * 3 + ["b"] * 3 + ["a"] * 2 + ["b"] * 2  # the last round tops up to 5
    assert samples == {"a": [1000.0] * 5, "b": [1000.0] * 5}


def test_cpu_time_leaves_out_waiting():
    import time

    def waits():
        time.sleep(0.02)  # as if another job held the core

    def works():
        end = time.thread_time() + 0.02
        while time.thread_time() < end:
            pass

    cpu = {}
    wall = interleaved_timings({"waits": waits, "works": works}, 3, 1, lambda k, e: None, cpu_samples=cpu)
    assert min(wall["waits"]) >= 19 and max(cpu["waits"]) < 5
    assert min(cpu["works"]) >= 19 and min(wall["works"]) >= min(cpu["works"]) - 1


def test_memory_tracker_sees_peak_live_tensors():
    x = torch.zeros(1024, 256)  # 1 MiB

    def work():
        a = x + 1  # 1 MiB live
        b = a * 2  # 2 MiB live
        del a
        c = b.view(-1)  # a view: no new memory
        return c.sum()

    tracker = TensorMemoryTracker()
    with tracker:
        work()
    assert tracker.peak == 2 * 2**20
    assert tracker.current == 0  # everything was freed


def test_peak_memory_counts_weights_and_activations():
    model = nn.Linear(256, 1024)
    x = torch.zeros(64, 256)
    mb = peak_memory_mb(model, lambda: model(x), torch.device("cpu"))
    weights = tensor_bytes(model)
    assert weights == (256 * 1024 + 1024) * 4
    assert mb * 2**20 == pytest.approx(weights + 64 * 1024 * 4)
