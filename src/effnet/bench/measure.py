"""Measurement primitives: interleaved timing, percentiles, memory, size and the machine's name.

Timing follows the usual discipline (as in nanoGPT's ``bench.py`` and ``torch.utils.benchmark``):
warm-up runs first (allocator, thread pools, lazy initialisation, compilation), then many
timed runs with the device synchronised before the clock stops, reported as the median and
the 90th percentile. Several candidates are timed *round-robin*, one run each per repetition,
so a noisy neighbour slows them all alike and their ratio stays meaningful; or a few runs back
to back per round (``consecutive``), so each model runs with its own weights in the caches, as
a model serving requests alone does, while the rounds still alternate.
"""

from __future__ import annotations

import math
import platform
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

MiB = float(2**20)


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation, as ``numpy.percentile`` computes it."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    position = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def interleaved_timings(
    runs: dict[str, Callable[[], None]],
    repeats: int,
    warmup: int,
    on_error: Callable[[str, BaseException], None],
    clock: Callable[[], float] | None = None,
    cpu_samples: dict[str, list[float]] | None = None,
    consecutive: int = 1,
) -> dict[str, list[float]]:
    """Time each callable ``repeats`` times in round-robin order after ``warmup`` untimed runs,
    ``consecutive`` runs of a callable back to back in each round (every one timed).

    Returns milliseconds per run for each key. A callable that raises is reported to
    ``on_error`` once and dropped; the others carry on. Each callable must synchronise its
    device before returning. With ``cpu_samples`` (a dict to fill), the calling thread's CPU
    time per run is recorded too: for work that runs on the calling thread (one intra-op
    thread on the CPU) it is the latency without the time spent waiting while other jobs
    hold the cores.
    """
    import time

    clock = clock or time.perf_counter
    live = dict(runs)
    samples: dict[str, list[float]] = {key: [] for key in runs}
    if cpu_samples is not None:
        cpu_samples.update({key: [] for key in runs})

    def attempt(key: str, timed: bool) -> None:
        try:
            cpu_start = time.thread_time()
            start = clock()
            live[key]()
            elapsed = clock() - start
            cpu = time.thread_time() - cpu_start
        except Exception as exc:  # reported per candidate; the others are still measured
            del live[key]
            on_error(key, exc)
            return
        if timed:
            samples[key].append(elapsed * 1e3)
            if cpu_samples is not None:
                cpu_samples[key].append(cpu * 1e3)

    for _ in range(warmup):
        for key in list(live):
            attempt(key, timed=False)
    for _ in range(-(-repeats // consecutive)):
        for key in list(live):
            for _ in range(min(consecutive, repeats - len(samples[key]))):
                if key in live:
                    attempt(key, timed=True)
    return samples


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TensorMemoryTracker(TorchDispatchMode):
    """Peak bytes of live tensors produced while the mode is active (any device, eager PyTorch).

    Every tensor an operator returns is counted once per storage until the last Python
    reference to it dies. It sees what PyTorch allocates for activations and outputs, not
    scratch memory inside kernels (oneDNN workspaces), so it is a lower bound; it does not
    work inside compiled graphs.
    """

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self._live: dict[int, list[int]] = {}  # storage address -> [bytes, references]

    def _release(self, address: int) -> None:
        entry = self._live.get(address)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self._live[address]

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        # Views and in-place results share an input's storage: not new memory (weights included).
        inputs = {
            t.untyped_storage().data_ptr()
            for t in tree_flatten((args, kwargs))[0]
            if isinstance(t, torch.Tensor) and t.device.type != "meta"
        }
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
                continue
            storage = tensor.untyped_storage()
            address = storage.data_ptr()
            if address in inputs and address not in self._live:
                continue
            if address in self._live:
                self._live[address][1] += 1
            else:
                self._live[address] = [storage.nbytes(), 1]
                self.current += storage.nbytes()
                self.peak = max(self.peak, self.current)
            weakref.finalize(tensor, self._release, address)
        return out


def tensor_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers, each storage counted once."""
    seen: dict[int, int] = {}
    for tensor in [*module.parameters(), *module.buffers()]:
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def peak_memory_mb(module: nn.Module, run_once: Callable[[], None], device: torch.device) -> float | None:
    """Weights plus the peak activation memory of one forward pass, in MiB.

    CUDA uses the caching allocator's own peak counter; elsewhere a :class:`TensorMemoryTracker`
    watches one eager pass.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        run_once()
        return torch.cuda.max_memory_allocated(device) / MiB
    tracker = TensorMemoryTracker()
    with tracker:
        run_once()
    return (tensor_bytes(module) + tracker.peak) / MiB


def cpu_name() -> str:
    """The processor's marketing name (``/proc/cpuinfo``'s model name on Linux)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> set[str]:
    """The processor's feature flags (``/proc/cpuinfo`` on Linux; empty where unknown)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return str(device)
