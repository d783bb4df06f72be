import pytest
import torch
from tests.conftest import randomize_batchnorm
from tests.export.tiny import IMG, plain_cnn, tiny_effnet
from torch import nn

import effnet
from effnet.bench import benchmark, reference_model
from effnet.errors import EffnetError
from effnet.export import export_model

CALLS: list[str] = []  # module-level: runners deep-copy their models


class _Recorder(nn.Module):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        CALLS.append(self.name)
        return self.conv(x).mean(dim=(2, 3))


class _Hungry(nn.Module):
    """Runs out of memory above batch size 2, the way PyTorch reports it."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.error = error

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 2:
            raise self.error
        return self.conv(x).mean(dim=(2, 3))


def test_models_are_timed_interleaved_and_results_are_plain_numbers():
    CALLS.clear()
    report = benchmark([("a", _Recorder("a")), ("b", _Recorder("b"))], img_size=16, warmup=2, repeats=5, threads=1)
    assert CALLS[-14:] == ["a", "b"] * 7  # 2 warm-up and 5 timed rounds, round-robin
    assert [r.model for r in report.results] == ["a", "b"]
    for r in report.results:
        assert r.error is None and r.repeats == 5 and r.runtime == "torch" and r.precision == "fp32"
        assert 0 < r.latency_ms_min <= r.latency_ms_median <= r.latency_ms_p90
        assert r.throughput_ips > 0 and r.peak_memory_mb > 0.0001 and r.params == 4 * 3 * 9 + 4
        assert r.flops == 2 * 4 * 3 * 9 * 14 * 14
        assert 0 < r.cpu_ms_median  # one thread: the timing thread's CPU time is recorded too
    assert report.threads == 1 and report.torch_version == torch.__version__ and report.cpu
    two = benchmark([("a", _Recorder("a"))], img_size=16, warmup=1, repeats=2, threads=2)
    assert two.results[0].cpu_ms_median is None  # other threads' work would be missing from it


def test_one_bad_input_does_not_stop_the_others(tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf" * 10)
    not_a_checkpoint = tmp_path / "notes.pth"
    not_a_checkpoint.write_text("hello")
    report = benchmark(
        [
            "efficientnet_b99",
            str(tmp_path / "missing.onnx"),
            str(garbage),
            str(not_a_checkpoint),
            ("good", plain_cnn()),
        ],
        img_size=32,
        warmup=0,
        repeats=2,
        measure_memory=False,
    )
    errors = {r.model.rsplit("/", 1)[-1]: r.error for r in report.results}
    assert "unknown model 'efficientnet_b99'" in errors["efficientnet_b99"]
    assert "no such ONNX file" in errors["missing.onnx"]
    assert "is not an ONNX model ONNX Runtime can load" in errors["garbage.onnx"]
    assert errors["notes.pth"] and "\n" not in errors["notes.pth"]
    assert errors["good"] is None and report.results[-1].latency_ms_median > 0


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 90000000000 bytes"),
    ],
)
@pytest.mark.parametrize("measure_memory", [True, False])
def test_a_batch_that_does_not_fit_names_a_smaller_one(error, measure_memory):
    report = benchmark(
        [("hungry", _Hungry(error)), ("fine", plain_cnn())],
        batch_sizes=[1, 8],
        img_size=16,
        warmup=1,
        repeats=2,
        measure_memory=measure_memory,
    )
    rows = {(r.model, r.batch_size): r for r in report.results}
    assert rows["hungry", 1].error is None and rows["hungry", 1].latency_ms_median > 0
    assert rows["hungry", 8].error == (
        "batch size 8 does not fit in memory on cpu; try a smaller one, e.g. --batch-sizes 4"
    )
    assert rows["fine", 8].error is None and rows["fine", 8].latency_ms_median > 0


def test_onnxruntime_runs_the_checked_export_and_onnx_files(tmp_path):
    model = tiny_effnet("same")
    onnx_file = tmp_path / "tiny.onnx"
    export_model(model, "onnx", onnx_file, img_size=IMG, dynamic_batch=False)  # a file fixed at batch 1
    report = benchmark(
        [("tiny", model), str(onnx_file)],
        runtimes=["torch", "onnxruntime"],
        batch_sizes=[1, 2],
        warmup=1,
        repeats=3,
        threads=1,
    )
    rows = {(r.model.rsplit("/", 1)[-1], r.runtime, r.batch_size): r for r in report.results}
    assert set(rows) == {
        (m, rt, b)
        for m, rt in [("tiny", "torch"), ("tiny", "onnxruntime"), ("tiny.onnx", "onnxruntime")]
        for b in (1, 2)
    }
    ort_row = rows["tiny", "onnxruntime", 2]
    assert ort_row.error is None and ort_row.latency_ms_median > 0 and ort_row.peak_memory_mb > 0
    assert ort_row.flops == rows["tiny", "torch", 2].flops  # the same network
    assert ort_row.params < rows["tiny", "torch", 2].params  # batch norms folded away
    file_row = rows["tiny.onnx", "onnxruntime", 1]
    assert file_row.error is None and file_row.img_size == IMG and file_row.source == "onnx"
    assert file_row.size_mb == pytest.approx(onnx_file.stat().st_size / 2**20, abs=0.01) and file_row.flops is None
    assert "exported for batch size 1" in rows["tiny.onnx", "onnxruntime", 2].error
    assert report.onnxruntime_version


def test_openvino_runs_the_export_and_onnx_files_on_the_timing_thread(tmp_path, monkeypatch):
    import sys

    model = tiny_effnet("same")
    onnx_file = tmp_path / "tiny.onnx"
    export_model(model, "onnx", onnx_file, img_size=IMG)
    report = benchmark(
        [("tiny", model), str(onnx_file)],
        runtimes=["onnxruntime", "openvino"],
        warmup=1,
        repeats=3,
        threads=1,
        measure_memory=False,
    )
    rows = {(r.model.rsplit("/", 1)[-1], r.runtime): r for r in report.results}
    assert set(rows) == {(m, rt) for m in ("tiny", "tiny.onnx") for rt in ("onnxruntime", "openvino")}
    for name in ("tiny", "tiny.onnx"):
        row, ort = rows[name, "openvino"], rows[name, "onnxruntime"]
        assert row.error is None and row.latency_ms_median > 0
        # One thread: OpenVINO computes on the timing thread, whose CPU time is then comparable to
        # ONNX Runtime's (a worker thread would leave it only the hand-off).
        assert row.cpu_ms_median > 0.2 * ort.cpu_ms_median
    assert rows["tiny", "openvino"].flops == rows["tiny", "onnxruntime"].flops
    monkeypatch.setitem(sys.modules, "openvino", None)
    report = benchmark([str(onnx_file)], runtimes=["openvino"], warmup=0, repeats=1, measure_memory=False)
    assert "needs the openvino package; pip install openvino" in report.results[0].error


def test_missing_onnxruntime_is_a_per_model_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    report = benchmark(
        [("cnn", plain_cnn())],
        runtimes=["onnxruntime", "torch"],
        img_size=16,
        warmup=0,
        repeats=2,
        measure_memory=False,
    )
    by_runtime = {r.runtime: r for r in report.results}
    assert "ONNX Runtime is not installed; pip install onnxruntime" in by_runtime["onnxruntime"].error
    assert by_runtime["torch"].error is None


def test_compile_runtime_and_lower_precision():
    report = benchmark(
        [("cnn", plain_cnn())],
        runtimes=["torch", "compile", "onnxruntime"],
        precision="bf16",
        img_size=16,
        warmup=1,
        repeats=2,
        compile_backend="eager",  # Inductor's C++ build takes minutes on 2 cores; the plumbing is the same
    )
    rows = {r.runtime: r for r in report.results}
    assert rows["torch"].precision == rows["compile"].precision == "bf16"
    assert rows["compile"].error is None and rows["compile"].latency_ms_median > 0
    assert rows["compile"].peak_memory_mb is None  # compiled graphs hide their allocations on CPU
    assert rows["torch"].size_mb == pytest.approx(
        sum(p.numel() * 2 for p in plain_cnn().state_dict().values() if p.is_floating_point()) / 2**20, abs=0.01
    )
    assert "use --precision fp32" in rows["onnxruntime"].error


def test_fuse_and_channels_last_measure_a_copy_and_leave_the_model_alone():
    model = plain_cnn()
    report = benchmark(
        [("cnn", model)], fuse=True, channels_last=True, img_size=16, warmup=0, repeats=2, measure_memory=False
    )
    assert report.results[0].error is None and report.results[0].latency_ms_median > 0
    assert report.results[0].params < sum(p.numel() for p in model.parameters())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert model[0].weight.is_contiguous()  # the caller's weights keep their memory format


def test_reference_models_hold_effnets_weights():
    b0 = randomize_batchnorm(effnet.create_model("efficientnet_b0"))
    lite0 = randomize_batchnorm(effnet.create_model("efficientnet_lite0"))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for library, model in [("torchvision", b0), ("timm", lite0)]:
            torch.testing.assert_close(reference_model(library, model)(x), model(x), rtol=1e-4, atol=1e-4)
    with pytest.raises(EffnetError, match="torchvision has no efficientnet_lite0; use --reference timm"):
        reference_model("torchvision", lite0)
    with pytest.raises(EffnetError, match="custom architecture"):
        reference_model("timm", tiny_effnet())


def test_reference_rows_follow_their_model():
    report = benchmark(
        ["efficientnet_b0", ("cnn", plain_cnn())],
        reference="torchvision",
        img_size=32,
        warmup=0,
        repeats=2,
        measure_memory=False,
    )
    rows = [(r.model, r.source, r.error is None) for r in report.results]
    assert rows[:2] == [("efficientnet_b0", "effnet", True), ("torchvision:efficientnet_b0", "torchvision", True)]
    assert rows[2] == ("cnn", "module", True)
    assert "needs an effnet EfficientNet" in report.results[3].error
    assert report.results[0].params == report.results[1].params == 5_288_548


@pytest.mark.parametrize(("model", "library"), [("efficientnet_b0", "torchvision"), ("efficientnet_lite0", "timm")])
def test_reference_takes_its_input_size_from_the_effnet_model(model, library):
    # The README's command: no --img-size, so the reference library's module (which records no
    # resolution) must get the size of the effnet model it mirrors.
    report = benchmark([model], reference=library, warmup=0, repeats=1, measure_memory=False)
    assert [(r.source, r.img_size, r.error) for r in report.results] == [("effnet", 224, None), (library, 224, None)]


def test_accuracy_on_an_image_folder_agrees_across_runtimes(tmp_path, sample_photos):
    from effnet.predict import classify

    model = effnet.create_model("efficientnet_lite0", weights="imagenet")
    for result in classify(model, list(sample_photos.values()), topk=1, device="cpu"):
        folder = tmp_path / str(result.predictions[0].index)
        folder.mkdir(exist_ok=True)
        (folder / result.image.rsplit("/", 1)[-1]).write_bytes(open(result.image, "rb").read())
    (tmp_path / "0").mkdir(exist_ok=True)  # a class with no images must not matter
    report = benchmark(
        ["efficientnet_lite0:imagenet"],
        runtimes=["torch", "onnxruntime", "openvino"],
        data=tmp_path,
        warmup=0,
        repeats=1,
        measure_memory=False,
    )
    assert [r.top1 for r in report.results] == [100.0, 100.0, 100.0]
    assert report.data == str(tmp_path) and report.to_dict()["data"] == str(tmp_path)  # what top-1 was measured on


def test_whole_call_mistakes_raise_before_measuring(tmp_path, monkeypatch):
    model = [("cnn", plain_cnn())]
    with pytest.raises(EffnetError, match="unknown runtime tensorrt"):
        benchmark(model, runtimes=["tensorrt"], img_size=16)
    with pytest.raises(EffnetError, match="batch sizes must be at least 1"):
        benchmark(model, batch_sizes=[0], img_size=16)
    with pytest.raises(EffnetError, match="expected a directory of class folders"):
        benchmark(model, data=tmp_path / "nope", img_size=16)
    with pytest.raises(EffnetError, match="unknown reference 'keras'"):
        benchmark(model, reference="keras", img_size=16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(EffnetError, match="cuda was requested but no CUDA GPU is available"):
        benchmark(model, device="cuda", img_size=16)
