"""TFLite / LiteRT: convert a Keras model to ``.tflite``, quantize it, and run it with the LiteRT interpreter.

Conversion still lives in TensorFlow (``tf.lite.TFLiteConverter``); running
uses ``ai_edge_litert.interpreter.Interpreter``, the maintained successor of
``tf.lite.Interpreter`` (which warns that it is deprecated).

Two ways to quantize:

* :func:`quantize_tflite` — the current path: convert to a *float* ``.tflite``
  first, then quantize that file with the LiteRT Quantizer
  (``litert_quantizer``, formerly AI Edge Quantizer) and one of its recipes
  (:data:`RECIPES`). LiteRT's docs call post-training quantization during
  conversion deprecated in favour of this.
* :func:`convert_keras` with a ``mode`` — the converter's own (legacy)
  post-training quantization, as in TensorFlow's guide:

  * ``"fp32"``: no optimization.
  * ``"dynamic"``: weights stored as int8, activations in float (dynamic range).
  * ``"float16"``: weights stored as float16 (for GPUs; a CPU dequantizes them at load).
  * ``"int8"``: full integer — weights *and* activations int8, calibrated on a
    representative dataset; inputs and outputs int8 too (for integer-only chips).
  * ``"int8_fallback"``: integer with float fallback — calibrated int8 where a
    kernel exists, float elsewhere; float inputs and outputs.
  * ``"int16x8"``: int16 activations, int8 weights (more activation precision,
    about int8's size); float inputs and outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

MODES = ("fp32", "dynamic", "float16", "int8", "int8_fallback", "int16x8")
#: Modes that calibrate activation ranges and so need a representative dataset.
CALIBRATED_MODES = ("int8", "int8_fallback", "int16x8")
#: LiteRT Quantizer recipes (functions of ``litert_quantizer.recipe``) the course uses, by name.
RECIPES = ("dynamic_wi8_afp32", "static_wi8_ai8", "static_wi8_ai16", "weight_only_wi8_afp32", "weight_only_wi4_afp32")


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
        mode: one of :data:`MODES`.
        representative: ``N × H × W × C`` inputs for the calibrated modes
            (:data:`CALIBRATED_MODES`); the first ``calibration_samples`` are fed one at a time.
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
    if mode in CALIBRATED_MODES:
        converter.representative_dataset = _representative_dataset(mode, representative, calibration_samples)
    if mode == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    if mode == "int16x8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    import warnings

    from course_lib import quiet_native_stderr

    # The converter prints MLIR pass notes to fd 2 and warns that an int8 *input*
    # has no statistics (its range is calibrated from the representative data anyway).
    with quiet_native_stderr(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        flatbuffer = converter.convert()
    if path is not None:
        Path(path).write_bytes(flatbuffer)
    return flatbuffer


def _representative_dataset(
    mode: str, representative: np.ndarray | None, calibration_samples: int
) -> Callable[[], Iterable[list[np.ndarray]]]:
    """The converter's calibration generator: one sample at a time, as a batch of one."""
    if representative is None or len(representative) == 0:
        raise ValueError(f"mode={mode!r} needs representative inputs (e.g. a few hundred training images) to calibrate")
    if calibration_samples < 1:
        raise ValueError(f"calibration_samples must be at least 1, got {calibration_samples}")
    samples = np.asarray(representative[:calibration_samples], dtype=np.float32)

    def dataset() -> Iterable[list[np.ndarray]]:
        for sample in samples:
            yield [sample[None]]

    return dataset


def quantize_tflite(
    float_model: str | Path | bytes,
    recipe: str,
    representative: np.ndarray | None = None,
    path: str | Path | None = None,
    calibration_samples: int = 200,
) -> bytes:
    """Quantize a float ``.tflite`` with the LiteRT Quantizer and one of its :data:`RECIPES`.

    This is the path LiteRT now recommends: convert to float once, then
    quantize the file (the converter's ``optimizations`` are the legacy path).
    Static recipes (``static_*``) calibrate activation ranges by running the
    float model on ``representative`` (the first ``calibration_samples``,
    one at a time); the others need no data.
    """
    import contextlib
    import io
    import warnings

    from litert_quantizer import Quantizer
    from litert_quantizer import recipe as recipes

    from course_lib import quiet_native_stderr

    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")
    content = Path(float_model).read_bytes() if isinstance(float_model, (str, Path)) else bytes(float_model)
    quantizer = Quantizer(bytearray(content), getattr(recipes, recipe)())
    calibration = None
    if quantizer.need_calibration:
        if representative is None or len(representative) == 0:
            raise ValueError(f"recipe {recipe!r} calibrates activations: give representative inputs (e.g. 200 training images)")
        if calibration_samples < 1:
            raise ValueError(f"calibration_samples must be at least 1, got {calibration_samples}")
        signatures = LiteRTModel(content).interpreter.get_signature_list()
        key = next(iter(signatures))
        input_name = signatures[key]["inputs"][0]
        samples = np.asarray(representative[:calibration_samples], dtype=np.float32)
        # The calibrator warns that it keeps every tensor (it must, to see their ranges) and draws a progress bar.
        with quiet_native_stderr(), contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors")
            calibration = quantizer.calibrate({key: [{input_name: sample[None]} for sample in samples]}, num_threads=1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors")
        result = quantizer.quantize(calibration, enable_progress_report=False)
    flatbuffer = bytes(result.quantized_model)
    if path is not None:
        Path(path).write_bytes(flatbuffer)
    return flatbuffer


def op_dtypes(model: str | Path | bytes) -> list[dict[str, Any]]:
    """Every operator of the model's graph with the dtypes of its inputs and outputs, in execution order.

    What tells "full integer" from "integer with float fallback": a float op
    left in the graph shows float32 tensors. Read without the XNNPACK
    delegate, so the list shows the file's own operators, not the delegate's
    fused node.
    """
    interpreter = LiteRTModel(model, xnnpack=False).interpreter
    ops = []
    for op in interpreter._get_ops_details():  # the interpreter's own op list (what the Analyzer prints too)
        ops.append({
            "op": op["op_name"],
            "inputs": [np.dtype(t).name for t in op.get("operand_types", [])],
            "outputs": [np.dtype(t).name for t in op.get("result_types", [])],
        })
    return ops


def layer_errors(model: Any, representative: np.ndarray, samples: int = 100) -> Any:
    """Per-layer error of the converter's full-integer quantization, from TensorFlow's ``QuantizationDebugger``.

    The debugger converts ``model`` with int8 activations and, after every
    quantized op, compares its dequantized output with the float op's
    output on ``samples`` representative inputs. Returns a DataFrame, one row
    per quantized tensor, with the op, the tensor, its scale and
    ``rmse/scale`` (the root-mean-square error in quantization steps: about
    0.29 = 1/√12 is the floor of rounding alone; much more means clipping or
    a badly suited range).
    """
    import csv
    import io
    import warnings

    import pandas as pd

    from course_lib import import_tensorflow, quiet_native_stderr

    tf = import_tensorflow()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative_dataset("int8", representative, samples)
    with quiet_native_stderr(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=_representative_dataset("int8", representative, samples))
        debugger.run()
    buffer = io.StringIO()
    debugger.layer_statistics_dump(buffer)
    rows = list(csv.DictReader(io.StringIO(buffer.getvalue())))
    frame = pd.DataFrame(rows)
    for column in ("scale", "rmse/scale", "mean_error", "max_abs_error"):
        if column in frame:
            frame[column] = frame[column].astype(float)
    if "mean_squared_error" in frame and "scale" in frame:
        frame["rmse/scale"] = np.sqrt(frame["mean_squared_error"].astype(float)) / frame["scale"]
    return frame[[c for c in ("op_name", "tensor_name", "scale", "rmse/scale", "max_abs_error") if c in frame]]


class LiteRTModel:
    """A ``.tflite`` model loaded in the LiteRT interpreter, callable on float NumPy batches.

    Quantized (int8) inputs and outputs are handled for you: inputs are
    quantized with the input tensor's scale / zero point and outputs
    dequantized, so every precision is called and compared the same way.
    """

    def __init__(self, model: str | Path | bytes, threads: int = 1, xnnpack: bool = True) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        from course_lib import quiet_native_stderr

        if isinstance(model, (str, Path)):
            if not Path(model).is_file():
                raise FileNotFoundError(f"no .tflite file at {model}: convert one with course_lib.tflite.convert_keras")
            source: dict[str, Any] = {"model_path": str(model)}
        else:
            source = {"model_content": bytes(model)}
        # XNNPACK is the delegate LiteRT applies by default on CPU; without it, LiteRT's own built-in kernels run.
        if not xnnpack:
            source["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self.xnnpack = xnnpack
        # LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate" to fd 2 on every load.
        with quiet_native_stderr():
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
            from course_lib import quiet_native_stderr

            with quiet_native_stderr():
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
