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


def test_modes_keep_what_they_promise_in_the_graph(keras_model, digits, tmp_path):
    """Full integer has no float op; float fallback and 16×8 keep float I/O around integer ops; float16 dequantizes."""
    from course_lib import tflite

    train = digits.nhwc("train")
    ops = {mode: tflite.op_dtypes(tflite.convert_keras(keras_model, mode=mode, representative=train, calibration_samples=20))
           for mode in ("int8", "int8_fallback", "int16x8", "float16")}
    assert all(set(op["inputs"][:1] + op["outputs"]) == {"int8"} for op in ops["int8"])
    assert ops["int8_fallback"][0]["op"] == "QUANTIZE" and ops["int8_fallback"][-1]["op"] == "DEQUANTIZE"
    assert {"int16"} == {op["outputs"][0] for op in ops["int16x8"][1:-1]}
    assert any(op["op"] == "DEQUANTIZE" and op["inputs"] == ["float16"] for op in ops["float16"])


def test_litert_quantizer_recipes(keras_model, digits, tmp_path):
    from course_lib import tflite

    x = digits.nhwc("test")[:64]
    float_path = tmp_path / "fp32.tflite"
    tflite.convert_keras(keras_model, path=float_path)
    reference = tflite.predict(float_path, x)
    sizes = {}
    for recipe in tflite.RECIPES:
        flatbuffer = tflite.quantize_tflite(float_path, recipe, representative=digits.nhwc("train"), calibration_samples=20,
                                            path=tmp_path / f"{recipe}.tflite")
        sizes[recipe] = len(flatbuffer)
        logits = tflite.predict(flatbuffer, x)
        assert (logits.argmax(1) == reference.argmax(1)).mean() > 0.9, recipe
    assert float_path.stat().st_size > 3.5 * sizes["static_wi8_ai8"]
    assert sizes["weight_only_wi4_afp32"] < 0.6 * sizes["weight_only_wi8_afp32"]
    assert tflite.io_quantization(tmp_path / "static_wi8_ai8.tflite")["input"]["dtype"] == "int8"
    assert tflite.io_quantization(tmp_path / "static_wi8_ai16.tflite")["input"]["dtype"] == "int16"
    with pytest.raises(ValueError, match="recipe must be one of"):
        tflite.quantize_tflite(float_path, "int3")
    with pytest.raises(ValueError, match="representative"):
        tflite.quantize_tflite(float_path, "static_wi8_ai8")


def test_xnnpack_can_be_switched_off_and_layer_errors_are_per_layer(keras_model, digits):
    from course_lib import tflite

    flatbuffer = tflite.convert_keras(keras_model)
    x = digits.nhwc("test")[:8]
    assert np.allclose(tflite.LiteRTModel(flatbuffer, xnnpack=False)(x), tflite.LiteRTModel(flatbuffer)(x), atol=1e-4)
    errors = tflite.layer_errors(keras_model, digits.nhwc("train"), samples=10)
    assert {"CONV_2D", "FULLY_CONNECTED"} <= set(errors["op_name"])
    assert (errors["rmse/scale"] >= 0).all() and errors["rmse/scale"].max() < 5


def test_grader_reference_files_have_the_io_the_hidden_checks_rely_on():
    """Exercise 06's hidden checks need an int8 file on another input range and a float file (scale 0, zero point 0)."""
    from course_lib import tflite
    from course_lib.grading import reference, trusted

    narrow = tflite.io_quantization(trusted.grader_file(reference.REFERENCE_INT8))["input"]
    wide = tflite.io_quantization(trusted.grader_file(reference.REFERENCE_INT8_WIDE))["input"]
    assert narrow["dtype"] == wide["dtype"] == "int8" and wide["scale"] > 10 * narrow["scale"]
    assert tflite.io_quantization(trusted.grader_file(reference.REFERENCE_FLOAT))["input"] == {
        "dtype": "float32", "scale": 0.0, "zero_point": 0}
    facts = trusted.tflite_file(trusted.grader_file(reference.REFERENCE_INT8))
    assert facts["float_ops"] == 0 and trusted.tflite_file(trusted.grader_file(reference.REFERENCE_FLOAT))["float_ops"] > 0
