"""course_lib: the companion library of the Lightweight DL course.

Notebooks call into this package instead of copying code: ``measure`` for
counting and timing, ``data`` for the offline datasets, ``models`` for the
course's small CNN (in PyTorch and in Keras), ``train`` for fitting, and
``report`` for the records every lecture's tables are built from.

Importing it changes nothing in the process. Call :func:`setup` first, before
TensorFlow: it sets ``TF_USE_LEGACY_KERAS=1`` (so that ``tf.keras`` is Keras 2,
which ``tensorflow-model-optimization`` needs) and loads Triton before
TensorFlow can (see ``course_lib._env``). :func:`import_tensorflow` does the
same for code that needs TensorFlow without calling :func:`setup`.
"""

from __future__ import annotations

import logging
import os
import random
import sys
from importlib import metadata
from types import ModuleType
from typing import Any

from course_lib import _env
from course_lib._util import quiet_native_stderr

try:
    __version__ = metadata.version("course_lib")  # defined once, in pyproject.toml
except metadata.PackageNotFoundError:  # a checkout on sys.path that was never installed
    __version__ = "0+unknown"

_STATE: dict[str, Any] = {"seed": None, "threads": None}


def setup(seed: int = 0, threads: int | None = None, quiet: bool = True) -> dict[str, Any]:
    """Make a notebook or script reproducible and its logs readable.

    Applies the course's environment policy first (``TF_USE_LEGACY_KERAS=1``,
    quiet TF C++ logs, Triton loaded before TensorFlow: see ``course_lib._env``).
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
    # bool is an int subclass: setup(threads=True) would silently mean one thread.
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer (a count of CPU threads) or None, got {threads!r}")
    if not isinstance(quiet, bool):
        raise ValueError(f"quiet must be True or False, got {quiet!r}")

    _env.prepare_process()  # before numpy/torch: the Triton preload must precede any TensorFlow import

    import numpy as np
    import torch

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


def _configure_tensorflow(tf: ModuleType) -> None:
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


def import_tensorflow() -> ModuleType:
    """Import TensorFlow with Keras 2 selected, seeded as :func:`setup` asked.

    Use this (or call :func:`setup` first) rather than a bare
    ``import tensorflow``: the Keras version is fixed at TF's first import,
    and Triton must be loaded before it.
    """
    _env.prepare_process()
    first_import = "tensorflow" not in sys.modules
    if first_import:
        # absl logs a few lines (CUDA probing, CPU flags) straight to file
        # descriptor 2 before TF_CPP_MIN_LOG_LEVEL applies; they would land in
        # every notebook's output. Silence fd 2 while TF loads and probes devices.
        with quiet_native_stderr():
            import tensorflow as tf

            tf.config.list_physical_devices()
        _configure_tensorflow(tf)
    import tensorflow as tf

    return tf


__all__ = ["setup", "import_tensorflow", "quiet_native_stderr", "__version__"]
