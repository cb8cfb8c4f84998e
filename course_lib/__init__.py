"""course_lib: the companion library of the Lightweight DL course.

Notebooks call into this package instead of copying code: ``measure`` for
counting and timing, ``data`` for the offline datasets, ``models`` for the
course's small CNN (in PyTorch and in Keras), ``train`` for fitting, and
``report`` for the records every lecture's tables are built from.

Import it first, before TensorFlow: importing ``course_lib`` sets
``TF_USE_LEGACY_KERAS=1`` so that ``tf.keras`` is Keras 2 (``tf_keras``),
which ``tensorflow-model-optimization`` needs.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import warnings
from typing import Any

# Must happen before TensorFlow is imported anywhere in the process: tfmot
# only accepts Keras 2 models, and TF picks its Keras at first import.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# 2 = hide TensorFlow's INFO and WARNING lines from its C++ core.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _preload_triton() -> None:
    """Load Triton's native library before TensorFlow can be loaded.

    Measured here (torch 2.14.1, TF 2.21.0): once TensorFlow is loaded,
    importing Triton segfaults (both bundle LLVM), and PyTorch imports Triton
    lazily on the first optimizer step — so training a PyTorch model after
    ``import tensorflow`` killed the process. Loading Triton first avoids the
    clash; it costs about 0.1 s. Without Triton (e.g. a CPU-only torch
    build) there is nothing to clash with.
    """
    if "triton" in sys.modules:
        return
    if "tensorflow" in sys.modules:
        warnings.warn(
            "TensorFlow was imported before course_lib: a PyTorch optimizer step may now crash the process "
            "(Triton and TensorFlow clash). Restart and import course_lib first.",
            RuntimeWarning,
            stacklevel=3,
        )
        return
    try:
        import triton  # noqa: F401
    except Exception:
        pass


_preload_triton()

__version__ = "0.1.0"

_STATE: dict[str, Any] = {"seed": None, "threads": None}


def setup(seed: int = 0, threads: int | None = None, quiet: bool = True) -> dict[str, Any]:
    """Make a notebook or script reproducible and its logs readable.

    Seeds Python's ``random``, NumPy and PyTorch (and TensorFlow: now if it is
    already imported, otherwise when ``course_lib`` imports it for you through
    :func:`import_tensorflow`), sets the number of CPU threads PyTorch uses,
    and turns down framework log noise. Deprecation warnings stay visible:
    the course teaches which APIs are deprecated.

    Args:
        seed: the seed for every random number generator.
        threads: CPU threads for PyTorch (and TensorFlow). ``None`` keeps the
            framework default (all cores). Timings depend on it, so lectures
            print it beside every latency.
        quiet: lower TensorFlow / absl / ONNX Runtime logging to errors only.

    Returns:
        What was set, to print at the top of a notebook.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")

    import numpy as np
    import torch

    if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        warnings.warn(
            "TensorFlow was imported before course_lib set TF_USE_LEGACY_KERAS=1; "
            "tensorflow-model-optimization will reject its Keras 3 models. "
            "Restart the kernel and import course_lib first.",
            stacklevel=2,
        )
    os.environ["TF_USE_LEGACY_KERAS"] = "1"

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    cap = os.environ.get("COURSE_LIB_MAX_THREADS", "")
    if threads is not None and cap.isdigit() and int(cap) >= 1:
        # The grader runs several submissions side by side, one thread each:
        # more threads than cores made every job several times slower.
        threads = min(threads, int(cap))
    if threads is not None:
        torch.set_num_threads(threads)
    _STATE["seed"] = seed
    _STATE["threads"] = threads

    if quiet:
        # torch.utils._pytree: torchao registers an Enum at import and torch logs a "register_constant is deprecated" line.
        for name in ("tensorflow", "absl", "h5py", "onnxruntime", "torch._dynamo", "torch.onnx", "torch.utils._pytree", "torch._export", "executorch"):
            logging.getLogger(name).setLevel(logging.ERROR)

    if "tensorflow" in sys.modules:
        _configure_tensorflow(sys.modules["tensorflow"])

    return {
        "seed": seed,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_cores": os.cpu_count(),
        "TF_USE_LEGACY_KERAS": os.environ["TF_USE_LEGACY_KERAS"],
    }


def _configure_tensorflow(tf: Any) -> None:
    """Apply the seed and thread count recorded by :func:`setup` to TensorFlow."""
    seed = _STATE["seed"]
    if seed is not None:
        tf.keras.utils.set_random_seed(seed)
    threads = _STATE["threads"]
    if threads is not None:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:
            # TF refuses once its runtime has started; the first setting stays.
            pass
    tf.get_logger().setLevel(logging.ERROR)


def import_tensorflow() -> Any:
    """Import TensorFlow with Keras 2 selected, seeded as :func:`setup` asked.

    Use this (or import ``course_lib`` first) rather than a bare
    ``import tensorflow``: the Keras version is fixed at TF's first import.
    """
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    first_import = "tensorflow" not in sys.modules
    if first_import:
        # absl logs a few lines (CUDA probing, CPU flags) straight to file
        # descriptor 2 before TF_CPP_MIN_LOG_LEVEL applies; they would land in
        # every notebook's output. Silence fd 2 while TF loads and probes devices.
        with _stderr_silenced():
            import tensorflow as tf

            tf.config.list_physical_devices()
        _configure_tensorflow(tf)
    import tensorflow as tf

    return tf


class _stderr_silenced:
    """Silence standard error for a ``with`` block: file descriptor 2 (C++ logs) and ``sys.stderr``.

    Both are needed: native libraries write to the descriptor, while some
    bindings (ExecuTorch's) write through Python's ``sys.stderr``, which a
    Jupyter kernel replaces by its own stream.
    """

    def __enter__(self) -> None:
        import io

        sys.stderr.flush()
        self._saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        self._python_stderr = sys.stderr
        sys.stderr = io.StringIO()

    def __exit__(self, *exc: Any) -> None:
        sys.stderr = self._python_stderr
        os.dup2(self._saved, 2)
        os.close(self._saved)


__all__ = ["setup", "import_tensorflow", "__version__"]
