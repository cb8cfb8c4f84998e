"""The runtime interface: one input layout, explicit threads, runtime-only timing, fresh-process cold start, records."""

import numpy as np
import pytest
import torch

from course_lib import capstone, measure, onnx_io, runtimes


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory, digits):
    model = capstone.cnn(channels=(8, 16), hidden=16, seed=0).eval()
    path = tmp_path_factory.mktemp("rt") / "tiny.onnx"
    onnx_io.export_onnx(model, torch.as_tensor(digits.x_train[:4]), path)
    return model, path


def test_eager_and_file_take_the_same_input_and_agree(onnx_file, digits):
    model, path = onnx_file
    eager, ort = runtimes.wrap(model), runtimes.load(path)
    assert (eager.threads, ort.threads) == (1, 1)
    x = digits.x_test[:300]
    np.testing.assert_allclose(eager.predict(x, batch_size=64), ort.predict(x), atol=1e-4)
    assert ort.size().bytes == runtimes.artefact_size(path).bytes > 0  # external data counted
    with pytest.raises(ValueError, match="N × C × H × W"):
        ort.predict(digits.x_test[0])
    with pytest.raises(ValueError, match="unknown artefact format"):
        runtimes.load(path.with_suffix(".bin"))
    with pytest.raises(ValueError, match="threads"):
        runtimes.load(path, threads=0)


def test_interleaved_timing_gives_spreads_ratios_and_wrapper_cost(onnx_file, digits):
    model, path = onnx_file
    models = {"eager": runtimes.wrap(model), "onnx": runtimes.load(path)}
    torch.set_num_threads(2)  # whatever the suite's cap: timing on one thread must restore it
    timings = runtimes.time_interleaved(models, digits.x_test[:1], rounds=3, repeats=5, warmup=2, wrapper=True)
    for timing in timings.values():
        assert len(timing.round_medians_ms) == 3 and timing.threads == 1 and timing.batch_size == 1
        assert timing.min_ms <= timing.median_ms * 1.5 and timing.min_ms <= timing.max_ms
        assert timing.wrapper_overhead_ms is not None
    ratio = runtimes.speedup(timings["eager"], timings["onnx"])
    assert ratio.low <= ratio.estimate <= ratio.high
    assert torch.get_num_threads() == 2  # PyTorch's thread count restored after timing on one thread
    with pytest.raises(ValueError, match="same thread count"):
        runtimes.time_interleaved({"a": runtimes.wrap(model, threads=2), "b": runtimes.load(path)}, digits.x_test[:1])


def test_cold_start_in_a_fresh_process(onnx_file, digits):
    _, path = onnx_file
    start = runtimes.cold_start(runtimes.load(path), digits.x_test[:1])
    assert start.load_ms > 0 and start.first_call_ms > 0 and start.import_ms > 0
    assert 0 < start.runtime_peak_bytes < start.peak_rss_bytes
    assert start.peak_rss_bytes < 400 * 1024 * 1024  # numpy + onnxruntime only: no torch in the fresh process
    assert 10e6 < start.runtime_library_bytes < 200e6  # onnxruntime's native libraries, as mapped


def test_measure_writes_complete_records(onnx_file, digits):
    model, path = onnx_file
    reference = runtimes.wrap(model).predict(digits.x_test)
    records = runtimes.measure({"eager": runtimes.wrap(model), "onnx": runtimes.load(path)}, digits.x_test, digits.y_test,
                               reference_logits=reference, rounds=2, repeats=3, steps={"onnx": "int8"})
    eager, onnx = records
    assert eager.params and eager.macs and eager.cold_start_ms is None
    assert onnx.cold_start_ms > 0 and onnx.peak_memory_bytes > 0 and onnx.step == "int8"
    for record in records:
        assert record.threads == 1 and record.images == len(digits.y_test)
        assert record.top1_low <= record.top1 <= record.top1_high
        assert record.latency_min_ms <= record.latency_max_ms
        assert "agreement 1.000" in record.notes


def test_compiled_model_runs_on_its_threads_and_one_shape(digits):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10)).eval()
    compiled = runtimes.wrap_compiled(model, digits.x_test[:4], threads=1)
    assert compiled.threads == 1 and compiled.compile_seconds > 0 and compiled.framework == "pytorch-compiled"
    # 10 images in chunks of the compiled batch of 4 (the last one padded): the same logits as eager
    np.testing.assert_allclose(compiled.predict(digits.x_test[:10]), runtimes.wrap(model).predict(digits.x_test[:10]), atol=1e-5)
    timings = runtimes.time_interleaved({"eager": runtimes.wrap(model), "compiled": compiled}, digits.x_test[:4],
                                        rounds=2, repeats=3, warmup=1)
    assert timings["compiled"].batch_size == 4 and timings["compiled"].threads == 1
    assert compiled.size().bytes == runtimes.wrap(model).size().bytes
    with pytest.raises(ValueError, match="compiled for batch 4"):
        compiled.runtime_call(digits.x_test[:1])
    with pytest.raises(ValueError, match="compiled for images of shape"):
        compiled.predict(np.zeros((2, 1, 4, 4), np.float32))


def test_thread_clock_times_cpu_time_of_eager_models_and_refuses_what_it_cannot_see():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    x = np.zeros((1, 1, 8, 8), dtype=np.float32)
    timing = runtimes.time_interleaved({"m": runtimes.wrap(model)}, x, rounds=2, repeats=3, warmup=1, clock="thread")["m"]
    assert timing.median_ms > 0 and len(timing.round_medians_ms) == 2
    with pytest.raises(ValueError, match="1 thread"):
        runtimes.time_interleaved({"m": runtimes.wrap(model, threads=2)}, x, rounds=2, clock="thread")
    with pytest.raises(ValueError, match="clock must be one of"):
        measure.measure_latency(model, torch.from_numpy(x), repeats=1, clock="cpu")
