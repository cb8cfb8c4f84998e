"""course_lib.onnx_io: export, summary, parity, round trips, ORT quantization, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from course_lib import measure, onnx_io, train


@pytest.fixture(scope="module")
def exported(trained_cnn, digits, tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    example = torch.as_tensor(digits.x_train[:32])
    return onnx_io.export_onnx(trained_cnn, example, folder / "cnn.onnx"), folder


def test_export_summary_counts_external_data(exported):
    path, _ = exported
    summary = onnx_io.graph_summary(path)
    assert summary["inputs"] == {"input": ["batch", 1, 8, 8]}
    assert summary["ops"]["Conv"] == 2 and summary["parameters"] >= 51946
    assert onnx_io.external_data_files(path)  # the dynamo exporter's default
    assert summary["file_bytes"] == path.stat().st_size + sum(p.stat().st_size for p in onnx_io.external_data_files(path))
    assert summary["file_bytes"] > 200_000 > path.stat().st_size


def test_onnx_runtime_matches_pytorch_on_every_batch_size(exported, trained_cnn, digits):
    path, _ = exported
    session = onnx_io.OrtModel(path)
    reference = train.predict_logits(trained_cnn, digits.x_test)
    result = onnx_io.parity(reference, session.predict(digits.x_test), atol=1e-4)
    assert result.max_abs_diff < 1e-4 and result.top1_agreement >= 0.999
    assert session(digits.x_test[:1]).shape == (1, 10)
    with pytest.raises(ValueError, match="expects input"):
        session(np.zeros((2, 1, 9, 9), dtype=np.float32))


def test_parity_names_the_first_mismatching_output():
    a = [np.zeros((2, 3)), np.ones((2, 3))]
    b = [np.zeros((2, 3)), np.ones((2, 3))]
    b[1][1, 2] += 0.5
    assert onnx_io.parity(a, b).max_abs_diff == pytest.approx(0.5)
    with pytest.raises(AssertionError, match=r"probs: max \|difference\| 0.5 > 0.001 \(first at index \(1, 2\)\)"):
        onnx_io.parity(a, b, names=["logits", "probs"], atol=1e-3)
    with pytest.raises(AssertionError, match="shape"):
        onnx_io.parity(np.zeros((2, 3)), np.zeros((3, 2)))


def test_round_trips_come_back_with_the_same_predictions_and_measured_sizes(exported, trained_cnn, digits):
    path, folder = exported
    reference = train.predict_logits(trained_cnn, digits.x_test)
    with pytest.raises(NotImplementedError, match="legacy=True"):
        onnx_io.to_pytorch(path, converter="onnx2torch")
    back = onnx_io.to_pytorch(path)
    assert onnx_io.parity(reference, train.predict_logits(back, digits.x_test)).max_abs_diff < 1e-5
    # onnx2pytorch keeps every weight twice: the state_dict doubles
    assert measure.state_dict_size(back).bytes > 1.9 * measure.state_dict_size(trained_cnn).bytes
    legacy = onnx_io.export_onnx(trained_cnn, torch.as_tensor(digits.x_train[:32]), folder / "legacy.onnx", legacy=True)
    back_legacy = onnx_io.to_pytorch(legacy, converter="onnx2torch")
    assert onnx_io.parity(reference, train.predict_logits(back_legacy, digits.x_test)).max_abs_diff < 1e-5
    assert abs(measure.state_dict_size(back_legacy).bytes - measure.state_dict_size(trained_cnn).bytes) < 2000
    with pytest.raises(ValueError, match="converter"):
        onnx_io.to_pytorch(path, converter="onnx-magic")


def test_ort_quantization_shrinks_and_keeps_accuracy(exported, digits):
    path, folder = exported
    fp32_top1 = float((onnx_io.OrtModel(path).predict(digits.x_test).argmax(1) == digits.y_test).mean())
    for quantized in (onnx_io.ort_quantize_dynamic(path, folder / "dyn.onnx"),
                      onnx_io.ort_quantize_static(path, folder / "qdq.onnx", digits.x_train[:128])):
        assert onnx_io.onnx_bytes(quantized) < 0.35 * onnx_io.onnx_bytes(path)
        top1 = float((onnx_io.OrtModel(quantized).predict(digits.x_test).argmax(1) == digits.y_test).mean())
        assert abs(top1 - fp32_top1) <= 0.01


def test_export_errors_say_what_and_where(tmp_path):
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            if x.mean() > 0:
                return self.fc(x)
            return -self.fc(x)

    with pytest.raises(RuntimeError, match=r"(?s)Branchy failed.*data-dependent.*raised at.*x.mean\(\) > 0"):
        onnx_io.export_onnx(Branchy(), torch.randn(3, 4), tmp_path / "b.onnx")
    with pytest.raises(ValueError, match="at least 2"):
        onnx_io.export_onnx(Branchy(), torch.randn(1, 4), tmp_path / "b.onnx")
    with pytest.raises(FileNotFoundError, match="export_onnx"):
        onnx_io.OrtModel(tmp_path / "missing.onnx")
