"""Shared test fixtures. Tests run on the CPU with fixed seeds and two threads (one under `make test`'s cap)."""

from __future__ import annotations

import os

import pytest
import torch

import course_lib

# Before any test imports TensorFlow (tfmot, tf_keras or the library): Keras 2 selected, Triton loaded first.
course_lib.setup(seed=0)

# Test fixtures that are notebooks (student submissions, hostile notebooks) must not be run by nbval.
collect_ignore_glob = ["fixtures/*", "**/fixtures/*"]

# Files whose every test exports models, runs graders or pipelines in child processes (tens of seconds each).
SLOW_FILES = {"test_grading.py", "test_capstone.py", "test_onnx_io.py", "test_tflite.py"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark those files, and every test that trains the shared CNN, ``slow`` (``make test-fast`` skips them)."""
    for item in items:
        if item.path.name in SLOW_FILES or "trained_cnn" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


# `make test` caps each worker at one thread when workers share the cores (COURSE_LIB_MAX_THREADS).
_CAP = os.environ.get("COURSE_LIB_MAX_THREADS", "")
TEST_THREADS = min(2, int(_CAP)) if _CAP.isdigit() and int(_CAP) >= 1 else 2


@pytest.fixture(autouse=True)
def _two_threads_and_seed():
    previous = torch.get_num_threads()
    torch.set_num_threads(TEST_THREADS)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def digits():
    from course_lib import data

    return data.load_digits()


@pytest.fixture(scope="session")
def trained_cnn(digits):
    """The course's CNN trained briefly on digits (a few seconds), shared across tests."""
    from course_lib import data, models, train

    model = models.small_cnn(seed=0)
    loaders = data.torch_loaders(digits, batch_size=64, seed=0)
    train.fit(model, loaders["train"], loaders["val"], epochs=15, progress=False)
    return model
