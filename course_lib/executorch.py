"""ExecuTorch: lower a PyTorch model to an XNNPACK-delegated ``.pte`` and run it.

ExecuTorch replaces PyTorch Mobile (and TorchScript on devices): a model is
captured with ``torch.export``, lowered to the Edge dialect, the supported
parts are delegated to a backend, and the result is a flatbuffer ``.pte``
that a small C++ runtime executes. A ``.pte`` is backend-specific: the
XNNPACK-delegated files built here run wherever the runtime is built with
XNNPACK (Android, iOS, Linux, macOS, Windows on Arm or x86 CPUs); a
microcontroller needs a different lowering (the Arm Cortex-M / Ethos-U
backends), and Core ML, QNN or Vulkan delegates embed their own compiled
payloads. Here we run it with ExecuTorch's Python bindings of that runtime. The course's common interface to it (and
to the other runtimes) is :mod:`course_lib.runtimes`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class LoweringReport:
    """What the XNNPACK partitioner took, and the memory ExecuTorch planned ahead of time, for one ``.pte``.

    ``delegated_subgraphs`` / ``delegated_nodes``: parts handed to XNNPACK;
    ``fallback_ops``: operators left to ExecuTorch's portable kernels (with
    counts; ``getitem`` and ``sym_size`` are bookkeeping nodes, not kernels);
    ``planned_bytes``: the activation buffers memory planning sized at export
    (``non_const_buffer_sizes`` of the program's execution plan) — for a
    dynamic dimension, sized for its *upper bound*.
    """

    path: Path
    delegated_subgraphs: int
    delegated_nodes: int
    fallback_ops: dict[str, int]
    planned_bytes: int


def lower_executorch(
    model: nn.Module, example: torch.Tensor, path: str | Path, dynamic_batch: bool = True, max_batch: int = 1024
) -> LoweringReport:
    """:func:`export_executorch`, returning what was delegated and the planned memory (:class:`LoweringReport`)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.exir import to_edge_transform_and_lower

    from course_lib.measure import example_batch, set_mode

    example = example_batch(example, dynamic_batch)
    set_mode(model, False)
    shapes = ({0: torch.export.Dim("batch", min=1, max=max_batch)},) if dynamic_batch else None
    exported = torch.export.export(model, (example,), dynamic_shapes=shapes)
    edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
    info = get_delegation_info(edge.exported_program().graph_module)
    program = edge.to_executorch()
    path = Path(path)
    path.write_bytes(program.buffer)
    fallback = {op: b.non_delegated for op, b in info.delegation_by_operator.items() if b.non_delegated}
    planned = sum(int(size) for plan in program.executorch_program.execution_plan for size in plan.non_const_buffer_sizes)
    return LoweringReport(path, info.num_delegated_subgraphs, info.num_delegated_nodes, fallback, planned)


def export_executorch(
    model: nn.Module, example: torch.Tensor, path: str | Path, dynamic_batch: bool = True, max_batch: int = 1024
) -> Path:
    """Lower ``model`` (an eager model, or a PT2E-quantized graph) to an XNNPACK-delegated ``.pte`` at ``path``.

    A PT2E-quantized graph is lowered to XNNPACK's int8 kernels. With
    ``dynamic_batch`` the file accepts batches 1…``max_batch``; export with an
    example of at least 2 samples (a batch of 1 would be fixed in the graph).
    A dynamic batch has costs: memory is planned for ``max_batch`` and the
    batch-dependent reshape falls back to portable kernels
    (:func:`lower_executorch` shows both). Lowering takes seconds: cache the
    file rather than rebuilding it.
    """
    return lower_executorch(model, example, path, dynamic_batch=dynamic_batch, max_batch=max_batch).path


class ExecuTorchModel:
    """A ``.pte`` loaded with the ExecuTorch runtime, callable on batches (NumPy or torch, N × C × H × W)."""

    def __init__(self, path: str | Path) -> None:
        from executorch.runtime import Runtime

        from course_lib import quiet_native_stderr

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no .pte file at {path}: build one with course_lib.executorch.export_executorch")
        start = time.perf_counter()
        # The runtime's CPU probe prints a few "[cpuinfo_utils.cpp:…]" lines to fd 2 on load.
        with quiet_native_stderr():
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
    default); its Python bindings can only reset it as a whole. Enter this
    *before* loading a ``.pte``: resetting the pool under a loaded method
    crashed the process here (:class:`course_lib.runtimes.ExecuTorchRuntime`
    sizes it at load and refuses to change it later).
    """

    def __init__(self, threads: int | None) -> None:
        self.threads = threads
        self._previous: int | None = None

    def __enter__(self) -> executorch_threads:
        if self.threads is not None:
            from executorch.extension.pybindings import portable_lib

            from course_lib import quiet_native_stderr

            with quiet_native_stderr():  # the runtime logs its CPU probe and every reset to fd 2
                current = int(portable_lib._threadpool_get_thread_count())
                if current != int(self.threads):  # a reset rebuilds the pool: skip it when nothing changes
                    portable_lib._unsafe_reset_threadpool(int(self.threads))
                    self._previous = current
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            from executorch.extension.pybindings import portable_lib

            from course_lib import quiet_native_stderr

            with quiet_native_stderr():
                portable_lib._unsafe_reset_threadpool(self._previous)


def executorch_pool_threads() -> int:
    """Threads of ExecuTorch's process-wide XNNPACK pool (all cores until changed)."""
    from executorch.extension.pybindings import portable_lib

    from course_lib import quiet_native_stderr

    with quiet_native_stderr():
        return int(portable_lib._threadpool_get_thread_count())


def set_executorch_pool(threads: int) -> None:
    """Resize ExecuTorch's thread pool. Only before loading a ``.pte``: a loaded method keeps the old pool."""
    from executorch.extension.pybindings import portable_lib

    from course_lib import quiet_native_stderr

    with quiet_native_stderr():
        portable_lib._unsafe_reset_threadpool(int(threads))
