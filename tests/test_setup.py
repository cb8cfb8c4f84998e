import os
import random

import numpy as np
import pytest
import torch

import course_lib as cl


def test_setup_seeds_every_generator_and_sets_threads():
    info = cl.setup(seed=123, threads=1)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    cl.setup(seed=123, threads=1)
    b = (random.random(), np.random.rand(), torch.rand(1).item())
    assert a == b
    assert info["seed"] == 123 and info["torch_threads"] == 1 == torch.get_num_threads()
    assert os.environ["TF_USE_LEGACY_KERAS"] == "1"


@pytest.mark.parametrize("kwargs", [{"seed": -1}, {"seed": 1.5}, {"threads": 0}, {"threads": "2"}])
def test_setup_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        cl.setup(**kwargs)


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
