"""One interface to every runtime the course measures, and the one way to measure them into records.

PyTorch eager, ExecuTorch (``.pte``), ONNX Runtime (``.onnx``) and LiteRT
(``.tflite``) each load, lay out, quantize and thread differently. If every
lecture handled that itself, every lecture would measure something slightly
different — and the differences (a NumPy quantization inside one timed call,
a default thread pool in another) would become the "results". So:

* :func:`load` / :func:`wrap` give a :class:`LoadedModel` for any file or eager
  module (:func:`wrap_compiled` for one compiled by ``torch.compile``). It
  takes **float N × C × H × W** input (the adapter owns the layout:
  the NHWC transpose for LiteRT lives in :meth:`LoadedModel.runtime_input`
  only) and runs on an explicit number of ``threads`` — 1 means 1 in every
  runtime, ExecuTorch's process-wide pool included.
* :meth:`LoadedModel.predict` — logits for a whole array, batched (accuracy).
* :meth:`LoadedModel.runtime_call` — a zero-argument callable that runs only
  the runtime, its input prepared once beforehand (LiteRT: input set, then
  ``invoke()``; ONNX Runtime: ``session.run`` on ready feeds; ExecuTorch:
  ``method.execute``). That is what latency means here; the course's
  wrapper (conversion, layout, quantization) is timed apart by
  :func:`time_interleaved` as ``wrapper_overhead_ms``.
* :func:`time_interleaved` — several models timed in interleaved rounds, with
  per-round medians for spreads and paired ratio intervals (:func:`speedup`).
* :func:`cold_start` — load + first call of one file in a fresh process that
  imports only NumPy and that file's runtime, with the process's peak memory.
* :func:`measure` — all of it for a set of models, one
  :class:`~course_lib.report.Record` each.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from course_lib import measure as _measure
from course_lib import stats
from course_lib.report import Record

#: File suffix → framework name used in records.
FRAMEWORKS = {".pte": "executorch", ".onnx": "onnxruntime", ".tflite": "litert"}


def _check_threads(threads: Any) -> int:
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer (1 = one thread in every runtime), got {threads!r}")
    return threads


def _float_nchw(x: Any) -> np.ndarray:
    array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if array.ndim != 4:
        raise ValueError(f"expected a float batch N × C × H × W, got shape {array.shape}; for one image use x[None]")
    return np.ascontiguousarray(array, dtype=np.float32)


class LoadedModel(ABC):
    """A model ready to run in one runtime on ``threads`` threads; input is always float N × C × H × W."""

    framework: str
    format: str
    threads: int
    path: Path | None = None

    @abstractmethod
    def runtime_input(self, x: np.ndarray) -> Any:
        """``x`` (float NCHW) converted once into what the runtime takes (layout, dtype, quantization)."""

    @abstractmethod
    def runtime_call(self, x: Any) -> Callable[[], Any]:
        """A callable that runs only the runtime on ``x``; everything else is done before it is returned."""

    @abstractmethod
    def _logits(self, x: np.ndarray) -> np.ndarray:
        """Float logits for one float NCHW batch, through the runtime."""

    @contextlib.contextmanager
    def threads_applied(self) -> Iterator[None]:
        """A context in which the runtime uses ``threads`` (for runtimes whose thread count is process-wide)."""
        yield

    def __call__(self, x: Any) -> np.ndarray:
        """Logits for one batch (float NCHW): the course's wrapper around the runtime."""
        with self.threads_applied():
            return self._logits(_float_nchw(x))

    def predict(self, x: Any, batch_size: int = 256) -> np.ndarray:
        """Logits for a whole array, in batches of ``batch_size`` (the one batching loop of the course)."""
        array = _float_nchw(x)
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        with self.threads_applied():
            return np.concatenate([self._logits(array[i : i + batch_size]) for i in range(0, len(array), batch_size)])

    def size(self) -> _measure.Size:
        """Raw and gzip bytes of what ships: the file (and its external data) or the saved ``state_dict``."""
        if self.path is None:
            raise ValueError("this model has no file; save or export it first")
        return artefact_size(self.path)


class PyTorchModel(LoadedModel):
    """An eager ``nn.Module`` (eval + inference mode) on ``threads`` PyTorch intra-op threads."""

    framework, format = "pytorch", "state_dict"

    def __init__(self, model: nn.Module, threads: int = 1) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"wrap needs a torch.nn.Module, got {type(model).__name__}")
        self.model = _measure.set_mode(model, False)
        self.threads = _check_threads(threads)

    @contextlib.contextmanager
    def threads_applied(self) -> Iterator[None]:
        previous = torch.get_num_threads()
        if previous != self.threads:
            torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            if torch.get_num_threads() != previous:
                torch.set_num_threads(previous)

    def runtime_input(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(_float_nchw(x))

    def runtime_call(self, x: Any) -> Callable[[], Any]:
        tensor, model = self.runtime_input(x), self.model
        _measure.run_model(model, tensor)  # a wrong shape fails here, clearly, not inside the timing

        def call() -> Any:
            with torch.inference_mode():
                return model(tensor)

        return call

    def _logits(self, x: np.ndarray) -> np.ndarray:
        return _measure.run_model(self.model, torch.from_numpy(x)).float().numpy()

    def size(self) -> _measure.Size:
        return _measure.state_dict_size(self.model)


class CompiledModel(PyTorchModel):
    """An ``nn.Module`` compiled by ``torch.compile`` (Inductor) for one input shape, on ``threads`` threads.

    Some PyTorch paths are only fast compiled: torchao's quantized tensor
    subclasses pay Python dispatch on every op in eager mode, and a PT2E int8
    graph computes in float with quantize / dequantize steps until Inductor
    fuses them into int8 kernels. Three details make a compiled model
    comparable with the others, so they live here:

    * Inductor fixes the OpenMP thread count of its C++ kernels when it
      generates them (``torch.get_num_threads()`` then), so the model is
      compiled — its first call made — on ``threads`` threads;
    * ``freezing`` (``torch._inductor.config.freezing``) folds the weights into
      the graph as constants: the x86 int8 path needs it to pre-pack int8
      weights for oneDNN (torchao's PT2E x86 tutorial sets it);
    * one compiled graph per shape: another batch size would recompile (seconds),
      so :meth:`predict` runs other batch sizes in chunks of the compiled one,
      the last padded, and another image shape is an error.

    ``compile_seconds`` is the wall time of the compiling first call.
    """

    framework, format = "pytorch-compiled", "state_dict"

    def __init__(self, model: nn.Module, example: Any, threads: int = 1, freezing: bool = True) -> None:
        import time

        super().__init__(model, threads=threads)
        self.eager = self.model
        array = _float_nchw(example)
        self.shape = tuple(array.shape)
        self.freezing = freezing
        _measure.run_model(self.eager, torch.from_numpy(array))  # a wrong shape fails clearly, before compiling
        compiled = cast(nn.Module, torch.compile(self.eager, dynamic=False))
        started = time.perf_counter()
        with self.threads_applied(), torch._inductor.config.patch(freezing=freezing), torch.inference_mode():
            compiled(torch.from_numpy(array))
        self.compile_seconds = time.perf_counter() - started
        self.model = compiled

    def _check_shape(self, x: np.ndarray) -> None:
        if tuple(x.shape[1:]) != self.shape[1:]:
            raise ValueError(f"this model was compiled for images of shape {self.shape[1:]}, got {tuple(x.shape[1:])}; "
                             "compile it again for that shape")

    def runtime_input(self, x: np.ndarray) -> torch.Tensor:
        array = _float_nchw(x)
        self._check_shape(array)
        if len(array) != self.shape[0]:
            raise ValueError(f"this model was compiled for batch {self.shape[0]}, got batch {len(array)}: time it on "
                             f"the batch size it was compiled for (another would recompile inside the timing)")
        return torch.from_numpy(array)

    def _logits(self, x: np.ndarray) -> np.ndarray:
        self._check_shape(x)
        batch = self.shape[0]
        chunks = []
        for start in range(0, len(x), batch):
            chunk = x[start : start + batch]
            padded = np.concatenate([chunk, np.zeros((batch - len(chunk), *chunk.shape[1:]), np.float32)])
            with torch.inference_mode():
                chunks.append(self.model(torch.from_numpy(padded)).float().numpy()[: len(chunk)])
        return np.concatenate(chunks)

    def size(self) -> _measure.Size:
        """The eager model's ``state_dict`` (a compiled graph is not a file the course ships)."""
        return _measure.state_dict_size(self.eager)


class ExecuTorchRuntime(LoadedModel):
    """A ``.pte`` in the ExecuTorch runtime, its XNNPACK thread pool (one per process) set to ``threads`` before loading.

    The pool must be sized *before* a ``.pte`` is loaded: resetting it while
    a loaded method holds it crashed the process here (a segfault in
    ``execute`` once an ONNX Runtime session was also open). So every
    ``.pte`` in a process runs on the same thread count; asking for another
    is an error that says to use a fresh process.
    """

    framework, format = "executorch", ".pte"

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        from course_lib.executorch import ExecuTorchModel, executorch_pool_threads, set_executorch_pool

        self.threads = _check_threads(threads)
        if _EXECUTORCH_LOADED["threads"] not in (None, self.threads):
            raise ValueError(
                f"a .pte was already loaded in this process on {_EXECUTORCH_LOADED['threads']} thread(s); ExecuTorch's "
                f"thread pool is process-wide and cannot change under a loaded file: measure {threads} thread(s) in a "
                "fresh process")
        if executorch_pool_threads() != self.threads:
            set_executorch_pool(self.threads)
        _EXECUTORCH_LOADED["threads"] = self.threads
        self.model = ExecuTorchModel(path)
        self.path = self.model.path

    @contextlib.contextmanager
    def threads_applied(self) -> Iterator[None]:
        from course_lib.executorch import executorch_pool_threads

        if executorch_pool_threads() != self.threads:
            raise RuntimeError(f"ExecuTorch's thread pool was changed after {self.model.path.name} was loaded on "
                               f"{self.threads} thread(s); reload it in a fresh process")
        yield

    def runtime_input(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(_float_nchw(x))

    def runtime_call(self, x: Any) -> Callable[[], Any]:
        inputs = [self.runtime_input(x)]
        self.model(inputs[0])  # checks the shape against the file's, with a clear message
        execute = self.model.method.execute
        return lambda: execute(inputs)

    def _logits(self, x: np.ndarray) -> np.ndarray:
        return self.model(x)


class OnnxRuntime(LoadedModel):
    """An ``.onnx`` in an ONNX Runtime CPU session with ``threads`` intra-op threads (inter-op 1)."""

    framework, format = "onnxruntime", ".onnx"

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        from course_lib.onnx_io import OrtModel

        self.threads = _check_threads(threads)
        self.model = OrtModel(path, threads=threads)
        self.path = self.model.path

    def runtime_input(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return {self.model.input.name: _float_nchw(x)}

    def runtime_call(self, x: Any) -> Callable[[], Any]:
        feeds = self.runtime_input(x)
        self.model(feeds[self.model.input.name])  # checks the shape, with a clear message
        run, outputs = self.model.session.run, self.model.output_names
        return lambda: run(outputs, feeds)

    def _logits(self, x: np.ndarray) -> np.ndarray:
        return self.model(x)


class LiteRTRuntime(LoadedModel):
    """A ``.tflite`` in the LiteRT interpreter with ``threads`` threads; takes NCHW, feeds it NHWC.

    ``xnnpack=False`` runs LiteRT's built-in kernels instead of its default CPU
    delegate, XNNPACK (to see what the delegate buys).
    """

    framework, format = "litert", ".tflite"

    def __init__(self, path: str | Path, threads: int = 1, xnnpack: bool = True) -> None:
        from course_lib.tflite import LiteRTModel

        self.threads = _check_threads(threads)
        self.model = LiteRTModel(path, threads=threads, xnnpack=xnnpack)
        self.path = Path(path)

    def runtime_input(self, x: np.ndarray) -> np.ndarray:
        """NCHW → NHWC (the only place in the course that transposes for LiteRT), then int8 if the file takes int8."""
        return self.model.quantize_input(np.ascontiguousarray(_float_nchw(x).transpose(0, 2, 3, 1)))

    def runtime_call(self, x: Any) -> Callable[[], Any]:
        nhwc = np.ascontiguousarray(_float_nchw(x).transpose(0, 2, 3, 1))
        self.model(nhwc)  # checks the shape, with a clear message
        self.model.set_input(nhwc)  # quantized once, here, not inside the timed call
        return self.model.interpreter.invoke

    def _logits(self, x: np.ndarray) -> np.ndarray:
        return self.model(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))


_EXECUTORCH_LOADED: dict[str, int | None] = {"threads": None}

_FileRuntime = type[ExecuTorchRuntime] | type[OnnxRuntime] | type[LiteRTRuntime]
_ADAPTERS: dict[str, _FileRuntime] = {".pte": ExecuTorchRuntime, ".onnx": OnnxRuntime, ".tflite": LiteRTRuntime}


def load(path: str | Path, threads: int = 1) -> LoadedModel:
    """Load a ``.pte``, ``.onnx`` or ``.tflite`` file in its runtime, to run on ``threads`` threads."""
    path = Path(path)
    if path.suffix not in _ADAPTERS:
        raise ValueError(f"unknown artefact format {path.suffix!r} ({path.name}); expected .pte, .onnx or .tflite")
    if not path.is_file():
        raise FileNotFoundError(f"no artefact at {path}")
    return _ADAPTERS[path.suffix](path, threads=threads)


def wrap(model: nn.Module, threads: int = 1) -> PyTorchModel:
    """An eager PyTorch model behind the same interface as the files."""
    return PyTorchModel(model, threads=threads)


def wrap_compiled(model: nn.Module, example: Any, threads: int = 1, freezing: bool = True) -> CompiledModel:
    """``torch.compile(model)`` for ``example``'s shape on ``threads`` threads, behind the same interface (:class:`CompiledModel`)."""
    return CompiledModel(model, example, threads=threads, freezing=freezing)


def artefact_size(path: str | Path) -> _measure.Size:
    """Raw and gzip bytes of an artefact, external data included (ONNX's ``.data`` file): what must ship."""
    path = Path(path)
    files = [path]
    if path.suffix == ".onnx":
        from course_lib.onnx_io import external_data_files

        files += external_data_files(path)
    return _measure.file_size(*files)


# --- timing --------------------------------------------------------------------------------------


@dataclass
class Timing:
    """Runtime-only latency of one model over interleaved rounds (milliseconds).

    ``median_ms`` pools every timed call; ``min_ms`` / ``max_ms`` are the
    lowest and highest *per-round* medians (the spread a re-run would show);
    ``round_medians_ms`` pair with another model's rounds for ratio intervals.
    """

    median_ms: float
    p90_ms: float
    min_ms: float
    max_ms: float
    threads: int
    batch_size: int
    round_medians_ms: list[float] = field(default_factory=list)
    wrapper_overhead_ms: float | None = None


def time_interleaved(
    models: Mapping[str, LoadedModel], x: Any, rounds: int = 7, repeats: int = 50, warmup: int = 10,
    wrapper: bool = False, clock: str = "wall",
) -> dict[str, Timing]:
    """Time each model's runtime-only call on ``x`` (e.g. one image) in ``rounds`` interleaved rounds.

    All models must run on the same number of threads: a comparison at
    different thread counts is not a comparison. With ``wrapper`` the
    course's full call (``model(x)``: conversion, layout, quantization) is
    timed in the same rounds, and ``wrapper_overhead_ms`` is its median minus
    the runtime's. ``clock="thread"`` times CPU time of the calling thread
    instead of elapsed time (see :func:`course_lib.measure.measure_latency`):
    on a machine busy with other jobs it keeps their time out of long calls;
    it needs one thread and a runtime that computes in the calling thread
    (eager PyTorch).
    """
    if not models:
        raise ValueError("give at least one model to time")
    threads = {m.threads for m in models.values()}
    if len(threads) != 1:
        raise ValueError(f"every model must run on the same thread count to be compared; got {sorted(threads)}")
    if rounds < 2:
        raise ValueError(f"rounds must be at least 2 (a spread needs rounds), got {rounds}")
    if clock == "thread" and (threads != {1} or not all(isinstance(m, PyTorchModel) for m in models.values())):
        raise ValueError("clock='thread' measures the calling thread's CPU time: it needs eager PyTorch models on 1 thread "
                         "(other runtimes and thread pools compute in threads it does not see)")
    batch = _float_nchw(x)
    targets: dict[str, tuple[Any, Any]] = {name: (model.runtime_call(batch), None) for name, model in models.items()}
    if wrapper:
        targets.update({f"{name}\0wrapper": (model, batch) for name, model in models.items()})
    with contextlib.ExitStack() as stack:
        seen: set[type] = set()
        for model in models.values():  # process-wide pools are set once, not per call
            if type(model) not in seen:
                seen.add(type(model))
                stack.enter_context(model.threads_applied())
        measured = _measure.measure_latency_interleaved(targets, rounds=rounds, repeats=repeats, warmup=warmup, threads=None,
                                                        clock=clock)
    thread_count = threads.pop()
    result = {}
    for name in models:
        s = measured[name]
        overhead = measured[f"{name}\0wrapper"].median_ms - s.median_ms if wrapper else None
        result[name] = Timing(s.median_ms, s.p90_ms, min(s.round_medians_ms), max(s.round_medians_ms), thread_count,
                              len(batch), list(s.round_medians_ms), overhead)
    return result


def speedup(baseline: Timing, candidate: Timing, level: float = 0.95) -> stats.Interval:
    """How many times faster ``candidate`` is than ``baseline``, with a bootstrap interval paired by round."""
    return stats.bootstrap_median_ratio(baseline.round_medians_ms, candidate.round_medians_ms, level=level)


# --- cold start and memory, each file in a fresh process -------------------------------------------


@dataclass(frozen=True)
class ColdStart:
    """One file loaded and run once in a fresh process that imported only NumPy and the file's runtime.

    ``import_ms``: importing the runtime's Python package; ``load_ms``: loading
    the file; ``first_call_ms``: the first inference; ``peak_rss_bytes``: the
    process's peak resident memory; ``runtime_peak_bytes``: that peak minus the
    process's memory before the runtime was imported (the runtime's library,
    the model and its buffers — not the interpreter or NumPy). ExecuTorch's
    Python bindings import PyTorch, so its figures include PyTorch's import
    and memory, which an app linking the C++ runtime does not pay.
    ``runtime_library_bytes``: the runtime package's native libraries the
    process mapped — the size of *this* (desktop, Python) build, an upper
    bound for a mobile build of the same runtime.
    """

    import_ms: float
    load_ms: float
    first_call_ms: float
    peak_rss_bytes: int
    runtime_peak_bytes: int
    runtime_library_bytes: int = 0

    @property
    def load_and_first_call_ms(self) -> float:
        return self.load_ms + self.first_call_ms


_CHILD = Path(__file__).with_name("_cold_start_child.py")


def cold_start(model: LoadedModel, x: Any, timeout: float = 120.0) -> ColdStart:
    """Load ``model``'s file and run it once on ``x`` in a fresh process (see :class:`ColdStart`).

    In one process the first file of a runtime pays for initialising that
    runtime and later files do not; a fresh process per file makes every file
    pay the same. The child is a standalone script (not ``course_lib``, whose
    import would load more than the runtime) and takes the input already in
    the runtime's layout and dtype.
    """
    if model.path is None:
        raise ValueError("cold start is measured for files; this model has none")
    with tempfile.TemporaryDirectory(prefix="course_lib_cold_") as tmp:
        prepared = model.runtime_input(_float_nchw(x))
        array = prepared[next(iter(prepared))] if isinstance(prepared, dict) else prepared
        input_path = Path(tmp) / "input.npy"
        np.save(input_path, array.numpy() if isinstance(array, torch.Tensor) else array)
        cmd = [sys.executable, "-I", str(_CHILD), model.format, str(model.path), str(input_path), str(model.threads)]
        env = dict(os.environ, OMP_NUM_THREADS=str(model.threads))
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"cold start of {model.path.name} took longer than {timeout:.0f} s") from None
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        last = next((ln for ln in reversed(done.stderr.strip().splitlines()) if ln.strip()), f"exit code {done.returncode}")
        raise RuntimeError(f"cold start of {model.path.name} failed in the fresh process: {last[:300]}")
    return ColdStart(**json.loads(lines[-1]))


# --- everything into records ------------------------------------------------------------------


def measure(
    models: Mapping[str, LoadedModel], x_test: np.ndarray, y_test: np.ndarray, *, reference_logits: np.ndarray | None = None,
    rounds: int = 7, repeats: int = 50, warmup: int = 10, cold: bool = True, wrapper: bool = False,
    steps: Mapping[str, str] | None = None, macs_example: Any = None,
) -> list[Record]:
    """One :class:`Record` per model, every model measured the same way.

    * size: file bytes (external data included) or the ``state_dict``, raw and gzip;
    * latency: runtime-only, batch 1 (``x_test[:1]``), all models in the same
      interleaved rounds; median, p90 and the per-round min / max; the thread
      count (equal for all) in ``threads``;
    * cold start and peak memory: each file in a fresh process (``cold``);
    * top-1 on ``(x_test, y_test)`` with its Wilson 95 % interval; with
      ``reference_logits``, the top-1 change against that model on the same
      images (paired bootstrap interval) and the agreement in ``notes``;
    * eager models also get parameters (total, non-zero) and MACs.

    ``steps`` maps a model's name to its pipeline step (``Record.step``).
    """
    from course_lib.measure import agreement, count_macs, count_parameters

    x_test = _float_nchw(x_test)
    y_test = np.asarray(y_test)
    if len(x_test) != len(y_test) or len(x_test) == 0:
        raise ValueError(f"need as many labels as images (≥ 1), got {len(x_test)} images and {len(y_test)} labels")
    timings = time_interleaved(models, x_test[:1], rounds=rounds, repeats=repeats, warmup=warmup, wrapper=wrapper)
    records = []
    for name, model in models.items():
        logits = model.predict(x_test)
        top1 = stats.top1_interval(logits, y_test)
        size = model.size()
        timing = timings[name]
        notes = []
        delta = None
        if reference_logits is not None:
            notes.append(f"agreement {agreement(reference_logits, logits).top1_agreement:.3f}")
            delta = stats.paired_bootstrap_difference(logits.argmax(1) == y_test, np.asarray(reference_logits).argmax(1) == y_test)
        record = Record(
            name=name, framework=model.framework, format=model.format, bytes=size.bytes, gzip_bytes=size.gzip_bytes,
            latency_ms=timing.median_ms, latency_p90_ms=timing.p90_ms, latency_min_ms=timing.min_ms,
            latency_max_ms=timing.max_ms, latency_rounds_ms=timing.round_medians_ms,
            wrapper_overhead_ms=timing.wrapper_overhead_ms, threads=timing.threads,
            batch_size=timing.batch_size, top1=top1.estimate, top1_low=top1.low, top1_high=top1.high,
            top1_delta=None if delta is None else delta.estimate, top1_delta_low=None if delta is None else delta.low,
            top1_delta_high=None if delta is None else delta.high,
            images=len(y_test), step=(steps or {}).get(name), notes="; ".join(notes),
        )
        if isinstance(model, PyTorchModel):
            example = torch.from_numpy(x_test[:1]) if macs_example is None else macs_example
            record.params = count_parameters(model.model)
            record.nonzero_params = count_parameters(model.model, nonzero=True)
            record.macs = count_macs(model.model, example)
        elif cold:
            start = cold_start(model, x_test[:1])
            record.cold_start_ms = start.load_and_first_call_ms
            record.peak_memory_bytes = start.runtime_peak_bytes
        records.append(record)
    return records


def measure_one(name: str, model: LoadedModel | nn.Module, x_test: np.ndarray, y_test: np.ndarray, **options: Any) -> Record:
    """:func:`measure` for a single model (an eager module is wrapped on one thread)."""
    loaded = wrap(model) if isinstance(model, nn.Module) else model
    return measure({name: loaded}, x_test, y_test, **options)[0]
