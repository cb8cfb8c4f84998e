"""Reference model files the grader owns: checks on a learner's file-reading code use these, not the learner's file.

A check such as "your ``input_quantization(model)`` reads the same scale as
LiteRT does" is only a test if the grader chooses ``model``: on a file the
learner chose, a hard-coded answer and a matching file would pass. The files
live in ``course_lib/assets/`` (not secret: any learner may read them), are
built by the ``build_*`` functions below (``python -m course_lib.grading.reference``)
and are read by :func:`course_lib.grading.trusted.grader_file`. Several files
with different I/O (int8 on [0, 1], int8 on [0, 16], float) make a hard-coded
answer fail on the ones the learner was not shown.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ASSETS = Path(__file__).resolve().parent.parent / "assets"
REFERENCE_INT8 = "reference_int8.tflite"
#: Full integer, trained and calibrated on the digits' raw pixel values [0, 16]: another input scale.
REFERENCE_INT8_WIDE = "reference_int8_wide.tflite"
#: The same kind of model converted without quantization: float input and output (scale 0, zero point 0).
REFERENCE_FLOAT = "reference_float.tflite"


def build_reference_int8(path: Path = ASSETS / REFERENCE_INT8) -> Path:
    """A full-integer LiteRT model of a narrow Keras CNN, trained 3 epochs on the digits (seeded, offline, ~20 s)."""
    import course_lib
    from course_lib import data, tflite
    from course_lib.models.keras_twin import small_cnn_keras

    course_lib.setup(seed=7, threads=1)
    tf = course_lib.import_tensorflow()
    split = data.load_digits()
    model = small_cnn_keras(channels=(8, 16), hidden=16)
    model.compile(optimizer="adam", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(split.nhwc("train"), split.y_train, epochs=3, batch_size=64, verbose=0)
    blob = tflite.convert_keras(model, mode="int8", representative=np.asarray(split.nhwc("train")[:200]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(blob))
    return path


def _narrow_cnn(seed: int, pixel_range: float) -> tuple[object, np.ndarray]:
    """A narrow Keras CNN trained 3 epochs on the digits scaled to [0, ``pixel_range``], and its training images."""
    import course_lib
    from course_lib import data
    from course_lib.models.keras_twin import small_cnn_keras

    course_lib.setup(seed=seed, threads=1)
    tf = course_lib.import_tensorflow()
    split = data.load_digits()
    images = np.asarray(split.nhwc("train")) * pixel_range
    model = small_cnn_keras(channels=(8, 16), hidden=16)
    model.compile(optimizer="adam", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images, split.y_train, epochs=3, batch_size=64, verbose=0)
    return model, images


def build_reference_int8_wide(path: Path = ASSETS / REFERENCE_INT8_WIDE) -> Path:
    """Full integer on inputs in [0, 16] (input scale 16/255, not 1/255): a second int8 file for hidden checks."""
    from course_lib import tflite

    model, images = _narrow_cnn(seed=11, pixel_range=16.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tflite.convert_keras(model, mode="int8", representative=images[:200]))
    return path


def build_reference_float(path: Path = ASSETS / REFERENCE_FLOAT) -> Path:
    """A float ``.tflite`` (float input and output, quantization (0.0, 0)): code must not assume int8."""
    from course_lib import tflite

    model, _ = _narrow_cnn(seed=13, pixel_range=1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tflite.convert_keras(model, mode="fp32"))
    return path


BUILDERS = {REFERENCE_INT8: build_reference_int8, REFERENCE_INT8_WIDE: build_reference_int8_wide,
            REFERENCE_FLOAT: build_reference_float}


if __name__ == "__main__":
    # python -m course_lib.grading.reference [NAME ...]: rebuild the named files (default: all).
    for name in sys.argv[1:] or list(BUILDERS):
        if name not in BUILDERS:
            raise SystemExit(f"unknown reference file {name!r}; known: {', '.join(BUILDERS)}")
        print(BUILDERS[name]())
