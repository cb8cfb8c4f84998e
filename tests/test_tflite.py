"""course_lib.tflite: conversion at every precision and the LiteRT runner."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")


@pytest.fixture(scope="module")
def keras_model():
    from course_lib.models.keras_twin import small_cnn_keras

    return small_cnn_keras(seed=0)


def test_every_mode_converts_runs_and_has_the_expected_size(keras_model, digits, tmp_path):
    from course_lib import tflite

    x = digits.nhwc("test")[:64]
    reference = np.asarray(keras_model(x))
    sizes = {}
    for mode in tflite.MODES:
        flatbuffer = tflite.convert_keras(keras_model, mode=mode, representative=digits.nhwc("train"), path=tmp_path / f"{mode}.tflite")
        sizes[mode] = len(flatbuffer)
        logits = tflite.predict(tmp_path / f"{mode}.tflite", x)
        assert logits.shape == (64, 10) and logits.dtype == np.float32
        tolerance = {"fp32": 1e-4, "float16": 1e-2}.get(mode)
        if tolerance:
            assert np.abs(logits - reference).max() < tolerance
        else:
            assert (logits.argmax(1) == reference.argmax(1)).mean() > 0.9
    assert sizes["fp32"] > 3.5 * sizes["int8"] and sizes["fp32"] > 1.9 * sizes["float16"]
    io = tflite.io_quantization(tmp_path / "int8.tflite")
    assert io["input"]["dtype"] == "int8" and io["input"]["scale"] > 0
    assert tflite.io_quantization(tmp_path / "fp32.tflite")["input"] == {"dtype": "float32", "scale": 0.0, "zero_point": 0}


def test_bad_input_is_a_clear_error(keras_model, tmp_path):
    from course_lib import tflite

    flatbuffer = tflite.convert_keras(keras_model)
    runtime = tflite.LiteRTModel(flatbuffer)
    with pytest.raises(ValueError, match="NHWC"):
        runtime(np.zeros((2, 1, 8, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="x\\[None\\]"):
        runtime(np.zeros((8, 8, 1), dtype=np.float32))
    with pytest.raises(ValueError, match="representative"):
        tflite.convert_keras(keras_model, mode="int8")
    with pytest.raises(ValueError, match="mode"):
        tflite.convert_keras(keras_model, mode="int4")
    with pytest.raises(FileNotFoundError, match="convert_keras"):
        tflite.LiteRTModel(tmp_path / "missing.tflite")
