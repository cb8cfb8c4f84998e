"""Deployable files of one model in every runtime the course uses, built the same way.

:func:`build_artefacts` writes the fp32 (and int8) files of a trained
:class:`~course_lib.models.SmallCNN` for ExecuTorch (``.pte``), ONNX Runtime
(``.onnx``) and LiteRT (``.tflite``); :func:`compare_runtimes` builds and
measures them. Running and measuring files lives in :mod:`course_lib.runtimes`
(one interface, one way of timing); ExecuTorch itself in
:mod:`course_lib.executorch`. The other functions here are kept so that older
notebooks and the grader keep working; each says what replaces it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from course_lib import runtimes
from course_lib.executorch import ExecuTorchModel, executorch_threads, export_executorch
from course_lib.report import Record

__all__ = ["build_artefacts", "compare_runtimes", "export_executorch", "ExecuTorchModel", "executorch_threads",
           "load_artefact", "artefact_bytes", "measure_artefact", "measure_pytorch", "predict_artefact",
           "artefact_latency_ms"]


# --- one model, three runtimes ----------------------------------------------------------------


def load_artefact(path: str | Path) -> Any:
    """An artefact loaded in its own runtime (one thread for ONNX Runtime and LiteRT), callable on a batch.

    Inputs are what the runtime takes: N × C × H × W for ``.pte`` / ``.onnx``,
    N × H × W × C for ``.tflite``. Kept for the grader; new code uses
    :func:`course_lib.runtimes.load`, which takes N × C × H × W for every
    format and runs on an explicit thread count.
    """
    path = Path(path)
    return _loader_for(path.suffix)(path)


def _loader_for(fmt: str) -> Any:
    if fmt == ".pte":
        return ExecuTorchModel
    if fmt == ".onnx":
        from course_lib.onnx_io import OrtModel

        return lambda path: OrtModel(path, threads=1)
    if fmt == ".tflite":
        from course_lib.tflite import LiteRTModel

        return lambda path: LiteRTModel(path, threads=1)
    raise ValueError(f"unknown artefact format {fmt!r}; expected .pte, .onnx or .tflite")


def artefact_bytes(path: str | Path) -> tuple[int, int]:
    """Raw and gzip bytes of an artefact, external data included: :func:`course_lib.runtimes.artefact_size` as a pair."""
    size = runtimes.artefact_size(path)
    return size.bytes, size.gzip_bytes


def measure_artefact(
    name: str, path: str | Path, x_test: np.ndarray, y_test: np.ndarray, reference_logits: np.ndarray,
    repeats: int = 50, notes: str = "", executorch_threads_count: int | None = 1,
) -> Record:
    """One file measured by :func:`course_lib.runtimes.measure` on one thread (ExecuTorch's pool too).

    ``executorch_threads_count`` is kept for old callers; every runtime now
    runs on that many threads (default 1), and the record says so.
    """
    loaded = runtimes.load(path, threads=executorch_threads_count or 1)
    record = runtimes.measure_one(name, loaded, x_test, y_test, reference_logits=reference_logits, repeats=repeats)
    record.notes = "; ".join(filter(None, [record.notes, notes]))
    return record


def measure_pytorch(
    name: str, model: nn.Module, x_test: np.ndarray, y_test: np.ndarray, reference_logits: np.ndarray | None = None,
    repeats: int = 50, notes: str = "",
) -> Record:
    """An eager model measured by :func:`course_lib.runtimes.measure` on one thread (kept for old callers)."""
    record = runtimes.measure_one(name, model, x_test, y_test, reference_logits=reference_logits, repeats=repeats)
    record.notes = "; ".join(filter(None, [record.notes, notes]))
    return record


def build_artefacts(
    model: nn.Module, split: Any, folder: str | Path, int8: bool = True, calibration_images: int = 256,
    lowering: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Build the deployable artefacts of one trained :class:`~course_lib.models.SmallCNN`.

    fp32 and (with ``int8``) int8 versions of: ExecuTorch ``.pte`` (PT2E +
    XNNPACK), ONNX (dynamo export; ORT static QDQ) and LiteRT ``.tflite`` (the
    Keras twin with the same weights; full-integer conversion). Calibration
    uses the first ``calibration_images`` training images for all three.
    With ``lowering`` (a dict), each ``.pte``'s
    :class:`~course_lib.executorch.LoweringReport` is stored in it under the
    artefact's name.
    """
    from course_lib import onnx_io, quantize, tflite
    from course_lib.executorch import lower_executorch
    from course_lib.models.keras_twin import keras_twin_of

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    calibration = np.ascontiguousarray(split.x_train[:calibration_images])
    example = torch.as_tensor(calibration[:32])
    reports = lowering if lowering is not None else {}
    reports["ExecuTorch fp32"] = lower_executorch(model, example, folder / "model_fp32.pte")
    artefacts = {
        "ExecuTorch fp32": reports["ExecuTorch fp32"].path,
        "ONNX Runtime fp32": onnx_io.export_onnx(model, example, folder / "model_fp32.onnx"),
    }
    twin = keras_twin_of(model)
    calibration_nhwc = np.ascontiguousarray(calibration.transpose(0, 2, 3, 1))
    artefacts["LiteRT fp32"] = folder / "model_fp32.tflite"
    tflite.convert_keras(twin, "fp32", path=artefacts["LiteRT fp32"])
    if int8:
        batches = [torch.as_tensor(calibration[i : i + 64]) for i in range(0, len(calibration), 64)]
        quantized = quantize.static_quantize(model, example, batches)
        reports["ExecuTorch int8"] = lower_executorch(quantized, example, folder / "model_int8.pte")
        artefacts["ExecuTorch int8"] = reports["ExecuTorch int8"].path
        artefacts["ONNX Runtime int8"] = onnx_io.ort_quantize_static(
            artefacts["ONNX Runtime fp32"], folder / "model_int8.onnx", calibration
        )
        artefacts["LiteRT int8"] = folder / "model_int8.tflite"
        tflite.convert_keras(twin, "int8", representative=calibration_nhwc, path=artefacts["LiteRT int8"])
    return artefacts


def compare_runtimes(
    model: nn.Module, split: Any, folder: str | Path, int8: bool = True, threads: int = 1, eager: bool = False,
) -> list[Record]:
    """Build every artefact of ``model`` and measure each file (and with ``eager`` the model itself) on ``threads`` threads.

    Latency is runtime-only, all of them timed in the same interleaved
    rounds (with the course's wrapper cost as ``wrapper_overhead_ms``); cold
    start and memory come from a fresh process per file.
    """
    from course_lib.train import predict_logits

    artefacts = build_artefacts(model, split, folder, int8=int8)
    models: dict[str, runtimes.LoadedModel] = {"PyTorch eager": runtimes.wrap(model, threads=threads)} if eager else {}
    models.update({name: runtimes.load(path, threads=threads) for name, path in artefacts.items()})
    reference = predict_logits(model, split.x_test)
    return runtimes.measure(models, split.x_test, split.y_test, reference_logits=reference, wrapper=True)


def predict_artefact(path: str | Path, x: np.ndarray) -> np.ndarray:
    """Logits of any artefact (``.pte``, ``.onnx``, ``.tflite``) for N × C × H × W inputs: ``runtimes.load(path).predict(x)``."""
    return runtimes.load(path).predict(x)


def artefact_latency_ms(path: str | Path, x: np.ndarray, repeats: int = 200) -> float:
    """Median runtime-only latency (ms) of one call on ``x`` (N × C × H × W), one thread, 5 rounds.

    Kept for old callers: :func:`course_lib.runtimes.time_interleaved` gives the spread too.
    """
    model = runtimes.load(path)
    per_round = max(1, repeats // 5)
    return runtimes.time_interleaved({"file": model}, x, rounds=5, repeats=per_round, warmup=10)["file"].median_ms
