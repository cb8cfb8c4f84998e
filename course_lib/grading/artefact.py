"""The graded capstone's file check: the grader measures a learner's model file itself.

Exercise 12 is scored on a file, not on values: the learner's code trains a
model and saves a ``.pte`` / ``.onnx`` / ``.tflite``; the test cell takes the
file's bytes as data (:func:`course_lib.grading.trusted.artefact_payload`) and
:func:`grade_artefact` measures it — gzip size, batch-1 one-thread latency
(runtime-only, :mod:`course_lib.runtimes`) timed in interleaved rounds with
the fp32 baseline CNN in **every** runtime the grader builds, and top-1 on a
hold-out half of the digits test set that :func:`course_lib.data.exercise_split`
never returns — in a fresh process confined like a submission, which never
ran learner code.

The speed line follows the capstone's rule (:mod:`course_lib.capstone`): the
file is compared with the **fastest** fp32 baseline file in any runtime, not
with the baseline in its own format, so choosing a runtime whose fp32 file is
slow earns nothing. The ratio has a 95 % interval paired by round, widened
by the tolerance band :data:`SPEED_TOLERANCE` (±10 %); the line is failed
only when that whole band is below :data:`SPEEDUP` (a ratio whose band
crosses the line is "inconclusive" and gets the benefit of the doubt:
machine load must not decide a grade).
"""

from __future__ import annotations

import json
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from course_lib import data, deploy, stats
from course_lib.grading import checks, snapshot, trust

FORMATS = snapshot.ARTEFACT_FORMATS
#: Largest artefact the grader accepts (bytes): what one snapshot may carry.
MAX_ARTEFACT_BYTES = snapshot.MAX_SNAPSHOT_BYTES
#: The speed line: at least this many times faster than the fastest fp32 baseline file.
SPEEDUP = 1.5
#: The tolerance band around it (relative), as in ``capstone.Budget.speed_tolerance``.
SPEED_TOLERANCE = 0.10

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


def baseline_artefacts() -> dict[str, Path]:
    """The fp32 baseline CNN in every format the grader knows (the speed line's candidates)."""
    return {fmt: baseline_artefact(fmt) for fmt in FORMATS}


def measure_for_grading(
    path: str | Path, baselines: dict[str, Path] | str | Path, on: str = "holdout", rounds: int = 9, repeats: int = 100,
) -> dict[str, Any]:
    """Size, speedup against the fastest fp32 baseline file, and top-1 of one artefact (in the confined process).

    ``baselines`` maps a format to the grader's fp32 baseline file in it (one
    path is accepted too). ``on`` is ``"holdout"`` (the grader) or ``"test"``
    (the exercise's own test half, for a learner checking their work).
    Latency is the runtime's own call (:func:`course_lib.runtimes.time_interleaved`),
    batch 1, one thread in every runtime, the artefact and every baseline
    timed in the same interleaved rounds so that a busy machine slows all
    alike. The reference is the baseline file with the lowest median; the
    speedup is the median of the per-round ratios with a bootstrap interval.
    """
    from course_lib import runtimes

    path = Path(path)
    references = {Path(baselines).suffix: Path(baselines)} if isinstance(baselines, (str, Path)) else dict(baselines)
    if not references:
        raise ValueError("give at least one baseline file")
    if on not in ("holdout", "test"):
        raise ValueError(f"on must be 'holdout' or 'test', got {on!r}")
    if on == "holdout":
        x, y = data.holdout()
    else:
        split = data.exercise_split()
        x, y = split.x_test, split.y_test
    model = runtimes.load(path, threads=1)
    logits = np.asarray(model.predict(x))
    if logits.shape != (len(y), 10):
        raise ValueError(f"the artefact returned logits of shape {logits.shape}; expected ({len(y)}, 10)")
    loaded = {"ours": model, **{f"baseline{fmt}": runtimes.load(file, threads=1) for fmt, file in references.items()}}
    timings = runtimes.time_interleaved(loaded, x[:1], rounds=rounds, repeats=repeats)
    fastest = min((name for name in loaded if name != "ours"), key=lambda name: timings[name].median_ms)
    ratio = runtimes.speedup(timings[fastest], timings["ours"])
    size, base_size = model.size(), loaded[fastest].size()
    return {
        "format": path.suffix, "bytes": size.bytes, "gzip_bytes": size.gzip_bytes, "baseline_format": fastest.removeprefix("baseline"),
        "baseline_gzip_bytes": base_size.gzip_bytes, "latency_ms": timings["ours"].median_ms,
        "baseline_latency_ms": timings[fastest].median_ms, "speedup": ratio.estimate, "speedup_low": ratio.low,
        "speedup_high": ratio.high, "top1": float((logits.argmax(1) == y).mean()), "evaluated_on": on,
        "images": int(len(y)),
    }


def speed_verdict(result: dict[str, Any], line: float = SPEEDUP, tolerance: float = SPEED_TOLERANCE) -> str:
    """"met", "not met" or "inconclusive" for the speed line (an error: "not met").

    The measured interval is widened by ``tolerance`` on each side, as the
    capstone's budget does (:func:`course_lib.capstone.speed_interval`): one
    process's rounds vary less than two gradings of the same file do.
    """
    from course_lib.capstone import speed_interval

    if "error" in result:
        return stats.NOT_MET
    ratio = stats.Interval(result["speedup"], result["speedup_low"], result["speedup_high"])
    return stats.verdict(speed_interval(ratio, tolerance), line)


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
    files = {f"submission{fmt}": bytes(blob),
             **{f"baseline{other}": file.read_bytes() for other, file in baseline_artefacts().items()},
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
        result = trust.validate_facts("capstone", lines[-1][len("FACTS "):])
    except trust.MessageError as exc:
        return {"error": str(exc)}
    if not 0 < result["speedup_low"] <= result["speedup"] <= result["speedup_high"]:
        return {"error": "the measuring process returned an inconsistent speedup interval"}
    result["speed"] = speed_verdict(result)
    return result


def describe(result: dict[str, Any], accuracy: bool = True) -> str:
    """One line of the grader's measurement, for feedback and for the learner's own check.

    ``accuracy=False`` leaves top-1 out (feedback on size and speed must not reveal the hold-out score).
    """
    if "error" in result:
        return str(result["error"])
    text = (f"measured {result['format']}: {result['gzip_bytes']:,} B gzip (fastest fp32 baseline file, "
            f"{result['baseline_format']}: {result['baseline_gzip_bytes']:,} B); {result['latency_ms']:.4f} ms vs "
            f"{result['baseline_latency_ms']:.4f} ms: {result['speedup']:.2f}× [{result['speedup_low']:.2f}, "
            f"{result['speedup_high']:.2f}] faster (batch 1, one thread, runtime only; 95 % interval over "
            f"interleaved rounds)")
    return text + (f"; top-1 {result['top1']:.3f} on the {result['evaluated_on']} images" if accuracy else "")
