"""What test cells call to check a learner's *object*: measured by the grader, never by the learner's process.

A test cell that needs a fact about something the learner built — the
sparsity of their pruned model, its MACs, its accuracy on images they never
saw, the input scale of their ``.tflite`` — writes, for example::

    facts = trusted.torch_model(pruned_model, inputs=holdout_images)
    check("at least 80 % of the weights are zero", facts["sparsity"] >= 0.7995, expected=True)

In a learner's own notebook this snapshots the model and measures it right
there. Under the course's grader, ``pruned_model`` lives in the submission's
process: that process is asked only for a *snapshot* — data, e.g. the
``torch.export`` program as bytes (:mod:`course_lib.grading.snapshot`) — and
every fact is computed from it by trusted code in a fresh confined process
(:mod:`course_lib.grading.facts`). Nothing the learner's code defines or
patches computes a checked value, and facts may be used as ``expected``.
Take one snapshot per object and test cell, and use its facts for all the
checks on that object (they are then all about the same model).
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

from course_lib.grading import checks, facts, snapshot, trust

#: How long the grader lets one confined measurement run (seconds).
FACTS_TIMEOUT_S = 120.0


def _is_remote(obj: Any) -> bool:
    return bool(getattr(type(obj), "is_remote_proxy", False))


def _claim(kind: str, obj: Any, *args: Any) -> Any:
    """The snapshot of ``obj``: taken in the learner's process under the grader, here otherwise."""
    recorder = checks._recorder()
    if recorder is not None and _is_remote(obj):
        return recorder.snapshot(kind, obj, args)
    return snapshot.KINDS[kind](obj, *args)


def _bytes_of(value: Any, what: str) -> bytes:
    if _is_remote(value):
        value = value.fetch()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    raise TypeError(f"{what} must be bytes (the model file's content), got {type(value).__name__}")


def _measure(kind: str, model: bytes, inputs: dict[str, np.ndarray], options: dict[str, Any] | None = None,
             confined: bool = True) -> dict[str, Any]:
    """Facts of ``kind`` for ``model``: in a fresh confined process under the grader, in-process otherwise."""
    options = options or {}
    if not confined or checks._recorder() is None:
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory(prefix="facts-") as folder:
            for name, blob in _files(kind, model, inputs, options).items():
                (Path(folder) / name).write_bytes(blob)
            return facts.compute(kind, Path(folder), options)
    from course_lib.grading.sandbox import Limits, run_confined

    budget = _time_left(FACTS_TIMEOUT_S)
    returncode, stdout, stderr = run_confined(["-m", "course_lib.grading.facts", kind], _files(kind, model, inputs, options),
                                              Limits(timeout_s=budget))
    if returncode is None:
        raise checks.MeasurementError(f"measuring your model took longer than {budget:.0f} s")
    lines = [line for line in stdout.splitlines() if line.startswith("FACTS ")]
    if returncode != 0 or not lines:
        last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), f"exit code {returncode}")
        raise checks.MeasurementError(f"your model could not be measured: {last[:300]}")
    return trust.validate_facts(kind, lines[-1][len("FACTS "):])


def _time_left(limit: float) -> float:
    """At most ``limit`` seconds, and never more than the submission has left: measuring counts against its timeout."""
    process = getattr(getattr(checks._recorder(), "session", None), "process", None)
    remaining = process.remaining() if process is not None and hasattr(process, "remaining") else limit
    return max(1.0, min(limit, remaining))


def _files(kind: str, model: bytes, inputs: dict[str, np.ndarray], options: dict[str, Any]) -> dict[str, bytes]:
    buffer = io.BytesIO()
    arrays: dict[str, Any] = {k: np.ascontiguousarray(np.asarray(v, dtype=np.float32)) for k, v in inputs.items()}
    np.savez(buffer, **arrays)
    files = {"model.bin": model, "inputs.npz": buffer.getvalue(), "request.json": json.dumps({"kind": kind, "options": options}).encode()}
    return files


def _inputs(x: Any) -> dict[str, np.ndarray]:
    if x is None:
        return {}
    array = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    return {"x": np.asarray(array, dtype=np.float32)}


def torch_model(model: Any, inputs: Any = None, example: Any = None) -> dict[str, Any]:
    """Facts of a PyTorch module (also a PT2E graph): ``parameters``, ``is_pruned``, ``quantize_nodes``;
    with ``inputs`` also ``sparsity`` (of the weights its convolutions and linear layers use),
    ``macs`` (for one row of ``inputs``) and ``logits`` (for all of them).

    ``example`` (default: the first rows of ``inputs``) is what the model is exported with.
    """
    if example is None and inputs is None:
        raise ValueError("give inputs= (or example=): the model is exported by running it on them")
    if _is_remote(example):
        example = example.fetch()  # the learner's example batch: it only fixes the shapes the model is exported with
    example_rows = np.asarray(example.detach().cpu().numpy() if hasattr(example, "detach") else
                              example if example is not None else _inputs(inputs)["x"][:2], dtype=np.float32)
    program = _bytes_of(_claim("torch_program", model, example_rows), "the exported program")
    live = _live_outputs(model, example_rows)
    given = _inputs(inputs)
    probe = given  # with the learner's own outputs to compare, the example rows go first
    if live is not None:
        probe = {"x": np.concatenate([example_rows, given["x"]]) if given else example_rows}
    facts = _measure("torch", program, probe)
    if live is not None:
        claimed = facts.get("logits")
        if claimed is None or claimed[: len(live)].shape != live.shape or not np.allclose(claimed[: len(live)], live, rtol=1e-3, atol=1e-4):
            raise checks.MeasurementError("the snapshot of your model does not compute what your model computes "
                                          "(the same inputs gave other outputs)")
        if given:
            facts["logits"] = claimed[len(live):]
        else:
            facts.pop("logits", None)
    return facts


def _live_outputs(model: Any, x: np.ndarray) -> np.ndarray | None:
    """Under the grader: the learner's own object run on ``x`` (in eval mode), to hold its snapshot to it.

    The snapshot is taken by code in the learner's process, which the learner
    could replace to hand over another model; the object's own outputs on the
    grader's inputs must then match the snapshot's. ``None`` where this does
    not apply (not under the grader, or an object without ``eval``, such as a
    graph from ``torch.export``, whose snapshot is the graph itself).
    """
    if checks._recorder() is None or not _is_remote(model):
        return None
    import torch

    from course_lib.grading.grader import StudentError

    try:
        was_training = model.training
        model.eval()
        try:
            outputs = model(torch.as_tensor(x))
        finally:
            if was_training is True:
                model.train()
    except StudentError:
        return None
    array = np.asarray(outputs, dtype=np.float64) if not _is_remote(outputs) else None
    return array if array is not None and array.ndim >= 1 and len(array) == len(x) else None


def keras_model(model: Any, inputs: Any = None) -> dict[str, Any]:
    """Facts of a Keras model: ``layers`` (class names), ``names``, and its fp32 ``.tflite``'s facts
    (``kernels``: zeros and size per weight tensor, named after the layers; ``logits`` on NHWC ``inputs``)."""
    claim = _claim("keras_model", model)
    if not isinstance(claim, dict) or not isinstance(claim.get("layers"), list) or not isinstance(claim.get("names"), list):
        raise checks.MeasurementError("the model's snapshot is malformed")
    layers = [str(name)[:100] for name in claim["layers"][:1000]]
    names = [str(name)[:100] for name in claim["names"][:1000]]
    measured = _measure("tflite", _bytes_of(claim.get("tflite"), "the converted model"), _inputs(inputs))
    by_layer: dict[str, list[int]] = {}
    for tensor, (zeros, size) in measured["kernels"].items():  # "sequential/conv2/Conv2D" belongs to layer conv2
        layer = next((name for name in names if f"/{name}/" in f"/{tensor}/"), None)
        if layer is not None:
            total = by_layer.setdefault(layer, [0, 0])
            total[0], total[1] = total[0] + zeros, total[1] + size
    return {"layers": layers, "names": names, "kernels_by_layer": by_layer, **measured}


def sparsity_of(measured: dict[str, Any], layers: list[str] | None = None) -> float:
    """Fraction of zero kernel entries over ``layers`` (default: all) of a :func:`keras_model` measurement."""
    table = measured["kernels_by_layer"]
    chosen = list(table) if layers is None else layers
    missing = [name for name in chosen if name not in table]
    if missing or not chosen:
        raise checks.MeasurementError(f"no kernels found for layers {missing or chosen}; layers with kernels: {sorted(table)}")
    return sum(table[name][0] for name in chosen) / sum(table[name][1] for name in chosen)


def tflite_file(model: Any, inputs: Any = None) -> dict[str, Any]:
    """Facts of ``.tflite`` bytes: ``bytes``, ``input`` / ``output`` (dtype, scale, zero point), ``kernels``,
    ``float_ops`` (ops reading or writing a float tensor; 0 for full integer), ``logits``."""
    return _measure("tflite", _bytes_of(model, "the .tflite model"), _inputs(inputs))


def onnx_export(module: Any, example: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    """Export ``module`` to ONNX once (in the learner's process) and run that one file in ONNX Runtime on
    each named input batch: ``bytes`` and ``outputs`` (a dict of arrays, one per name)."""
    example_rows = np.asarray(example.detach().cpu().numpy() if hasattr(example, "detach") else example, dtype=np.float32)
    claim = _claim("onnx_export", module, example_rows)
    if not isinstance(claim, dict):
        raise checks.MeasurementError("the exported model's snapshot is malformed")
    arrays = {name: _inputs(x)["x"] for name, x in inputs.items()}
    return _measure("onnx", _bytes_of(claim.get("data"), "the exported model"), arrays)


def artefact(path: Any, inputs: Any) -> dict[str, Any]:
    """Facts of a model file the learner saved (``.pte`` / ``.onnx`` with its external data / ``.tflite``):
    ``format``, ``bytes``, ``gzip_bytes``, ``logits`` on NCHW ``inputs``, ``latency_ms`` (batch 1, one thread)."""
    claim = _claim("artefact_files", path)
    if not isinstance(claim, dict) or claim.get("format") not in snapshot.ARTEFACT_FORMATS:
        raise checks.MeasurementError("the artefact's snapshot is malformed")
    measured = _measure("artefact", _bytes_of(claim.get("data"), "the artefact"), _inputs(inputs), {"format": claim["format"]})
    return {"format": claim["format"], **measured}


def grader_file(name: str) -> bytes:
    """A reference model file the grader owns (``course_lib/assets/NAME``, see :mod:`course_lib.grading.reference`).

    Checks of code that reads a model file use it: on a file the learner chose,
    a hard-coded answer and a matching file would pass together.
    """
    from course_lib.grading.reference import ASSETS

    path = (ASSETS / name).resolve()
    if path.parent != ASSETS or not path.is_file():
        raise FileNotFoundError(f"no reference file {name!r} in {ASSETS}")
    return path.read_bytes()


def grader_file_facts(name: str, inputs: Any = None) -> dict[str, Any]:
    """:func:`tflite_file` facts of a grader-owned reference file (:func:`grader_file`), measured in this process.

    The file is the grader's, not the learner's, so it needs no confined
    process: measuring it here saves the submission's time budget the cost of
    starting one (seconds on a loaded machine) per reference check.
    """
    return _measure("tflite", grader_file(name), _inputs(inputs), confined=False)


def artefact_payload(path: Any) -> dict[str, Any]:
    """The file itself as data (``{"format", "data"}``), for a measurement that needs more than :func:`artefact`."""
    claim = _claim("artefact_files", path)
    if not isinstance(claim, dict) or claim.get("format") not in snapshot.ARTEFACT_FORMATS:
        raise checks.MeasurementError("the artefact's snapshot is malformed")
    return {"format": claim["format"], "data": _bytes_of(claim.get("data"), "the artefact")}


__all__ = ["torch_model", "keras_model", "sparsity_of", "tflite_file", "onnx_export", "artefact", "artefact_payload",
           "grader_file_facts",
           "grader_file"]
