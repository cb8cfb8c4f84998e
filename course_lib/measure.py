"""Measuring a model: parameters, MACs, bytes, latency, memory, accuracy, agreement.

Every lecture reports these numbers, so they are measured one way, here:

* parameters - total and non-zero (pruned weights count as their masked value);
* MACs - multiply-accumulates, from PyTorch's own ``torch.utils.flop_counter``
  (FLOPs / 2), not from hand-written per-layer rules;
* bytes - of a saved artefact, raw and gzip-compressed (gzip shows what
  zeros and repeated values would save in transfer);
* latency - warm-up first, then many timed runs; median and p90, with the
  thread count and batch size they were measured at;
* peak memory - the growth of the process's resident memory during one call;
* accuracy - top-1 / top-k; agreement between two models' outputs.
"""

from __future__ import annotations

import gc
import gzip
import io
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

Inputs = Any  # a tensor / array, or a tuple of them (positional arguments)


# --- size -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Size:
    """Bytes of an artefact as stored and after ``gzip -9``."""

    bytes: int
    gzip_bytes: int

    @property
    def gzip_ratio(self) -> float:
        """How many times smaller gzip makes it (raw / gzip)."""
        return self.bytes / self.gzip_bytes if self.gzip_bytes else float("inf")


def gzip_size(data: bytes) -> int:
    """Length of ``data`` after gzip at level 9 (``mtime=0``, so the result is reproducible)."""
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def file_size(*paths: str | Path) -> Size:
    """Raw and gzip size of one or more files or folders, added up.

    Pass every file an artefact needs (for example an ``.onnx`` file *and* its
    external-data file): a size that leaves out part of the artefact is wrong.
    """
    if not paths:
        raise ValueError("file_size needs at least one path")
    files: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"cannot measure {p}: no such file or folder")
        files.extend(sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p])
    raw = gz = 0
    for f in files:
        data = f.read_bytes()
        raw += len(data)
        gz += gzip_size(data)
    return Size(raw, gz)


def state_dict_size(model: nn.Module) -> Size:
    """Size of ``torch.save(model.state_dict())``, the usual ``.pth`` file, measured in memory.

    A ``.pth`` is a zip archive whose inner folder is named after the file, so
    the same state_dict saved to disk differs from this by a few bytes.
    """
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    data = buffer.getvalue()
    return Size(len(data), gzip_size(data))


def saved_size(obj: Any) -> int:
    """Bytes of ``torch.save(obj)`` (any tensor, dict or module), measured in memory.

    A tensor that is a *view* saves its whole underlying storage, so a small
    slice of a large tensor can cost as much as the large one: ``.clone()``
    it first.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return len(buffer.getvalue())


# --- parameters -----------------------------------------------------------------------------


def effective_parameters(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` of every parameter as the forward pass sees it.

    After ``torch.nn.utils.prune`` a layer holds ``weight_orig`` (a parameter)
    and ``weight_mask`` (a buffer); the forward pass uses ``weight`` =
    ``weight_orig * weight_mask``. This yields ``weight`` in that case, so
    pruned weights count as the zeros they are.
    """
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if name.endswith("_orig") and isinstance(getattr(module, name[: -len("_orig")], None), torch.Tensor):
                name = name[: -len("_orig")]
                param = getattr(module, name)
            yield (f"{module_name}.{name}" if module_name else name), param


def count_parameters(model: nn.Module, nonzero: bool = False) -> int:
    """Number of parameters (``nonzero=True``: only those not equal to zero)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"count_parameters needs a torch.nn.Module, got {type(model).__name__}")
    if nonzero:
        return int(sum(int(torch.count_nonzero(t)) for _, t in effective_parameters(model)))
    return int(sum(t.numel() for _, t in effective_parameters(model)))


def parameter_table(model: nn.Module) -> Any:
    """A pandas table: one row per parameter tensor with its shape, count and non-zeros."""
    import pandas as pd

    rows = [
        {
            "name": name,
            "shape": tuple(t.shape),
            "params": t.numel(),
            "nonzero": int(torch.count_nonzero(t)),
            "dtype": str(t.dtype).replace("torch.", ""),
        }
        for name, t in effective_parameters(model)
    ]
    return pd.DataFrame(rows)


# --- MACs -----------------------------------------------------------------------------------


def _as_args(inputs: Inputs) -> tuple[Any, ...]:
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    return tuple(torch.from_numpy(a) if isinstance(a, np.ndarray) else a for a in args)


def _first_layer_hint(model: nn.Module) -> str:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return f"its first layer '{name}' is Conv2d({module.in_channels}, ...), so it expects N × {module.in_channels} × H × W"
        if isinstance(module, nn.Linear):
            return f"its first layer '{name}' is Linear({module.in_features}, ...), so it expects N × {module.in_features}"
    return "check the shape the model was built for"


def example_batch(example: Any, dynamic_batch: bool = False) -> torch.Tensor:
    """An export example as a contiguous tensor; float64 (NumPy's default) becomes float32, the models' dtype.

    Contiguous because a strided NumPy slice as example once gave a ``.pte``
    that failed at run time. With ``dynamic_batch`` the example needs at least
    2 samples: ``torch.export`` fixes a batch of 1 into the graph.
    """
    tensor = torch.as_tensor(example).contiguous()
    if dynamic_batch and tensor.shape[0] < 2:
        raise ValueError("export with an example batch of at least 2 samples when the batch is dynamic")
    return tensor.float() if tensor.dtype == torch.float64 else tensor


def set_mode(model: nn.Module, training: bool) -> nn.Module:
    """``model.train()`` / ``model.eval()``, also for graphs from ``torch.export`` / PT2E quantization.

    Exported graph modules refuse ``.train()`` / ``.eval()`` (their dropout and
    BatchNorm are baked into the graph); torchao's ``move_exported_model_to_train``
    / ``_eval`` switch them instead.
    """
    try:
        model.train(training)
    except NotImplementedError:
        from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

        (move_exported_model_to_train if training else move_exported_model_to_eval)(model)
    return model


def run_model(model: nn.Module, inputs: Inputs) -> Any:
    """Call ``model(*inputs)`` in inference mode, turning a shape error into a clear ``ValueError``."""
    args = _as_args(inputs)
    set_mode(model, False)
    try:
        with torch.inference_mode():
            return model(*args)
    except RuntimeError as exc:
        shapes = ", ".join(str(tuple(a.shape)) if hasattr(a, "shape") else type(a).__name__ for a in args)
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"{type(model).__name__} failed on input of shape {shapes}: {first_line}. "
            f"The input does not fit the model: {_first_layer_hint(model)}."
        ) from None


def count_macs(model: nn.Module, example_input: Inputs) -> int:
    """Multiply-accumulates of one forward pass on ``example_input`` (its batch included).

    Uses ``torch.utils.flop_counter.FlopCounterMode``, which counts
    convolutions and matrix multiplications (the ops that dominate cost);
    one MAC = 2 FLOPs. Element-wise ops (ReLU, BatchNorm, additions) are not
    counted, as in the papers' MAC figures.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        run_model(model, example_input)
    return counter.get_total_flops() // 2


def mac_table(model: nn.Module, example_input: Inputs) -> Any:
    """A pandas table of MACs per leaf module (modules with no MACs left out)."""
    import pandas as pd
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        run_model(model, example_input)
    counts = counter.get_flop_counts()
    leaf_names = {name for name, m in model.named_modules() if not list(m.children())}
    prefix = type(model).__name__ + "."
    rows = []
    for key, ops in counts.items():
        name = key[len(prefix) :] if key.startswith(prefix) else key
        if name in leaf_names:
            module = model.get_submodule(name)
            rows.append({"layer": name, "type": type(module).__name__, "macs": int(sum(ops.values()) // 2)})
    return pd.DataFrame(rows)


# --- latency --------------------------------------------------------------------------------


@dataclass
class LatencyStats:
    """Latency of repeated calls, in milliseconds, and the conditions they were measured in."""

    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    repeats: int
    warmup: int
    threads: int | None
    batch_size: int | None
    samples_ms: list[float] = field(default_factory=list, repr=False)
    round_medians_ms: list[float] = field(default_factory=list, repr=False)

    @classmethod
    def from_samples(cls, samples_ms: list[float], warmup: int, threads: int | None, batch_size: int | None,
                     round_medians_ms: list[float] | None = None) -> LatencyStats:
        """Median, p90, mean, min and max of timed calls (milliseconds); per-round medians if timed in rounds."""
        return cls(
            median_ms=statistics.median(samples_ms), p90_ms=float(np.percentile(samples_ms, 90)),
            mean_ms=statistics.fmean(samples_ms), min_ms=min(samples_ms), max_ms=max(samples_ms),
            repeats=len(samples_ms), warmup=warmup, threads=threads, batch_size=batch_size, samples_ms=samples_ms,
            round_medians_ms=list(round_medians_ms or []),
        )

    def summary(self) -> dict[str, Any]:
        """The statistics without the raw samples, for tables."""
        d = asdict(self)
        d.pop("samples_ms")
        d.pop("round_medians_ms")
        return d


def _check_count(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else "a non-negative integer"
        raise ValueError(f"{name} must be {kind}, got {value!r}")


def _callable_for(target: nn.Module | Callable[..., Any], inputs: Inputs, check: bool = True) -> Callable[[], Any]:
    if isinstance(target, nn.Module):
        if check:
            run_model(target, inputs)  # a clear error for a bad shape before timing anything
        args = _as_args(inputs)

        def call() -> Any:
            with torch.inference_mode():
                return target(*args)

        return call
    if not callable(target):
        raise TypeError(f"expected a torch.nn.Module or a callable, got {type(target).__name__}")
    args = () if inputs is None else (inputs if isinstance(inputs, tuple) else (inputs,))
    return lambda: target(*args)


def _batch_size(inputs: Inputs) -> int | None:
    first = inputs[0] if isinstance(inputs, tuple) and inputs else inputs
    shape = getattr(first, "shape", None)
    return int(shape[0]) if shape is not None and len(shape) > 0 else None


CLOCKS = {"wall": time.perf_counter, "thread": time.thread_time}


def _timer(clock: str) -> Any:
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {sorted(CLOCKS)}, got {clock!r}")
    return CLOCKS[clock]


def measure_latency(
    target: nn.Module | Callable[..., Any],
    inputs: Inputs = None,
    warmup: int = 10,
    repeats: int = 50,
    threads: int | None = None,
    clock: str = "wall",
) -> LatencyStats:
    """Time ``target(*inputs)``: ``warmup`` untimed calls, then ``repeats`` timed ones.

    Warm-up matters: the first calls pay for memory allocation, kernel
    selection and caches. Medians and p90 are robust to the odd slow call
    that a mean is not.

    Args:
        target: a PyTorch module (run in eval + inference mode) or any callable
            (an ONNX Runtime session's ``run``, a TFLite invoke, ...).
        inputs: the positional argument(s), e.g. one batch.
        warmup: untimed calls first (≥ 0).
        repeats: timed calls (≥ 1).
        threads: PyTorch intra-op threads during the measurement (restored
            after). Other runtimes set threads when their session is created;
            the value is then only recorded. Switching thread counts inside
            one process can give erratic timings: for a careful comparison
            measure each count in a fresh process.
        clock: ``"wall"`` (elapsed time, what a user waits) or ``"thread"``
            (CPU time of the calling thread, :func:`time.thread_time`). On a
            machine shared with other jobs the operating system pauses a long
            call more often than a short one, and wall time then charges the
            other jobs' time to the long call; thread CPU time does not. It
            is only meaningful for single-threaded runs that compute in the
            calling thread (PyTorch with one intra-op thread).
    """
    timer = _timer(clock)
    _check_count("warmup", warmup, 0)
    _check_count("repeats", repeats, 1)
    if threads is not None:
        _check_count("threads", threads, 1)
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        call = _callable_for(target, inputs)
        for _ in range(warmup):
            call()
        samples = []
        for _ in range(repeats):
            start = timer()
            call()
            samples.append((timer() - start) * 1000.0)
        used_threads = torch.get_num_threads() if isinstance(target, nn.Module) else threads
    finally:
        torch.set_num_threads(previous)
    return LatencyStats.from_samples(samples, warmup, used_threads, _batch_size(inputs))


def measure_latency_interleaved(
    targets: Mapping[str, tuple[nn.Module | Callable[..., Any], Inputs]],
    rounds: int = 5,
    repeats: int = 60,
    warmup: int = 10,
    threads: int | None = 1,
    clock: str = "wall",
) -> dict[str, LatencyStats]:
    """Time several targets fairly: ``rounds`` rounds, each timing every target once, in rotating order.

    Timing A fully and then B lets a noisy moment (another process, a
    frequency change, a thread pool still spinning after training) land on
    one of them only. Interleaving spreads it over all; each target's
    statistics pool its samples from every round, and keep each round's
    median (``round_medians_ms``): two targets' medians of the same round
    pair up for a ratio interval (:func:`course_lib.stats.bootstrap_median_ratio`).

    Args:
        targets: name → ``(target, inputs)`` as for :func:`measure_latency`.
        rounds, repeats, warmup: per round, per target.
        threads: PyTorch threads for every measurement (other runtimes set
            theirs when loaded).
        clock: ``"wall"`` or ``"thread"`` (see :func:`measure_latency`).
    """
    _timer(clock)
    _check_count("rounds", rounds, 1)
    if not targets:
        raise ValueError("give at least one target to time")
    samples: dict[str, list[float]] = {name: [] for name in targets}
    round_medians: dict[str, list[float]] = {name: [] for name in targets}
    names = list(targets)
    for round_index in range(rounds):
        order = names[round_index % len(names):] + names[: round_index % len(names)]
        for name in order:
            target, inputs = targets[name]
            stats = measure_latency(target, inputs, warmup=warmup, repeats=repeats, threads=threads, clock=clock)
            samples[name] += stats.samples_ms
            round_medians[name].append(stats.median_ms)
    used_threads = threads if threads is not None else torch.get_num_threads()
    return {name: LatencyStats.from_samples(values, warmup * rounds, used_threads, _batch_size(targets[name][1]),
                                            round_medians[name])
            for name, values in samples.items()}


def measure_latency_in_subprocess(
    model: nn.Module,
    inputs: Inputs,
    threads: int = 1,
    warmup: int = 10,
    repeats: int = 50,
    timeout: float = 300.0,
) -> LatencyStats:
    """Like :func:`measure_latency`, but in a fresh Python process started with ``threads`` threads.

    Changing ``torch.set_num_threads`` back and forth inside one process gave
    erratic timings on the course's machines; a fresh process per thread count
    gives comparable numbers. The model is pickled whole (``torch.save``), so
    its class must be importable (defined in a module, not in a notebook cell).
    """
    import json
    import subprocess
    import sys
    import tempfile

    _check_count("threads", threads, 1)
    _check_count("warmup", warmup, 0)
    _check_count("repeats", repeats, 1)
    run_model(model, inputs)  # a bad shape fails here, with a clear message, not in the child
    with tempfile.TemporaryDirectory(prefix="course_lib_latency_") as tmp:
        path = Path(tmp) / "job.pt"
        try:
            torch.save({"model": model, "inputs": _as_args(inputs)}, path)
        except (AttributeError, TypeError, RuntimeError) as exc:
            raise TypeError(
                f"cannot send {type(model).__name__} to a fresh process ({exc}); its class must be importable: "
                "define it in a module, not in a notebook cell or a function, or use measure_latency() in-process"
            ) from None
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        cmd = [sys.executable, "-m", "course_lib.measure", str(path), str(threads), str(warmup), str(repeats)]
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"latency measurement took longer than {timeout:.0f} s; lower repeats") from None
    if result.returncode != 0:
        lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
        reason = lines[-1] if lines else f"exit code {result.returncode}"
        hint = " (is the model's class defined in a notebook? Move it into a module.)" if "Can't get attribute" in reason else ""
        raise RuntimeError(f"latency worker failed: {reason}{hint}")
    return LatencyStats(**json.loads(result.stdout.strip().splitlines()[-1]))


def _latency_worker(argv: list[str]) -> None:
    """Child side of :func:`measure_latency_in_subprocess`: load, measure, print JSON."""
    import json

    path, threads, warmup, repeats = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    torch.set_num_threads(threads)
    job = torch.load(path, weights_only=False)
    stats = measure_latency(job["model"], job["inputs"], warmup=warmup, repeats=repeats)
    print(json.dumps(asdict(stats)))


# --- memory ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryStats:
    """Growth of resident memory (RSS) during a call, and how it was measured."""

    peak_bytes: int
    rss_before_bytes: int
    method: str


def _status_kb(field_name: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"{field_name} not in /proc/self/status")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_memory(target: nn.Module | Callable[..., Any], inputs: Inputs = None) -> MemoryStats:
    """Extra resident memory one call of ``target(*inputs)`` needs at its peak.

    On Linux the kernel's own peak-RSS counter (``VmHWM``) is reset before the
    call and read after it, so every allocator counts (PyTorch's, ONNX
    Runtime's, TFLite's), not only Python objects. Elsewhere a thread samples
    the RSS every millisecond (less exact). Memory a previous call left in an
    allocator's cache is reused without growing RSS, so measure a first call,
    or compare like with like.
    """
    # No trial call first: it would warm the allocator and hide the peak. A bad
    # shape still gets run_model's clear error, from inside call().
    if isinstance(target, nn.Module):
        model = target
        call: Callable[[], Any] = lambda: run_model(model, inputs)
    else:
        call = _callable_for(target, inputs)
    gc.collect()
    if _reset_peak_rss():
        before = _status_kb("VmRSS")
        call()
        peak = _status_kb("VmHWM")
        return MemoryStats(max(0, peak - before), before, "VmHWM")

    import psutil

    process = psutil.Process(os.getpid())
    before = process.memory_info().rss
    highest = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            highest[0] = max(highest[0], process.memory_info().rss)
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        call()
    finally:
        done.set()
        sampler.join()
    highest[0] = max(highest[0], process.memory_info().rss)
    return MemoryStats(max(0, highest[0] - before), before, "rss-sampling")


# --- accuracy and agreement -----------------------------------------------------------------


def _as_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # pragma: no cover - odd inputs
        raise TypeError(f"{name} must be an array or tensor, got {type(x).__name__}") from exc


def topk_accuracy(logits: Any, labels: Any, k: int | tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Fraction of samples whose label is among the ``k`` highest logits, for each ``k``.

    Returns ``{'top1': ..., 'top5': ...}``. Ties are broken by the lower class index.
    """
    scores, target = _as_numpy(logits, "logits"), _as_numpy(labels, "labels")
    if scores.ndim != 2:
        raise ValueError(f"logits must be N × classes, got shape {scores.shape}")
    if target.shape != (scores.shape[0],):
        raise ValueError(f"labels must have shape ({scores.shape[0]},) to match the logits, got {target.shape}")
    ks = (k,) if isinstance(k, int) else tuple(k)
    result = {}
    for kk in ks:
        if not 1 <= kk <= scores.shape[1]:
            raise ValueError(f"k={kk} is out of range for {scores.shape[1]} classes")
        # stable argsort on the negated scores: highest first, lower index wins ties
        top = np.argsort(-scores, axis=1, kind="stable")[:, :kk]
        result[f"top{kk}"] = float(np.mean(np.any(top == target[:, None], axis=1)))
    return result


@dataclass(frozen=True)
class Agreement:
    """How closely two models' outputs on the same inputs agree."""

    top1_agreement: float
    cosine_similarity: float
    euclidean_distance: float
    max_abs_diff: float
    samples: int


def agreement(logits_a: Any, logits_b: Any) -> Agreement:
    """Compare two models' logits on the same inputs.

    * ``top1_agreement``: fraction of samples where both predict the same class;
    * ``cosine_similarity``: mean over samples of cos(angle) between the two logit vectors (1 = same direction);
    * ``euclidean_distance``: mean over samples of ‖a − b‖₂;
    * ``max_abs_diff``: the largest element-wise difference (what parity checks bound).
    """
    a, b = _as_numpy(logits_a, "logits_a").astype(np.float64), _as_numpy(logits_b, "logits_b").astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"outputs must have the same shape to compare, got {a.shape} and {b.shape}")
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"outputs must be N × classes with N ≥ 1, got {a.shape}")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cosine = np.where(norms > 0, np.sum(a * b, axis=1) / np.where(norms > 0, norms, 1.0), 1.0)
    return Agreement(
        top1_agreement=float(np.mean(a.argmax(1) == b.argmax(1))),
        cosine_similarity=float(np.mean(cosine)),
        euclidean_distance=float(np.mean(np.linalg.norm(a - b, axis=1))),
        max_abs_diff=float(np.max(np.abs(a - b))),
        samples=int(a.shape[0]),
    )


def hamming_distance(mask_a: Any, mask_b: Any, normalized: bool = False) -> float:
    """Number (or fraction, ``normalized=True``) of positions where two binary masks differ.

    Lecture 03 uses it to ask how differently two pruning methods chose the
    weights to keep.
    """
    a, b = _as_numpy(mask_a, "mask_a"), _as_numpy(mask_b, "mask_b")
    if a.shape != b.shape:
        raise ValueError(f"masks must have the same shape, got {a.shape} and {b.shape}")
    for name, m in (("mask_a", a), ("mask_b", b)):
        if not np.isin(m, (0, 1)).all():
            raise ValueError(f"{name} must be binary (only 0/1 or False/True)")
    differ = int(np.count_nonzero(a.astype(bool) != b.astype(bool)))
    if normalized:
        return differ / a.size if a.size else 0.0
    return differ


if __name__ == "__main__":
    import sys

    _latency_worker(sys.argv[1:])


#: x86 / ARM CPU flags that decide how fast int8 kernels can be (dot-product instructions).
INT8_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def cpu_int8_features(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, bool]:
    """Which of :data:`INT8_CPU_FLAGS` this CPU reports (Linux ``/proc/cpuinfo``; all ``False`` elsewhere).

    int8 speed is a property of the CPU as much as of the model: with VNNI
    (x86) or SDOT (ARM ``asimddp``) an int8 dot product is one instruction;
    with AVX2 alone u8×s8 products go through ``VPMADDUBSW``, which can
    saturate (ONNX Runtime's reason for ``reduce_range``). Print this beside
    any int8 timing.
    """
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        text = ""
    flags: set[str] = set()
    for line in text.splitlines():
        if line.split(":", 1)[0].strip() in ("flags", "Features"):
            flags.update(line.split(":", 1)[1].split())
    return {flag: flag in flags for flag in INT8_CPU_FLAGS}
