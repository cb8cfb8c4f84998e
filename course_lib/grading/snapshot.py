"""Turn a learner's object into data: the *claim* the grader then measures itself.

These functions run where the learner's objects live: in the submission's
process under the grader, in the learner's own kernel otherwise. What they
return is plain data (file bytes, names), never an object, so nothing the
learner defined travels to the grader. The learner could replace these
functions in their own process; that only changes the claim, and every
number checked is then computed from the claim by trusted code
(:mod:`course_lib.grading.facts`) — one claim per object, so all the checks
on an object are about the same model.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: Largest snapshot (bytes) the grader accepts; the protocol carries at most this much per value.
MAX_SNAPSHOT_BYTES = 32 << 20
#: Model files the grader can measure.
ARTEFACT_FORMATS = (".pte", ".onnx", ".tflite")


def _bounded(blob: bytes, what: str) -> bytes:
    if len(blob) > MAX_SNAPSHOT_BYTES:
        raise ValueError(f"{what} has {len(blob):,} bytes; the grader accepts at most {MAX_SNAPSHOT_BYTES:,}")
    return blob


def torch_program(module: Any, example: Any) -> bytes:
    """A PyTorch module as a ``torch.export`` program (graph + weights, dynamic batch), saved to bytes.

    The module is exported in eval mode (BatchNorm statistics, no dropout)
    and put back in the mode it had. Pruning masks that are still attached
    are exported as they are (``weight_orig`` and ``weight_mask``).
    """
    import torch

    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(module).__name__}")
    example = torch.as_tensor(np.asarray(example, dtype=np.float32)).contiguous()
    if example.shape[0] < 2:  # a batch of one would specialise the batch dimension to 1
        example = torch.cat([example, example])
    from course_lib.measure import set_mode

    batch = torch.export.Dim("batch", min=1, max=65536)
    was_training = bool(getattr(module, "training", False))
    set_mode(module, False)
    try:
        try:
            program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
        except Exception:  # noqa: BLE001 - e.g. a graph exported earlier for a fixed batch: keep that batch
            program = torch.export.export(module, (example,))
    finally:
        set_mode(module, was_training)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return _bounded(buffer.getvalue(), "the exported model")


def keras_model(model: Any) -> dict[str, Any]:
    """A Keras model as its layers' class names and an fp32 ``.tflite`` of it (converted as it is).

    The class names say whether tfmot's pruning wrappers are still there; the
    ``.tflite`` holds the weights and the function the grader measures.
    """
    layers = [type(layer).__name__ for layer in getattr(model, "layers", [])]
    if not layers:
        raise TypeError(f"expected a Keras model with layers, got {type(model).__name__}")
    from course_lib import tflite

    blob = tflite.convert_keras(model, "fp32")
    return {"layers": layers, "names": [layer.name for layer in model.layers], "tflite": _bounded(bytes(blob), "the model")}


def artefact_files(path: str | Path) -> dict[str, Any]:
    """A model file as ``{"format": ".onnx", "data": bytes}``; an ONNX model's external weights are packed in."""
    path = Path(path)
    if path.suffix not in ARTEFACT_FORMATS:
        raise ValueError(f"the artefact must be a {', '.join(ARTEFACT_FORMATS)} file, got {path.name!r}")
    if not path.is_file():
        raise FileNotFoundError(f"no artefact at {path}: save your model there first")
    if path.suffix == ".onnx":
        import onnx

        blob = onnx.load(str(path)).SerializeToString()  # external data is loaded into the proto
    else:
        blob = path.read_bytes()
    return {"format": path.suffix, "data": _bounded(blob, path.name)}


def onnx_export(module: Any, example: Any) -> dict[str, Any]:
    """A PyTorch module exported once to ONNX (dynamo exporter, dynamic batch), as one file's bytes."""
    from course_lib import onnx_io

    with tempfile.TemporaryDirectory(prefix="snapshot-") as folder:
        path = onnx_io.export_onnx(module, example, Path(folder) / "model.onnx", external_data=False)
        return artefact_files(path)


#: What the grader may ask the learner's process to snapshot, by name (the child refuses anything else).
KINDS: dict[str, Callable[..., Any]] = {"torch_program": torch_program, "keras_model": keras_model, "artefact_files": artefact_files,
         "onnx_export": onnx_export}
