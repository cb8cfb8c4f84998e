"""The graded capstone's file check: the grader measures a learner's model file itself.

Exercise 12 is scored on a file, not on values: the learner's code trains a
model and saves a ``.pte`` / ``.onnx`` / ``.tflite``; the test cell takes the
file's bytes as data (:func:`course_lib.grading.trusted.artefact_payload`) and
:func:`grade_artefact` measures it — gzip size, batch-1 one-thread latency
timed in alternating rounds against an fp32 baseline file the grader builds
itself in the same format, and top-1 on a hold-out half of the digits test
set that :func:`course_lib.data.exercise_split` never returns — in a fresh
process confined like a submission, which never ran learner code.
"""

from __future__ import annotations

import json
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from course_lib import data, deploy
from course_lib.grading import checks, snapshot, trust

FORMATS = snapshot.ARTEFACT_FORMATS
#: Largest artefact the grader accepts (bytes): what one snapshot may carry.
MAX_ARTEFACT_BYTES = snapshot.MAX_SNAPSHOT_BYTES

_BASELINE_LOCK = threading.Lock()
_BASELINE_DIR: dict[str, Path] = {}


def baseline_artefact(fmt: str) -> Path:
    """The fp32 baseline CNN as a ``fmt`` file, built once per process (weights do not change latency)."""
    from course_lib.capstone import cnn  # the capstone's baseline architecture

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    with _BASELINE_LOCK:
        if fmt not in _BASELINE_DIR:
            folder = Path(tempfile.mkdtemp(prefix="capstone-baseline-"))
            model = cnn(seed=0)
            example = torch.as_tensor(data.load_digits().x_train[:32])
            if fmt == ".pte":
                path = deploy.export_executorch(model, example, folder / "baseline.pte")
            elif fmt == ".onnx":
                from course_lib.onnx_io import export_onnx

                path = export_onnx(model, example, folder / "baseline.onnx", external_data=False)
            else:
                from course_lib import tflite
                from course_lib.models.keras_twin import keras_twin_of

                path = folder / "baseline.tflite"
                tflite.convert_keras(keras_twin_of(model), "fp32", path=path)
            _BASELINE_DIR[fmt] = path
        return _BASELINE_DIR[fmt]


def measure_for_grading(
    path: str | Path, baseline: str | Path, on: str = "holdout", rounds: int = 5, repeats: int = 100,
) -> dict[str, Any]:
    """Size, latency ratio to ``baseline`` and top-1 of one artefact (runs in the confined measuring process).

    ``on`` is ``"holdout"`` (the grader) or ``"test"`` (the exercise's own
    test half, for a learner checking their work). Latency is batch 1 on one
    thread, the artefact and the baseline timed in alternating rounds so that
    a busy machine slows both alike; the speedup is the ratio of their medians.
    """
    from course_lib.measure import measure_latency_interleaved

    path, baseline = Path(path), Path(baseline)
    if on not in ("holdout", "test"):
        raise ValueError(f"on must be 'holdout' or 'test', got {on!r}")
    if on == "holdout":
        x, y = data.holdout()
    else:
        split = data.exercise_split()
        x, y = split.x_test, split.y_test
    x_run = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if path.suffix == ".tflite" else x
    with deploy.executorch_threads(1 if path.suffix == ".pte" else None):
        model = deploy.load_artefact(path)
        reference = deploy.load_artefact(baseline)
        logits = np.asarray(model.predict(x_run))
        if logits.shape != (len(y), 10):
            raise ValueError(f"the artefact returned logits of shape {logits.shape}; expected ({len(y)}, 10)")
        stats = measure_latency_interleaved({"ours": (model, x_run[:1]), "baseline": (reference, x_run[:1])},
                                            rounds=rounds, repeats=repeats, threads=1)
    raw, gz = deploy.artefact_bytes(path)
    _, base_gz = deploy.artefact_bytes(baseline)
    latency, base_latency = stats["ours"].median_ms, stats["baseline"].median_ms
    return {
        "format": path.suffix, "bytes": raw, "gzip_bytes": gz, "baseline_gzip_bytes": base_gz,
        "latency_ms": latency, "baseline_latency_ms": base_latency, "speedup": base_latency / latency,
        "top1": float((logits.argmax(1) == y).mean()), "evaluated_on": on, "images": int(len(y)),
    }


def grade_artefact(payload: Any, timeout_s: float = 180.0) -> dict[str, Any]:
    """The grader's measurement of a learner's artefact (``{"format", "data"}`` from ``trusted.artefact_payload``).

    Under the course's grader, accuracy is measured on the hold-out half of
    the test set (:func:`course_lib.data.holdout`); in a learner's own notebook,
    on the half the learner has, so the hold-out stays unseen. The file (and
    the grader's baseline file) are measured by :func:`measure_for_grading`
    in a fresh confined process: the file is untrusted input to native
    parsers, so a file that crashes or hangs a runtime costs the learner the
    checks, and nothing it could exploit runs with the grader's privileges.
    Returns the measurements, or ``{"error": "..."}`` saying what went wrong.
    """
    if not isinstance(payload, dict) or payload.get("format") not in FORMATS:
        return {"error": "no artefact: the submission must save a .pte, .onnx or .tflite file and return its path"}
    blob = payload.get("data")
    if isinstance(blob, np.ndarray):  # an older payload: bytes as a uint8 array
        blob = blob.astype(np.uint8).tobytes() if blob.size and blob.min() >= 0 and blob.max() <= 255 else b""
    if not isinstance(blob, (bytes, bytearray)) or not blob or len(blob) > MAX_ARTEFACT_BYTES:
        return {"error": "the artefact is empty, too large or not bytes"}
    from course_lib.grading.sandbox import Limits, run_confined

    fmt = payload["format"]
    on = "holdout" if checks._recorder() is not None else "test"
    files = {f"submission{fmt}": bytes(blob), f"baseline{fmt}": baseline_artefact(fmt).read_bytes(),
             "request.json": json.dumps({"kind": "capstone", "options": {"format": fmt, "on": on}}).encode()}
    from course_lib.grading.trusted import _time_left

    timeout_s = _time_left(timeout_s)
    returncode, stdout, stderr = run_confined(["-m", "course_lib.grading.facts", "capstone"], files,
                                              Limits(timeout_s=timeout_s))
    if returncode is None:
        return {"error": f"measuring the artefact took longer than {timeout_s:.0f} s"}
    lines = [line for line in stdout.splitlines() if line.startswith("FACTS ")]
    if returncode != 0 or not lines:
        last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), f"exit code {returncode}")
        return {"error": f"the artefact could not be run: {last[:300]}"}
    try:
        return trust.validate_facts("capstone", lines[-1][len("FACTS "):])
    except trust.MessageError as exc:
        return {"error": str(exc)}


def describe(result: dict[str, Any], accuracy: bool = True) -> str:
    """One line of the grader's measurement, for feedback and for the learner's own check.

    ``accuracy=False`` leaves top-1 out (feedback on size and speed must not reveal the hold-out score).
    """
    if "error" in result:
        return str(result["error"])
    text = (f"measured {result['format']}: {result['gzip_bytes']:,} B gzip (fp32 baseline {result['baseline_gzip_bytes']:,} B); "
            f"{result['latency_ms']:.3f} ms vs baseline {result['baseline_latency_ms']:.3f} ms ({result['speedup']:.2f}× faster)")
    return text + (f"; top-1 {result['top1']:.3f} on the {result['evaluated_on']} images" if accuracy else "")
