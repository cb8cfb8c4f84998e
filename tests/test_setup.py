import os
import random
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch

import course_lib as cl


def _python(code: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run code in a fresh interpreter (import-time effects cannot be undone in this one)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout)


def test_importing_the_library_leaves_the_environment_and_triton_alone():
    result = _python("""
        import importlib, os, sys
        before = dict(os.environ)
        import course_lib
        for name in ("cli", "data", "train", "prune", "quantize", "measure", "report", "models", "grading"):
            importlib.import_module("course_lib." + name)
        changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
        assert not changed, f"import changed {changed}"
        assert "triton" not in sys.modules and "tensorflow" not in sys.modules
        print("ok")
    """)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_setup_applies_the_environment_policy(monkeypatch):
    monkeypatch.delenv("TF_USE_LEGACY_KERAS", raising=False)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")  # the user's choice of TF log level is kept
    with warnings.catch_warnings():  # another test in this process may have loaded TensorFlow already
        warnings.simplefilter("ignore", RuntimeWarning)
        cl.setup(seed=0)
    assert os.environ["TF_USE_LEGACY_KERAS"] == "1"
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"


@pytest.mark.slow
def test_training_pytorch_after_tensorflow_through_the_library_does_not_crash():
    """Triton imported after TensorFlow segfaults (exit -11, measured here); the library loads Triton first."""
    result = _python("""
        import sys
        import course_lib as cl
        cl.import_tensorflow()
        import torch
        model = torch.nn.Linear(4, 2)
        optimizer = torch.optim.Adam(model.parameters())
        model(torch.randn(8, 4)).sum().backward()
        optimizer.step()  # PyTorch imports Triton lazily here
        print("trained", "triton" in sys.modules or "no triton")
    """)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    assert result.stdout.startswith("trained")


def test_setup_seeds_every_generator_and_sets_threads():
    info = cl.setup(seed=123, threads=1)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    cl.setup(seed=123, threads=1)
    b = (random.random(), np.random.rand(), torch.rand(1).item())
    assert a == b
    assert info["seed"] == 123 and info["torch_threads"] == 1 == torch.get_num_threads()
    assert os.environ["TF_USE_LEGACY_KERAS"] == "1"


@pytest.mark.parametrize(
    "kwargs", [{"seed": -1}, {"seed": 1.5}, {"seed": True}, {"threads": 0}, {"threads": "2"}, {"threads": True}]
)
def test_setup_rejects_bad_arguments(kwargs):
    (name, value), = kwargs.items()
    with pytest.raises(ValueError, match=f"{name} must be .*got {value!r}"):
        cl.setup(**kwargs)


@pytest.mark.slow
def test_tensorflow_uses_keras_2_and_is_seeded():
    cl.setup(seed=7)
    tf = cl.import_tensorflow()
    import tf_keras

    assert tf.keras.Sequential is tf_keras.Sequential, "tf.keras must be Keras 2 (tf_keras) for tfmot"
    cl.setup(seed=7)
    first = tf.random.uniform((3,)).numpy()
    cl.setup(seed=7)
    second = tf.random.uniform((3,)).numpy()
    np.testing.assert_array_equal(first, second)


def test_setup_honours_the_graders_thread_cap(monkeypatch):
    import torch

    import course_lib as cl

    monkeypatch.setenv("COURSE_LIB_MAX_THREADS", "1")
    assert cl.setup(threads=2)["torch_threads"] == 1
    monkeypatch.delenv("COURSE_LIB_MAX_THREADS")
    assert cl.setup(threads=2)["torch_threads"] == 2
    torch.set_num_threads(2)


def test_quiet_native_stderr_silences_the_descriptor_and_sys_stderr_then_restores_both(capfd):
    with cl.quiet_native_stderr():
        os.write(2, b"native log line\n")
        print("python log line", file=sys.stderr)
    os.write(2, b"after\n")
    print("python after", file=sys.stderr)
    err = capfd.readouterr().err
    assert "log line" not in err
    assert "after" in err and "python after" in err
    with pytest.raises(KeyError), cl.quiet_native_stderr():
        raise KeyError("restored on errors too")
    print("still here", file=sys.stderr)
    assert "still here" in capfd.readouterr().err
