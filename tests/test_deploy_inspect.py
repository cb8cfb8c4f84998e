"""What each runtime delegated, placed and planned: ExecuTorch lowering report, LiteRT plan, ORT placement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from course_lib import executorch, onnx_io, tflite
from course_lib.models import small_cnn
from course_lib.models.keras_twin import keras_twin_of


def test_executorch_lowering_report_shows_fallbacks_and_planned_memory(tmp_path):
    model = small_cnn()
    example = torch.randn(4, 1, 8, 8)
    dynamic = executorch.lower_executorch(model, example, tmp_path / "dynamic.pte", max_batch=64)
    static = executorch.lower_executorch(model, example[:1], tmp_path / "static.pte", dynamic_batch=False)
    assert dynamic.path.is_file() and static.path.is_file()
    # a dynamic batch splits the graph at the batch-dependent reshape and plans memory for the largest batch
    assert dynamic.delegated_subgraphs == 2 and "aten_view_copy_default" in dynamic.fallback_ops
    assert static.delegated_subgraphs == 1 and "aten_view_copy_default" not in static.fallback_ops
    assert static.planned_bytes * 32 < dynamic.planned_bytes


def test_litert_plan_shows_the_xnnpack_delegate(tmp_path):
    path = tmp_path / "m.tflite"
    tflite.convert_keras(keras_twin_of(small_cnn()), "fp32", path=path)
    assert tflite.execution_plan(path)[-1] == "DELEGATE"
    assert "DELEGATE" not in tflite.execution_plan(path, default_delegates=False)


def test_ort_node_placement_reads_the_profile(tmp_path):
    path = onnx_io.export_onnx(small_cnn(), torch.randn(4, 1, 8, 8), tmp_path / "m.onnx")
    placement = onnx_io.ort_node_placement(path, np.zeros((1, 1, 8, 8), dtype=np.float32))
    assert set(placement) == {"CPUExecutionProvider"} and sum(placement["CPUExecutionProvider"].values()) >= 5
    with pytest.raises(ValueError, match="has no"):
        onnx_io.ort_node_placement(path, np.zeros((1, 1, 8, 8), dtype=np.float32), providers=["NoSuchExecutionProvider"])
