"""TFLite / LiteRT: convert a Keras model to ``.tflite`` and run it with the LiteRT interpreter.

Conversion still lives in TensorFlow (``tf.lite.TFLiteConverter``); running
uses ``ai_edge_litert.interpreter.Interpreter``, the maintained successor of
``tf.lite.Interpreter`` (which warns that it is deprecated).

Precisions (``mode``), as in TensorFlow's post-training quantization guide:

* ``"fp32"``: no optimization.
* ``"dynamic"``: weights stored as int8, activations in float (dynamic range).
* ``"float16"``: weights stored as float16.
* ``"int8"``: full integer — weights *and* activations int8, calibrated on a
  representative dataset; inputs and outputs int8 too (for integer-only chips).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

MODES = ("fp32", "dynamic", "float16", "int8")


def convert_keras(
    model: Any,
    mode: str = "fp32",
    representative: np.ndarray | None = None,
    path: str | Path | None = None,
    calibration_samples: int = 200,
) -> bytes:
    """Convert a Keras model to a ``.tflite`` flatbuffer (and write it to ``path`` if given).

    Args:
        model: a tf_keras model (a stripped pruned model or a tfmot QAT model works too).
        mode: one of ``"fp32"``, ``"dynamic"``, ``"float16"``, ``"int8"``.
        representative: ``N × H × W × C`` inputs for ``"int8"`` calibration;
            the first ``calibration_samples`` are fed one at a time.
    """
    from course_lib import import_tensorflow

    tf = import_tensorflow()
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode == "int8":
        if representative is None or len(representative) == 0:
            raise ValueError("mode='int8' needs representative inputs (e.g. a few hundred training images) to calibrate")
        samples = np.asarray(representative[:calibration_samples], dtype=np.float32)

        def dataset() -> Iterable[list[np.ndarray]]:
            for sample in samples:
                yield [sample[None]]

        converter.representative_dataset = dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    import warnings

    from course_lib import _stderr_silenced

    # The converter prints MLIR pass notes to fd 2 and warns that an int8 *input*
    # has no statistics (its range is calibrated from the representative data anyway).
    with _stderr_silenced(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        flatbuffer = converter.convert()
    if path is not None:
        Path(path).write_bytes(flatbuffer)
    return flatbuffer


class LiteRTModel:
    """A ``.tflite`` model loaded in the LiteRT interpreter, callable on float NumPy batches.

    Quantized (int8) inputs and outputs are handled for you: inputs are
    quantized with the input tensor's scale / zero point and outputs
    dequantized, so every precision is called and compared the same way.
    """

    def __init__(self, model: str | Path | bytes, threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        from course_lib import _stderr_silenced

        if isinstance(model, (str, Path)):
            if not Path(model).is_file():
                raise FileNotFoundError(f"no .tflite file at {model}: convert one with course_lib.tflite.convert_keras")
            source: dict[str, Any] = {"model_path": str(model)}
        else:
            source = {"model_content": bytes(model)}
        # LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate" to fd 2 on every load.
        with _stderr_silenced():
            self.interpreter = Interpreter(num_threads=threads, **source)
            self.interpreter.allocate_tensors()
        self.threads = threads
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self._batch: int | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.input["shape"])

    def _resize(self, batch: int) -> None:
        if batch != self._batch:
            shape = (batch, *self.input_shape[1:])
            self.interpreter.resize_tensor_input(self.input["index"], shape)
            from course_lib import _stderr_silenced

            with _stderr_silenced():
                self.interpreter.allocate_tensors()
            self._batch = batch

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Logits (float32) for a float batch ``N × H × W × C``."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == len(self.input_shape) - 1:
            raise ValueError(f"expected a batch (N × {' × '.join(map(str, self.input_shape[1:]))}); for one sample use x[None]")
        expected = self.input_shape[1:]
        if x.ndim != len(self.input_shape) or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"this .tflite model expects input N × {' × '.join(map(str, expected))} (NHWC), got {tuple(x.shape)}; "
                "Keras/TFLite models take channels last: use Split.nhwc(...) or x.transpose(0, 2, 3, 1)"
            )
        self.set_input(x)
        self.interpreter.invoke()
        return self.dequantize_output(self.interpreter.get_tensor(self.output["index"]))

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """A float batch in the dtype the model takes (int8 I/O: with the input tensor's scale and zero point)."""
        x = np.asarray(x, dtype=np.float32)
        if self.input["dtype"] == np.float32:
            return np.ascontiguousarray(x)
        scale, zero_point = self.input["quantization"]
        info = np.iinfo(self.input["dtype"])
        return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(self.input["dtype"])

    def set_input(self, x: np.ndarray) -> None:
        """Resize for the batch, quantize if the model takes integers, and copy ``x`` into the input tensor.

        After this, ``interpreter.invoke()`` alone runs the model: what
        :mod:`course_lib.runtimes` times as LiteRT's own latency.
        """
        self._resize(len(x))
        self.interpreter.set_tensor(self.input["index"], self.quantize_input(x))

    def dequantize_output(self, out: np.ndarray) -> np.ndarray:
        """The output tensor as float logits (int8 I/O: with the output tensor's scale and zero point)."""
        if self.output["dtype"] != np.float32:
            scale, zero_point = self.output["quantization"]
            out = (out.astype(np.float32) - zero_point) * scale
        return out.astype(np.float32)

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Logits for a whole array, in batches."""
        return np.concatenate([self(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def predict(model: str | Path | bytes, x: np.ndarray, threads: int = 1, batch_size: int = 256) -> np.ndarray:
    """Float logits of a ``.tflite`` model (a path or the flatbuffer's bytes) for ``x`` (NHWC)."""
    return LiteRTModel(model, threads=threads).predict(x, batch_size=batch_size)


def io_quantization(model: str | Path | bytes) -> dict[str, Any]:
    """Dtype, scale and zero point of the model's first input and output.

    A float tensor has scale 0 and zero point 0 (LiteRT's convention for "not quantized").
    """
    runtime = LiteRTModel(model)
    result: dict[str, Any] = {}
    for side, detail in (("input", runtime.input), ("output", runtime.output)):
        scale, zero_point = detail["quantization"]
        result[side] = {"dtype": np.dtype(detail["dtype"]).name, "scale": float(scale), "zero_point": int(zero_point)}
    return result


def execution_plan(model: str | Path | bytes, default_delegates: bool = True) -> list[str]:
    """The operators the LiteRT interpreter runs, in order, after it applied its delegates.

    With the default delegates (XNNPACK on CPU) the ops XNNPACK took are
    replaced by one ``DELEGATE`` node each partition; the original ops are
    still listed but no longer run. ``default_delegates=False`` shows the
    plain built-in kernels. (Reads the interpreter's ``_get_ops_details``,
    the detail the LiteRT Python API exposes.)
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if default_delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    source = {"model_content": bytes(model)} if isinstance(model, (bytes, bytearray)) else {"model_path": str(model)}
    interpreter = Interpreter(**source, num_threads=1, experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    return [str(op["op_name"]) for op in interpreter._get_ops_details()]
