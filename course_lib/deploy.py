"""Deployable artefacts and their runtimes: ExecuTorch ``.pte`` (XNNPACK on CPU).

ExecuTorch replaces PyTorch Mobile (and TorchScript on devices): a model is
captured with ``torch.export``, lowered to the Edge dialect, the supported
parts are delegated to a backend (XNNPACK for CPUs), and the result is a
flatbuffer ``.pte`` that a small C++ runtime executes — the same file on
Android, iOS, Linux and microcontrollers. Here we run it with ExecuTorch's
Python bindings of that runtime.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


def export_executorch(
    model: nn.Module, example: torch.Tensor, path: str | Path, dynamic_batch: bool = True, max_batch: int = 1024
) -> Path:
    """Lower ``model`` (an eager model, or a PT2E-quantized graph) to an XNNPACK-delegated ``.pte`` at ``path``.

    A PT2E-quantized graph is lowered to XNNPACK's int8 kernels. With
    ``dynamic_batch`` the file accepts batches 1…``max_batch``; export with an
    example of at least 2 samples (a batch of 1 would be fixed in the graph).
    Lowering takes seconds: cache the file rather than rebuilding it.
    """
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from course_lib.measure import example_batch, set_mode

    example = example_batch(example, dynamic_batch)
    set_mode(model, False)
    shapes = ({0: torch.export.Dim("batch", min=1, max=max_batch)},) if dynamic_batch else None
    exported = torch.export.export(model, (example,), dynamic_shapes=shapes)
    program = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()]).to_executorch()
    path = Path(path)
    path.write_bytes(program.buffer)
    return path


class ExecuTorchModel:
    """A ``.pte`` loaded with the ExecuTorch runtime, callable on batches (NumPy or torch, N × C × H × W)."""

    def __init__(self, path: str | Path) -> None:
        from executorch.runtime import Runtime

        from course_lib import _stderr_silenced

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no .pte file at {path}: build one with course_lib.deploy.export_executorch")
        start = time.perf_counter()
        # The runtime's CPU probe prints a few "[cpuinfo_utils.cpp:…]" lines to fd 2 on load.
        with _stderr_silenced():
            self.program = Runtime.get().load_program(str(path))
            self.method = self.program.load_method("forward")
        self.load_seconds = time.perf_counter() - start
        self.path = path
        # Sizes of a dynamic dimension are its upper bound. The runtime does not
        # check the other dimensions itself (a wrong shape gave garbage, not an
        # error), so we do.
        self.max_input_shape = tuple(self.method.metadata.input_tensor_meta(0).sizes())

    def __call__(self, x: Any) -> np.ndarray:
        """Logits for one batch."""
        tensor = torch.as_tensor(np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x, dtype=torch.float32)
        limit = self.max_input_shape
        if tensor.dim() != len(limit) or tuple(tensor.shape[1:]) != limit[1:] or tensor.shape[0] > limit[0]:
            raise ValueError(
                f"{self.path.name} failed on input of shape {tuple(tensor.shape)}: it takes N × "
                f"{' × '.join(map(str, limit[1:]))} with N ≤ {limit[0]} (the shape it was exported with)"
            )
        try:
            return self.method.execute([tensor.contiguous()])[0].numpy()
        except RuntimeError as error:
            raise ValueError(
                f"{self.path.name} failed on input of shape {tuple(tensor.shape)} ({error}); "
                "check the shape the model was exported with (and its batch range)"
            ) from None

    def predict(self, x: Any, batch_size: int = 256) -> np.ndarray:
        """Logits for a whole array, in batches."""
        return np.concatenate([self(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


class executorch_threads:
    """Context manager: run ExecuTorch's XNNPACK kernels on ``threads`` threads, then restore the pool.

    The ExecuTorch runtime keeps one process-wide thread pool (all cores by
    default); its Python bindings can only reset it as a whole, so do not
    change it while another thread is running a ``.pte``.
    """

    def __init__(self, threads: int | None) -> None:
        self.threads = threads
        self._previous: int | None = None

    def __enter__(self) -> executorch_threads:
        if self.threads is not None:
            from executorch.extension.pybindings import portable_lib

            from course_lib import _stderr_silenced

            with _stderr_silenced():  # the runtime logs its CPU probe and every reset to fd 2
                self._previous = int(portable_lib._threadpool_get_thread_count())
                portable_lib._unsafe_reset_threadpool(int(self.threads))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            from executorch.extension.pybindings import portable_lib

            from course_lib import _stderr_silenced

            with _stderr_silenced():
                portable_lib._unsafe_reset_threadpool(self._previous)


# --- one model, three runtimes ----------------------------------------------------------------


def load_artefact(path: str | Path) -> Any:
    """An artefact loaded in its own runtime (one thread for ONNX Runtime and LiteRT), callable on a batch.

    Inputs are what the runtime takes: N × C × H × W for ``.pte`` / ``.onnx``,
    N × H × W × C for ``.tflite``.
    """
    path = Path(path)
    return _loader_for(path.suffix)(path)


def _loader_for(fmt: str) -> Any:
    if fmt == ".pte":
        return ExecuTorchModel
    if fmt == ".onnx":
        from course_lib.onnx_io import OrtModel

        return lambda path: OrtModel(path, threads=1)
    if fmt == ".tflite":
        from course_lib.tflite import LiteRTModel

        return lambda path: LiteRTModel(path, threads=1)
    raise ValueError(f"unknown artefact format {fmt!r}; expected .pte, .onnx or .tflite")


def artefact_bytes(path: str | Path) -> tuple[int, int]:
    """Raw and gzip bytes of an artefact, external data included (ONNX's ``.data`` file)."""
    from course_lib.measure import gzip_size

    path = Path(path)
    files = [path]
    if path.suffix == ".onnx":
        from course_lib.onnx_io import external_data_files

        files += external_data_files(path)
    blobs = [p.read_bytes() for p in files]
    return sum(len(b) for b in blobs), sum(gzip_size(b) for b in blobs)


def measure_artefact(
    name: str,
    path: str | Path,
    x_test: np.ndarray,
    y_test: np.ndarray,
    reference_logits: np.ndarray,
    repeats: int = 300,
    notes: str = "",
    executorch_threads_count: int | None = None,
) -> Any:
    """Load ``path`` in its own runtime and measure it the same way as every other artefact.

    Inputs are N × C × H × W (PyTorch's layout); ``.tflite`` artefacts get them
    transposed to N × H × W × C. Measured: bytes and gzip bytes, cold-start
    load time (``notes``), memory growth of loading plus the first call,
    latency at batch 1 (median and p90; one thread for ONNX Runtime and
    LiteRT; ExecuTorch's default pool unless ``executorch_threads_count`` is
    given), top-1 on ``(x_test, y_test)`` and top-1 agreement with
    ``reference_logits`` (the PyTorch model's).
    """
    from course_lib.measure import agreement, measure_latency, peak_memory
    from course_lib.report import Record

    path = Path(path)
    fmt = path.suffix
    x = np.ascontiguousarray(x_test.transpose(0, 2, 3, 1)) if fmt == ".tflite" else np.ascontiguousarray(x_test)
    load = _loader_for(fmt)
    runtime_box: list[Any] = []
    cold_seconds = [0.0]

    def cold_start() -> None:
        # Timed inside: peak_memory's own bookkeeping (resetting the kernel's counter) is not load time.
        start = time.perf_counter()
        runtime_box.append(load(path))
        runtime_box[0](x[:1])
        cold_seconds[0] = time.perf_counter() - start

    threads = executorch_threads_count if fmt == ".pte" else None
    with executorch_threads(threads):
        memory = peak_memory(cold_start)
        runtime = runtime_box[0]
        latency = measure_latency(runtime, x[:1], warmup=30, repeats=repeats)
        logits = runtime.predict(x)
    raw, gz = artefact_bytes(path)
    framework = {".pte": "executorch", ".onnx": "onnxruntime", ".tflite": "litert"}[fmt]
    return Record(
        name=name, framework=framework, format=fmt, bytes=raw, gzip_bytes=gz,
        latency_ms=latency.median_ms, latency_p90_ms=latency.p90_ms, threads=1 if fmt != ".pte" else threads, batch_size=1,
        peak_memory_bytes=memory.peak_bytes, top1=float((logits.argmax(1) == y_test).mean()),
        notes=f"cold start {1000 * cold_seconds[0]:.1f} ms; agreement {agreement(reference_logits, logits).top1_agreement:.3f}"
        + (f"; {notes}" if notes else ""),
    )


def measure_pytorch(
    name: str, model: nn.Module, x_test: np.ndarray, y_test: np.ndarray, reference_logits: np.ndarray | None = None,
    repeats: int = 300, notes: str = "",
) -> Any:
    """Measure an eager PyTorch model like :func:`measure_artefact` measures a file: one :class:`Record`.

    Size is the ``state_dict`` saved with ``torch.save`` (raw and gzip);
    parameters count non-zeros too (pruned weights are zeros, not gone);
    latency is batch 1 on one thread; agreement (in ``notes``) is with
    ``reference_logits`` when given.
    """
    from course_lib.measure import agreement, count_macs, count_parameters, measure_latency, state_dict_size
    from course_lib.report import Record
    from course_lib.train import predict_logits

    one = torch.as_tensor(np.ascontiguousarray(x_test[:1]))
    latency = measure_latency(model, one, warmup=30, repeats=repeats, threads=1)
    size = state_dict_size(model)
    logits = predict_logits(model, x_test)
    extra = [f"agreement {agreement(reference_logits, logits).top1_agreement:.3f}"] if reference_logits is not None else []
    return Record(
        name=name, framework="pytorch", format="state_dict", bytes=size.bytes, gzip_bytes=size.gzip_bytes,
        params=count_parameters(model), nonzero_params=count_parameters(model, nonzero=True), macs=count_macs(model, one),
        latency_ms=latency.median_ms, latency_p90_ms=latency.p90_ms, threads=1, batch_size=1,
        top1=float((logits.argmax(1) == y_test).mean()), notes="; ".join(extra + ([notes] if notes else [])),
    )


def build_artefacts(model: nn.Module, split: Any, folder: str | Path, int8: bool = True, calibration_images: int = 256) -> dict[str, Path]:
    """Build the deployable artefacts of one trained :class:`~course_lib.models.SmallCNN`.

    fp32 and (with ``int8``) int8 versions of: ExecuTorch ``.pte`` (PT2E +
    XNNPACK), ONNX (dynamo export; ORT static QDQ) and LiteRT ``.tflite`` (the
    Keras twin with the same weights; full-integer conversion). Calibration
    uses the first ``calibration_images`` training images for all three.
    """
    from course_lib import onnx_io, quantize, tflite
    from course_lib.models.keras_twin import keras_twin_of

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    calibration = np.ascontiguousarray(split.x_train[:calibration_images])
    example = torch.as_tensor(calibration[:32])
    artefacts = {
        "ExecuTorch fp32": export_executorch(model, example, folder / "model_fp32.pte"),
        "ONNX Runtime fp32": onnx_io.export_onnx(model, example, folder / "model_fp32.onnx"),
    }
    twin = keras_twin_of(model)
    calibration_nhwc = np.ascontiguousarray(calibration.transpose(0, 2, 3, 1))
    artefacts["LiteRT fp32"] = folder / "model_fp32.tflite"
    tflite.convert_keras(twin, "fp32", path=artefacts["LiteRT fp32"])
    if int8:
        batches = [torch.as_tensor(calibration[i : i + 64]) for i in range(0, len(calibration), 64)]
        quantized = quantize.static_quantize(model, example, batches)
        artefacts["ExecuTorch int8"] = export_executorch(quantized, example, folder / "model_int8.pte")
        artefacts["ONNX Runtime int8"] = onnx_io.ort_quantize_static(
            artefacts["ONNX Runtime fp32"], folder / "model_int8.onnx", calibration
        )
        artefacts["LiteRT int8"] = folder / "model_int8.tflite"
        tflite.convert_keras(twin, "int8", representative=calibration_nhwc, path=artefacts["LiteRT int8"])
    return artefacts


def compare_runtimes(model: nn.Module, split: Any, folder: str | Path, int8: bool = True) -> list[Any]:
    """Build every artefact of ``model`` and measure each in its own runtime: one record per artefact."""
    from course_lib.train import predict_logits

    artefacts = build_artefacts(model, split, folder, int8=int8)
    reference = predict_logits(model, split.x_test)
    return [measure_artefact(name, path, split.x_test, split.y_test, reference) for name, path in artefacts.items()]


def predict_artefact(path: str | Path, x: np.ndarray) -> np.ndarray:
    """Logits of any artefact (``.pte``, ``.onnx``, ``.tflite``) for N × C × H × W inputs, in its own runtime."""
    path = Path(path)
    x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if path.suffix == ".tflite" else np.ascontiguousarray(x)
    return _loader_for(path.suffix)(path).predict(x)


def artefact_latency_ms(path: str | Path, x: np.ndarray, repeats: int = 200) -> float:
    """Median latency (ms) of one call on ``x`` (e.g. a batch of 1), after a warm-up, in the artefact's runtime."""
    from course_lib.measure import measure_latency

    path = Path(path)
    x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if path.suffix == ".tflite" else np.ascontiguousarray(x)
    return measure_latency(_loader_for(path.suffix)(path), x, warmup=20, repeats=repeats).median_ms
