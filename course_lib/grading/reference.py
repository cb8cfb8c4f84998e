"""Reference model files the grader owns: checks on a learner's file-reading code use these, not the learner's file.

A check such as "your ``input_quantization(model)`` reads the same scale as
LiteRT does" is only a test if the grader chooses ``model``: on a file the
learner chose, a hard-coded answer and a matching file would pass. The files
live in ``course_lib/assets/`` (not secret: any learner may read them), are
built by :func:`build_reference_int8` (``python -m course_lib.grading.reference``)
and are read by :func:`course_lib.grading.trusted.grader_file`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ASSETS = Path(__file__).resolve().parent.parent / "assets"
REFERENCE_INT8 = "reference_int8.tflite"


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


if __name__ == "__main__":
    print(build_reference_int8(*(Path(a) for a in sys.argv[1:2])))
