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
    with pytest.raises(NotImplementedError, match="for_onnx2torch"):
        onnx_io.to_pytorch(path, converter="onnx2torch")
    back = onnx_io.to_pytorch(path)
    assert onnx_io.parity(reference, train.predict_logits(back, digits.x_test)).max_abs_diff < 1e-5
    # onnx2pytorch keeps every weight twice: the state_dict doubles
    original_bytes = measure.state_dict_size(trained_cnn).bytes
    assert measure.state_dict_size(back).bytes > 1.9 * original_bytes
    removed = onnx_io.drop_duplicate_buffers(back)
    assert len(removed) == len(list(trained_cnn.parameters()))  # one copy per weight and bias; the Reshape shape stays
    assert any(name.startswith("_initializer_") for name, _ in back.named_buffers())
    assert onnx_io.parity(reference, train.predict_logits(back, digits.x_test)).max_abs_diff < 1e-5
    assert measure.state_dict_size(back).bytes < 1.01 * original_bytes
    # the unmaintained onnx2torch reads the dynamo file once it is down-converted
    downgraded = onnx_io.for_onnx2torch(path, folder / "opset18.onnx")
    assert onnx_io.graph_summary(downgraded)["opset"]["ai.onnx"] == 18
    back_onnx2torch = onnx_io.to_pytorch(downgraded, converter="onnx2torch")
    assert onnx_io.parity(reference, train.predict_logits(back_onnx2torch, digits.x_test)).max_abs_diff < 1e-5
    with pytest.raises(ValueError, match="opset 18 or lower"):
        onnx_io.for_onnx2torch(path, folder / "opset19.onnx", opset=19)
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
    # QOperator (dynamic) vs QDQ (static) node types, and the graph ORT fuses QDQ into
    assert onnx_io.op_types(folder / "dyn.onnx").get("ConvInteger") == 2
    assert onnx_io.op_types(folder / "qdq.onnx").get("QuantizeLinear", 0) > 0
    fused = onnx_io.op_types(onnx_io.ort_optimized_model(folder / "qdq.onnx", folder / "qdq_fused.onnx"))
    assert fused.get("com.microsoft::QLinearConv") == 2 and "Conv" not in fused
    with pytest.raises(ValueError, match="method"):
        onnx_io.ort_quantize_static(path, folder / "x.onnx", digits.x_train[:32], method="Median")


def test_export_writes_the_exporters_report(trained_cnn, digits, tmp_path):
    path = onnx_io.export_onnx(trained_cnn, torch.as_tensor(digits.x_train[:4]), tmp_path / "v.onnx", verify=True,
                               report_dir=tmp_path / "report")
    reports = list((tmp_path / "report").glob("*.md"))
    assert path.is_file() and len(reports) == 1 and "Verification results" in reports[0].read_text()
    with pytest.raises(ValueError, match="dynamo exporter"):
        onnx_io.export_onnx(trained_cnn, torch.as_tensor(digits.x_train[:4]), tmp_path / "l.onnx", legacy=True, verify=True)


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
