"""course_lib.quantize (the math, dynamic, PT2E static / QAT) and course_lib.deploy (ExecuTorch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from course_lib import data, deploy, measure, quantize, train


def test_asymmetric_int8_matches_pytorch_per_tensor():
    x = torch.randn(1000) * 3 + 1
    qp = quantize.choose_qparams(x.numpy(), bits=8, signed=False)
    reference = torch.quantize_per_tensor(x, float(qp.scale), int(qp.zero_point), torch.quint8)
    assert np.array_equal(quantize.quantize(x.numpy(), qp), reference.int_repr().numpy())
    assert np.allclose(quantize.dequantize(quantize.quantize(x.numpy(), qp), qp), reference.dequantize().numpy(), atol=1e-6)


def test_per_channel_symmetric_matches_pytorch():
    w = torch.randn(8, 4, 3, 3) * torch.linspace(0.1, 5, 8).reshape(8, 1, 1, 1)
    qp = quantize.choose_qparams(w.numpy(), symmetric=True, axis=0)
    assert qp.scale.shape == (8, 1, 1, 1) and (qp.zero_point == 0).all()
    reference = torch.quantize_per_channel(w, torch.tensor(qp.scale.ravel()), torch.zeros(8, dtype=torch.long), 0, torch.qint8)
    assert np.array_equal(quantize.quantize(w.numpy(), qp), reference.int_repr().numpy())


def test_edge_cases_constant_negative_zero_and_range():
    constant = np.full((3, 3), 2.5)
    qp = quantize.choose_qparams(constant)
    assert np.allclose(quantize.dequantize(quantize.quantize(constant, qp), qp), constant, atol=float(qp.scale) / 2)
    negative = -np.linspace(0.5, 4.0, 50)
    qp = quantize.choose_qparams(negative)
    q = quantize.quantize(negative, qp)
    assert quantize.quantize(0.0, qp) == qp.qmax  # 0 is the top of the range, so it maps to qmax
    assert q.min() == qp.qmin
    assert np.abs(quantize.dequantize(q, qp) - negative).max() <= float(qp.scale) / 2 + 1e-12
    zeros = np.zeros(5)
    assert np.array_equal(quantize.fake_quantize(zeros), zeros)
    assert quantize.qrange(4) == (-8, 7) and quantize.qrange(8, signed=False) == (0, 255)
    with pytest.raises(ValueError, match="bits"):
        quantize.qrange(1)
    with pytest.raises(ValueError, match="axis"):
        quantize.choose_qparams(np.ones((2, 2)), axis=3)
    with pytest.raises(ValueError, match="empty"):
        quantize.choose_qparams(np.array([]))


def test_fewer_bits_more_error_and_outliers_hurt_per_tensor_most():
    w = np.random.default_rng(0).normal(size=(16, 64))
    errors = [quantize.quantization_error(w, bits=b)["sqnr_db"] for b in (4, 6, 8)]
    assert errors[0] < errors[1] < errors[2]
    w[0, 0] = 50
    per_tensor = quantize.quantization_error(w, symmetric=True)["sqnr_db"]
    per_channel = quantize.quantization_error(w, symmetric=True, axis=0)["sqnr_db"]
    assert per_channel > per_tensor


def test_dynamic_quantization_shrinks_linear_and_ignores_relu():
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10)).eval()
    quantized, warning = quantize.dynamic_quantize_legacy(model)
    assert "deprecated" in warning
    assert measure.state_dict_size(quantized).bytes < 0.35 * measure.state_dict_size(model).bytes
    relu_only, _ = quantize.dynamic_quantize_legacy(model, {nn.ReLU})
    x = torch.randn(8, 64)
    assert torch.equal(relu_only(x), model(x))


@pytest.mark.slow
def test_static_quantization_keeps_accuracy_and_lowers_to_a_smaller_pte_that_agrees(trained_cnn, digits, tmp_path):
    loaders = data.torch_loaders(digits)
    example = torch.as_tensor(digits.x_train[:32])
    with pytest.raises(ValueError, match="at least 2"):
        quantize.export_for_quantization(trained_cnn, example[:1])
    int8 = quantize.static_quantize(trained_cnn, example, loaders["train"], max_batches=3)
    fp32_top1 = train.evaluate(trained_cnn, loaders["test"])["top1"]
    assert abs(train.evaluate(int8, loaders["test"])["top1"] - fp32_top1) <= 0.01
    fp32_pte = deploy.ExecuTorchModel(deploy.export_executorch(trained_cnn, example, tmp_path / "fp32.pte"))
    int8_pte = deploy.ExecuTorchModel(deploy.export_executorch(int8, example, tmp_path / "int8.pte"))
    assert fp32_pte.path.stat().st_size > 3 * int8_pte.path.stat().st_size
    reference = train.predict_logits(trained_cnn, digits.x_test)
    assert np.abs(fp32_pte.predict(digits.x_test) - reference).max() < 1e-4
    agreement = (int8_pte.predict(digits.x_test).argmax(1) == reference.argmax(1)).mean()
    assert agreement >= 0.98
    with pytest.raises(ValueError, match="failed on input of shape"):
        int8_pte(np.zeros((1, 1, 9, 9), dtype=np.float32))
    with pytest.raises(ValueError, match="N ≤ 1024"):
        int8_pte(np.zeros((2000, 1, 8, 8), dtype=np.float32))
    with pytest.raises(FileNotFoundError, match="export_executorch"):
        deploy.ExecuTorchModel(tmp_path / "missing.pte")


@pytest.mark.slow
def test_qat_graph_trains_with_course_fit(trained_cnn, digits):
    loaders = data.torch_loaders(digits)
    example = torch.as_tensor(digits.x_train[:32])
    prepared = quantize.pt2e_prepare(trained_cnn, example, quantize.xnnpack_quantizer(weight_bits=4, qat=True), qat=True)
    train.fit(prepared, loaders["train"], loaders["val"], epochs=1, lr=5e-4, progress=False)
    converted = quantize.pt2e_convert(prepared)
    assert train.evaluate(converted, loaders["test"])["top1"] > 0.9
    assert measure.run_model(converted, example).shape == (32, 10)  # eval() on an exported graph works


@pytest.mark.slow
def test_every_runtime_runs_the_same_model(trained_cnn, digits, tmp_path):
    from course_lib import report

    records = deploy.compare_runtimes(trained_cnn, digits, tmp_path)
    names = [r.name for r in records]
    assert names == ["ExecuTorch fp32", "ONNX Runtime fp32", "LiteRT fp32", "ExecuTorch int8", "ONNX Runtime int8", "LiteRT int8"]
    for record in records:
        agreement = float(record.notes.split("agreement ")[1].split(";")[0])
        assert agreement >= (0.99 if "fp32" in record.name else 0.97), record
        assert record.bytes and record.gzip_bytes < record.bytes and record.latency_ms > 0
    fp32 = {r.framework: r.bytes for r in records if "fp32" in r.name}
    int8 = {r.framework: r.bytes for r in records if "int8" in r.name}
    assert all(fp32[k] > 3 * int8[k] for k in fp32)
    assert "ExecuTorch int8" in report.to_markdown(records)
    onnx_int8 = tmp_path / "model_int8.onnx"
    assert deploy.predict_artefact(onnx_int8, digits.x_test[:3]).shape == (3, 10)
    assert deploy.artefact_latency_ms(tmp_path / "model_int8.tflite", digits.x_test[:1], repeats=5) > 0
    with pytest.raises(ValueError, match="unknown artefact format"):
        deploy.predict_artefact(tmp_path / "model.bin", digits.x_test[:1])


def test_fixed_point_requantization_matches_the_float_rescale():
    rng = np.random.default_rng(0)
    multipliers = rng.uniform(1e-5, 0.99, size=16)
    m0, shift = quantize.fixed_point_multiplier(multipliers)
    assert np.all((m0 >= 2**30) & (m0 < 2**31))
    np.testing.assert_allclose(m0 * 2.0 ** -shift.astype(float), multipliers, rtol=2**-30)
    acc = rng.integers(-(2**20), 2**20, size=(50, 16)).astype(np.int32)
    integer = quantize.requantize(acc, m0, shift, zero_point=3)
    floating = np.clip(np.round(acc * multipliers) + 3, -128, 127)
    assert np.abs(integer - floating).max() <= 1 and np.mean(integer == floating) > 0.99  # only ties may differ
    assert quantize.requantize(np.array([5]), *quantize.fixed_point_multiplier(0.5), zero_point=0)[0] == 3  # 2.5 rounds half up
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        quantize.fixed_point_multiplier([0.5, 1.5])
    with pytest.raises(TypeError, match="integers"):
        quantize.requantize(acc.astype(float), m0, shift, 0)


def test_x86_quantizer_uses_per_channel_weights_and_a_histogram_observer():
    config = quantize.x86_quantizer().global_config
    assert config.weight.qscheme == torch.per_channel_symmetric
    assert "HistogramObserver" in repr(config.input_activation.observer_or_fake_quant_ctr)


def test_torchao_dynamic_quantization_agrees_and_quantize_nodes_are_counted(digits):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)).eval()
    quantized = quantize.dynamic_quantize_torchao(model)
    x = torch.as_tensor(digits.x_test[:64])
    with torch.inference_mode():
        reference, result = model(x), quantized(x)
    assert not torch.equal(reference, result) and torch.allclose(reference, result, atol=0.05 * reference.abs().max().item())
    assert type(quantized[1].weight) is not type(model[1].weight)  # torchao's int8 tensor subclass, on a copy
    float_graph = quantize.export_for_quantization(model, x[:8])
    assert quantize.count_quantize_nodes(float_graph) == 0
    assert quantize.count_quantize_nodes(quantize.static_quantize(model, x[:8], [x])) >= 2
