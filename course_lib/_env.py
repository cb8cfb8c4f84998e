"""The process-wide environment policy the course needs, applied on request, never at import.

Two facts drive it (measured with the pinned torch 2.14.1 and TF 2.21.0):

* TensorFlow picks its Keras at its first import. ``tensorflow-model-optimization``
  accepts only Keras 2 models, so ``TF_USE_LEGACY_KERAS=1`` must be in
  ``os.environ`` before anything imports TensorFlow.
* Once TensorFlow is loaded, importing Triton segfaults (both bundle LLVM), and
  PyTorch imports Triton lazily at its first optimizer step: training a
  PyTorch model after ``import tensorflow`` killed the process. Loading Triton
  first avoids the clash (about 0.1 s); without Triton (a CPU-only torch
  build) there is nothing to clash with.

:func:`course_lib.setup` and :func:`course_lib.import_tensorflow` call
:func:`prepare_process`; ``import course_lib`` alone changes nothing.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings

#: Variables the course sets before TensorFlow loads. ``setdefault`` semantics
#: for the log level (a user may want TF's logs); Keras 2 is required.
REQUIRED_ENV = {"TF_USE_LEGACY_KERAS": "1"}
DEFAULT_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2"}  # 2 = hide TF's C++ INFO and WARNING lines


def apply_environment() -> None:
    """Put the course's TensorFlow variables into ``os.environ``; warn if TF already loaded without them."""
    if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        warnings.warn(
            "TensorFlow was imported before course_lib set TF_USE_LEGACY_KERAS=1; "
            "tensorflow-model-optimization will reject its Keras 3 models. "
            "Restart the kernel and call course_lib.setup() before importing TensorFlow.",
            RuntimeWarning,
            stacklevel=4,  # the caller of setup() / import_tensorflow()
        )
    os.environ.update(REQUIRED_ENV)
    for name, value in DEFAULT_ENV.items():
        os.environ.setdefault(name, value)


def preload_triton() -> None:
    """Import Triton now if TensorFlow is not loaded yet (see the module docstring for why)."""
    if "triton" in sys.modules or importlib.util.find_spec("triton") is None:
        return
    if "tensorflow" in sys.modules:
        warnings.warn(
            "TensorFlow was imported before course_lib.setup(): a PyTorch optimizer step may now crash the "
            "process (Triton and TensorFlow clash). Restart and call course_lib.setup() first.",
            RuntimeWarning,
            stacklevel=4,  # the caller of setup() / import_tensorflow()
        )
        return
    try:
        import triton  # noqa: F401
    except Exception:  # a broken Triton is torch's problem, not ours: it only matters with TF loaded
        pass


def prepare_process() -> None:
    """Everything that must happen before TensorFlow loads: the variables, then Triton."""
    apply_environment()
    preload_triton()
