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

    from course_lib.measure import set_mode

    example = torch.as_tensor(example).contiguous()  # a strided view gave a .pte that failed at run time
    if dynamic_batch and example.shape[0] < 2:
        raise ValueError("export with an example batch of at least 2 samples when the batch is dynamic")
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
