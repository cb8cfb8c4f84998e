"""ONNX: export from PyTorch, check, summarise, run in ONNX Runtime, compare, convert back, quantize.

ONNX is a file format for a computation graph: *nodes* (operators from a
versioned *opset*), *initializers* (the weights) and typed inputs/outputs.
Any runtime that implements the opset can run the file — ONNX Runtime on
servers, phones and browsers, TensorRT, OpenVINO, ...

Facts for the pinned versions (torch 2.14, onnx 1.23, onnxruntime 1.32):

* ``torch.onnx.export(..., dynamo=True)`` (the current exporter, built on
  ``torch.export``) writes opset 18+ and, by default, the weights to an
  *external data* file beside the ``.onnx``: count both (:func:`onnx_bytes`).
  ``dynamo=False`` is the legacy TorchScript exporter (deprecated).
* There is no ``torch.onnx.import_to_pytorch``. Going back to PyTorch needs a
  third-party converter: ``onnx2pytorch`` (0.6.0, 2026) converts the dynamo
  exporter's files and keeps every weight twice (:func:`drop_duplicate_buffers`);
  ``onnx2torch`` (last release 1.5.15, 2024: unmaintained) implements
  ``Reshape`` only up to version 14 and without ``allowzero=1``, which the
  dynamo exporter writes — :func:`for_onnx2torch` down-converts the opset and
  clears ``allowzero`` where that provably changes nothing (see lecture 09).
"""

from __future__ import annotations

import collections
import contextlib
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


def export_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: str | Path,
    dynamic_batch: bool = True,
    legacy: bool = False,
    external_data: bool = True,
    verify: bool = False,
    report_dir: str | Path | None = None,
) -> Path:
    """Export ``model`` to ONNX at ``path`` and check it; return the path.

    Args:
        example: an input batch (at least 2 samples when ``dynamic_batch``:
            a batch of 1 would be fixed into the graph).
        dynamic_batch: leave the batch dimension free (``batch`` in the file).
        legacy: use the deprecated TorchScript exporter (``dynamo=False``),
            e.g. for converters that only read its output.
        external_data: dynamo exporter only — weights in ``<path>.data``
            beside the graph (the default) or inside the one file.
        verify: dynamo exporter only — the exporter's own smoke test: it runs
            the file in ONNX Runtime on ``example`` and compares with PyTorch.
            It only *logs* a difference above 5e-3 (it does not raise), and
            only on the example: a parity check on real inputs
            (:func:`parity`) is still needed.
        report_dir: dynamo exporter only — write the exporter's Markdown
            report (exported program, ONNX graph, operator table, the
            verification results with ``verify``, the error on failure) into
            this folder (``report=True, artifacts_dir=...``).

    Raises:
        RuntimeError: the export failed; the message keeps the exporter's
            own summary (which names the failing Python line or operator).
    """
    from course_lib import quiet_native_stderr
    from course_lib.measure import example_batch, set_mode

    path = Path(path)
    if legacy and (verify or report_dir is not None):
        raise ValueError("verify and report_dir are options of the dynamo exporter; the legacy one has neither")
    example = example_batch(example, dynamic_batch)
    set_mode(model, False)
    quiet = io.StringIO()  # the dynamo exporter prints its progress ("[torch.onnx] ...") to stdout
    try:
        # A failing export also prints the partial graphs to stderr; the summary below says what matters.
        with contextlib.redirect_stdout(quiet), _torch_logs_quiet(), quiet_native_stderr():
            if legacy:
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the deprecation is taught in words in lecture 09
                    torch.onnx.export(
                        model, (example,), str(path), dynamo=False, input_names=["input"], output_names=["logits"],
                        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None,
                    )
            else:
                shapes = ({0: torch.export.Dim("batch", min=1, max=65536)},) if dynamic_batch else None
                extra: dict[str, Any] = {"verify": verify}
                if report_dir is not None:
                    Path(report_dir).mkdir(parents=True, exist_ok=True)
                    extra.update(report=True, artifacts_dir=str(report_dir))
                torch.onnx.export(
                    model, (example,), str(path), dynamo=True, dynamic_shapes=shapes, input_names=["input"],
                    output_names=["logits"], external_data=external_data, verbose=False, **extra,
                )
    except Exception as error:
        raise RuntimeError(f"ONNX export of {type(model).__name__} failed:\n" + _export_error_summary(error)) from error
    check_onnx(path)
    return path


def _export_error_summary(error: Exception) -> str:
    """The exporter's own summary (what failed) and, when it names one, the user's line that raised."""
    text = str(error)
    summary = text.split("## Exception summary", 1)[1] if "## Exception summary" in text else text
    lines = [line.strip() for line in summary.strip().splitlines() if line.strip()]
    keep = [line for line in lines[:4] if not line.startswith(("For ", "If you", "consider using"))]
    if "The following call raised this error:" in text:
        after = [line.strip() for line in text.split("The following call raised this error:", 1)[1].strip().splitlines()]
        keep += ["raised at: " + " | ".join(line for line in after[:2] if line)]
    return "\n".join(keep)


@contextlib.contextmanager
def _torch_logs_quiet() -> Any:
    """Raise every ``torch.*`` logger to ERROR for a block (export failures log whole graphs as warnings)."""
    import logging

    loggers = [logging.getLogger(name) for name in list(logging.Logger.manager.loggerDict) if name.startswith("torch")]
    previous = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, previous):
            logger.setLevel(level)


def check_onnx(path: str | Path) -> Any:
    """``onnx.checker.check_model`` and shape inference; return the inferred model proto."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX file at {path}: export one with course_lib.onnx_io.export_onnx")
    missing = [p.name for p in external_data_files(path) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{path.name} refers to external data {missing} that is not beside it: copy the .data file too")
    # Check the loaded model (weights read into memory): the checker's own lookup of external
    # data resolves real paths, which fails where the working directory is a bind mount (the grader's jail).
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    return onnx.shape_inference.infer_shapes(model)


def external_data_files(path: str | Path) -> list[Path]:
    """The external data files an ``.onnx`` refers to (empty when the weights are inside it)."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    locations = {
        entry.value
        for tensor in model.graph.initializer
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return [path.parent / location for location in sorted(locations)]


def onnx_bytes(path: str | Path) -> int:
    """Bytes of the ``.onnx`` file plus its external data: what must be shipped."""
    path = Path(path)
    return path.stat().st_size + sum(p.stat().st_size for p in external_data_files(path))


def graph_summary(path: str | Path) -> dict[str, Any]:
    """Opset, operator counts, initializers (count, parameters, bytes), inputs/outputs and file bytes."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    initializers = [numpy_helper.to_array(t) for t in model.graph.initializer]

    def shape(value: Any) -> list[Any]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    return {
        "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        "ops": dict(collections.Counter(node.op_type for node in model.graph.node)),
        "initializers": len(initializers),
        "parameters": int(sum(a.size for a in initializers)),
        "initializer_bytes": int(sum(a.nbytes for a in initializers)),
        "inputs": {v.name: shape(v) for v in model.graph.input},
        "outputs": {v.name: shape(v) for v in model.graph.output},
        "file_bytes": onnx_bytes(path),
    }


class OrtModel:
    """An ONNX Runtime session on the CPU, callable on one NumPy batch (first input → first output)."""

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no ONNX file at {path}: export one with course_lib.onnx_io.export_onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.path = path
        self.threads = threads

    def run_all(self, x: np.ndarray) -> list[np.ndarray]:
        """Every output of the graph for one batch."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        expected = self.input.shape
        if x.ndim != len(expected) or any(isinstance(e, int) and e != g for e, g in zip(expected, x.shape)):
            raise ValueError(
                f"{self.path.name} expects input {self.input.name!r} of shape {expected} (strings are free dimensions), "
                f"got {tuple(x.shape)}"
            )
        return self.session.run(None, {self.input.name: x})

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.run_all(x)[0]

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        return np.concatenate([self(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


@dataclass
class Parity:
    """How closely two runtimes agree on the same inputs."""

    max_abs_diff: float
    top1_agreement: float
    outputs: int

    def ok(self, atol: float = 1e-4, min_agreement: float = 0.999) -> bool:
        return self.max_abs_diff <= atol and self.top1_agreement >= min_agreement


def parity(
    reference: Sequence[np.ndarray] | np.ndarray,
    candidate: Sequence[np.ndarray] | np.ndarray,
    names: Sequence[str] | None = None,
    atol: float | None = None,
) -> Parity:
    """Compare outputs of two runtimes: max |difference| over all outputs and top-1 agreement of the first.

    With ``atol``, raise an ``AssertionError`` naming the first output whose
    difference exceeds it (or whose shape differs), so a failing export says
    *where* the runtimes part ways.
    """
    refs = [reference] if isinstance(reference, np.ndarray) else list(reference)
    cands = [candidate] if isinstance(candidate, np.ndarray) else list(candidate)
    names = list(names) if names is not None else [f"output {i}" for i in range(len(refs))]
    if len(refs) != len(cands):
        raise AssertionError(f"the reference has {len(refs)} outputs, the candidate {len(cands)}")
    worst = 0.0
    for name, ref, cand in zip(names, refs, cands):
        ref, cand = np.asarray(ref, dtype=np.float64), np.asarray(cand, dtype=np.float64)
        if ref.shape != cand.shape:
            raise AssertionError(f"{name}: shape {cand.shape} differs from the reference's {ref.shape}")
        diff = float(np.abs(ref - cand).max()) if ref.size else 0.0
        if atol is not None and diff > atol:
            where = np.unravel_index(int(np.abs(ref - cand).argmax()), ref.shape)
            raise AssertionError(f"{name}: max |difference| {diff:.3g} > {atol:g} (first at index {tuple(int(i) for i in where)})")
        worst = max(worst, diff)
    first_ref, first_cand = np.asarray(refs[0]), np.asarray(cands[0])
    agreement = float((first_ref.argmax(-1) == first_cand.argmax(-1)).mean()) if first_ref.ndim >= 1 else 1.0
    return Parity(max_abs_diff=worst, top1_agreement=agreement, outputs=len(refs))


def export_and_compare(model: nn.Module, example: torch.Tensor, x: np.ndarray, path: str | Path = "model.onnx") -> dict[str, float]:
    """Export ``model``, run ``x`` through PyTorch and ONNX Runtime, return ``max_abs_diff`` and ``top1_agreement``."""
    from course_lib.train import predict_logits

    export_onnx(model, example, path)
    result = parity(predict_logits(model, x), OrtModel(path).predict(x))
    return {"max_abs_diff": result.max_abs_diff, "top1_agreement": result.top1_agreement}


def to_pytorch(path: str | Path, converter: str = "onnx2pytorch") -> nn.Module:
    """Convert an ONNX file back to a PyTorch module with a third-party converter.

    ``"onnx2pytorch"`` (maintained; 0.6.0 of 2026) reads the dynamo exporter's
    files. ``"onnx2torch"`` (unmaintained: last release 1.5.15, 2024) knows
    ``Reshape`` only up to version 14 and refuses ``allowzero=1``, both of
    which the dynamo exporter writes: pass it a copy made by
    :func:`for_onnx2torch`.
    """
    import onnx

    if converter == "onnx2pytorch":
        from onnx2pytorch import ConvertModel

        return ConvertModel(onnx.load(str(path)), experimental=True).eval()
    if converter == "onnx2torch":
        import onnx2torch

        try:
            return onnx2torch.convert(str(path)).eval()
        except NotImplementedError as error:
            raise NotImplementedError(
                f"onnx2torch cannot convert {Path(path).name}: {error}. onnx2torch is unmaintained (last release 2024); "
                "down-convert the file first with onnx_io.for_onnx2torch, or use converter='onnx2pytorch'."
            ) from None
    raise ValueError(f"converter must be 'onnx2pytorch' or 'onnx2torch', got {converter!r}")


def for_onnx2torch(source: str | Path, target: str | Path, opset: int = 18) -> Path:
    """A copy of an exported file that onnx2torch can read: opset ``opset``, ``Reshape`` without ``allowzero``.

    Two things stop onnx2torch on the dynamo exporter's output: ``Reshape-19``
    (onnx2torch implements versions 5, 13 and 14) and the attribute
    ``allowzero=1`` on every ``Reshape``. ``onnx.version_converter`` takes the
    opset down to ``opset`` (≤ 18 gives ``Reshape-14``) but keeps
    ``allowzero=1``. That attribute only matters when the target shape holds
    a 0 (copy that dimension, or make it 0): it is cleared only where the
    shape is a constant initializer without a 0, so the graph computes the
    same function; any other ``Reshape`` with ``allowzero=1`` is an error.
    """
    import onnx
    from onnx import numpy_helper, version_converter

    source, target = Path(source), Path(target)
    if opset > 18:
        raise ValueError(f"onnx2torch implements Reshape up to version 14: down-convert to opset 18 or lower, not {opset}")
    model = version_converter.convert_version(onnx.load(str(source)), opset)
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "Reshape":
            continue
        for attribute in list(node.attribute):
            if attribute.name != "allowzero" or attribute.i == 0:
                continue
            shape = constants.get(node.input[1])
            if shape is None or (shape == 0).any():
                raise ValueError(f"Reshape {node.name!r} has allowzero=1 and a shape that is not a constant without 0: "
                                 "clearing it could change the result")
            node.attribute.remove(attribute)
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
    return target


def drop_duplicate_buffers(module: nn.Module) -> list[str]:
    """Remove (in place) every buffer equal to one of ``module``'s parameters; return the removed names.

    onnx2pytorch registers every ONNX initializer as a buffer *and* gives the
    rebuilt layers their own parameters, so each weight is saved twice. Only
    buffers with a parameter of the same shape and values are duplicates;
    other buffers (e.g. a ``Reshape``'s target shape, which the converted
    graph reads at ``forward``) are kept. Check the outputs afterwards.
    """
    parameters = [p.detach() for p in module.parameters()]
    removed = []
    for owner_name, owner in module.named_modules():
        for name, buffer in list(owner.named_buffers(recurse=False)):
            if any(p.shape == buffer.shape and p.dtype == buffer.dtype and torch.equal(p, buffer) for p in parameters):
                delattr(owner, name)
                removed.append(f"{owner_name}.{name}" if owner_name else name)
    return removed


def op_types(path: str | Path) -> dict[str, int]:
    """Node count per operator type, prefixed with its domain when it is not the default ``ai.onnx`` (e.g. ``com.microsoft::QGemm``)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return dict(collections.Counter(f"{n.domain}::{n.op_type}" if n.domain else n.op_type for n in model.graph.node))


def ort_optimized_model(source: str | Path, target: str | Path, level: str = "all") -> Path:
    """The graph ONNX Runtime actually runs, after its graph optimizations, saved to ``target``.

    ``SessionOptions.optimized_model_filepath`` makes the session write the
    fused graph (e.g. QDQ pairs fused into ``QLinearConv`` / ``QGemm``). At
    ``level="all"`` (the default a session runs) the result may hold layout
    transforms specific to this CPU: it is for reading, not for shipping;
    ``"extended"`` stops before those.
    """
    import onnxruntime as ort

    levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    if level not in levels:
        raise ValueError(f"level must be one of {sorted(levels)}, got {level!r}")
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[level]
    options.optimized_model_filepath = str(target)
    options.intra_op_num_threads = 1
    options.log_severity_level = 3  # the "hardware specific" warning is the docstring's caveat
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    return Path(target)


def ort_node_placement(path: str | Path, x: np.ndarray, providers: Sequence[str] = ("CPUExecutionProvider",)) -> dict[str, dict[str, int]]:
    """Which execution provider ran each node type, read from ORT's own profile of one run on ``x``.

    ``{provider: {op type: nodes}}``. With an accelerator's provider listed
    first (e.g. ``"XnnpackExecutionProvider"``, ``"CoreMLExecutionProvider"``
    in builds that have them) the nodes it cannot take fall back to the next
    one; this shows where.
    """
    import json

    import onnxruntime as ort

    available = ort.get_available_providers()
    missing = [p for p in providers if p not in available]
    if missing:
        raise ValueError(f"this onnxruntime build has no {missing}; it has {available}")
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=list(providers))
    session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)})
    profile = Path(session.end_profiling())
    try:
        events = json.loads(profile.read_text())
    finally:
        profile.unlink(missing_ok=True)
    placement: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    seen: set[str] = set()
    for event in events:
        args = event.get("args", {})
        if event.get("cat") == "Node" and "provider" in args and event.get("name", "").endswith("_kernel_time"):
            node = event["name"][: -len("_kernel_time")]
            if node not in seen:
                seen.add(node)
                placement[args["provider"]][args.get("op_name", "?")] += 1
    return {provider: dict(counts) for provider, counts in placement.items()}


# --- ONNX Runtime quantization ---------------------------------------------------------------------


class _CalibrationReader:
    """Feeds calibration batches to ``quantize_static`` (its ``CalibrationDataReader`` protocol)."""

    def __init__(self, input_name: str, batches: Iterable[np.ndarray]) -> None:
        self._items = iter([{input_name: np.ascontiguousarray(b, dtype=np.float32)} for b in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


def ort_quantize_dynamic(source: str | Path, target: str | Path) -> Path:
    """ONNX Runtime dynamic quantization: int8 weights, activations quantized at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _root_log_level_error():  # "consider pre-processing": it does not apply to dynamic quantization
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    return Path(target)


@contextlib.contextmanager
def _root_log_level_error() -> Any:
    import logging

    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(previous)


def ort_quantize_static(
    source: str | Path, target: str | Path, calibration: np.ndarray, batch_size: int = 32, per_channel: bool = True,
    method: str = "MinMax", reduce_range: bool = False,
) -> Path:
    """ONNX Runtime static quantization in QDQ format, calibrated on ``calibration`` inputs.

    Runs ``quant_pre_process`` first (shape inference and graph optimisation,
    as ONNX Runtime recommends), then ``quantize_static`` with uint8
    activations and int8 weights (U8S8), per channel by default. ``method``
    is the calibration method (``MinMax`` — ORT's default —, ``Entropy``,
    ``Percentile`` or ``Distribution``); ``reduce_range`` quantizes weights
    to 7 bits, ORT's remedy for U8S8 saturation on x86 CPUs without VNNI.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CalibrationMethod.__members__:
        raise ValueError(f"method must be one of {list(CalibrationMethod.__members__)}, got {method!r}")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source, target = Path(source), Path(target)
    prepared = target.with_name(target.stem + "_prep.onnx")
    quant_pre_process(str(source), str(prepared))
    input_name = OrtModel(prepared).input.name
    batches = [calibration[i : i + batch_size] for i in range(0, len(calibration), batch_size)]
    quantize_static(
        str(prepared), str(target), _CalibrationReader(input_name, batches), quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=per_channel,
        reduce_range=reduce_range, calibrate_method=CalibrationMethod[method],
    )
    prepared.unlink(missing_ok=True)
    return target
