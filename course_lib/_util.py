"""Small helpers shared by the runtime modules (no heavy imports here)."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence standard error for a ``with`` block: file descriptor 2 and ``sys.stderr``.

    Both are needed: native libraries (TensorFlow's C++ core, ExecuTorch,
    the ONNX exporter) write to the descriptor, while some bindings write
    through Python's ``sys.stderr``, which a Jupyter kernel replaces by its
    own stream. The descriptor is process-wide, so other threads are silenced
    too while the block runs: keep such blocks short.
    """
    sys.stderr.flush()
    saved_fd = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    python_stderr = sys.stderr
    sys.stderr = io.StringIO()
    try:
        yield
    finally:
        sys.stderr = python_stderr
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
