"""The graded capstone's file check and the trusted measurements of a learner's objects."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from course_lib import capstone, data, deploy, models, quantize
from course_lib.grading import artefact, trusted


def test_exercise_split_and_holdout_partition_the_test_set():
    split = data.exercise_split()
    x_holdout, y_holdout = data.holdout()
    assert len(split.y_test) == len(y_holdout) == 225
    full = np.concatenate([split.x_test, x_holdout]).reshape(450, -1)
    assert len(np.unique(full, axis=0)) >= 440  # the two halves are different images (digits has a few duplicates)
    assert not any(np.array_equal(x, h) for x, h in zip(split.x_test[:50], x_holdout[:50]))


def test_artefact_payload_errors(tmp_path):
    with pytest.raises(ValueError, match=r"\.pte, \.onnx, \.tflite"):
        trusted.artefact_payload(tmp_path / "model.pt")
    with pytest.raises(FileNotFoundError, match="save your model"):
        trusted.artefact_payload(tmp_path / "model.pte")


def test_grade_artefact_reports_bad_input_without_crashing():
    assert "no artefact" in artefact.grade_artefact(None)["error"]
    assert "no artefact" in artefact.grade_artefact({"format": ".exe", "data": b"xyz"})["error"]
    result = artefact.grade_artefact({"format": ".tflite", "data": b"not a model at all" * 10}, timeout_s=120)
    assert "could not be run" in result["error"]


def test_grade_artefact_measures_a_real_int8_file(tmp_path):
    """A small int8 .pte: measured in a confined process against the grader's own fp32 baseline."""
    split = data.exercise_split()
    model = capstone.cnn(channels=(8, 16), hidden=16, seed=0).eval()
    example = torch.as_tensor(split.x_train[:32])
    quantized = quantize.static_quantize(model, example, [example])
    path = deploy.export_executorch(quantized, example, tmp_path / "tiny.pte")
    result = artefact.grade_artefact(trusted.artefact_payload(path))
    assert "error" not in result, result
    assert result["format"] == ".pte" and result["evaluated_on"] == "test" and result["images"] == 225
    assert result["gzip_bytes"] < result["baseline_gzip_bytes"] / 10
    assert 0 < result["speedup_low"] <= result["speedup"] <= result["speedup_high"] and 0.0 <= result["top1"] <= 1.0
    assert result["baseline_format"] in artefact.FORMATS and result["speed"] in ("met", "not met", "inconclusive")
    assert "faster" not in artefact.describe({"error": "x"}) and "×" in artefact.describe(result)


def test_the_speed_line_is_judged_against_the_fastest_baseline_file(tmp_path):
    """The reference is the fastest fp32 file whatever its format: a slow runtime's baseline earns nothing."""
    from course_lib import onnx_io

    split = data.exercise_split()
    example = torch.as_tensor(split.x_train[:32])
    tiny = onnx_io.export_onnx(capstone.cnn(channels=(8, 16), hidden=16, seed=0).eval(), example, tmp_path / "tiny.onnx",
                               external_data=False)
    big = deploy.export_executorch(capstone.cnn(seed=0).eval(), example, tmp_path / "big.pte")
    result = artefact.measure_for_grading(tiny, {".pte": big, ".onnx": tiny}, on="test", rounds=5, repeats=50)
    assert result["baseline_format"] == ".onnx"  # the file itself is the fastest "baseline": no speed-up over it
    assert result["speedup_low"] < 1.5 and artefact.speed_verdict(result) == "not met"
    assert artefact.speed_verdict({"speedup": 1.6, "speedup_low": 1.4, "speedup_high": 1.8}) == "inconclusive"
    assert artefact.speed_verdict({"speedup": 1.4, "speedup_low": 1.38, "speedup_high": 1.42}) == "inconclusive"  # band
    assert artefact.speed_verdict({"speedup": 1.3, "speedup_low": 1.28, "speedup_high": 1.32}) == "not met"
    assert artefact.speed_verdict({"speedup": 1.9, "speedup_low": 1.85, "speedup_high": 1.95}) == "met"
    assert artefact.speed_verdict({"error": "crashed"}) == "not met"
    with pytest.raises(ValueError, match="at least one baseline"):
        artefact.measure_for_grading(tiny, {}, on="test")


def test_trusted_facts_of_a_pruned_model_with_masks_attached():
    from torch.nn.utils import prune as torch_prune

    model = models.small_cnn(seed=0)
    layers = [(model.features[0], "weight"), (model.classifier[1], "weight")]
    torch_prune.global_unstructured(layers, pruning_method=torch_prune.L1Unstructured, amount=0.8)
    x, _ = data.holdout()
    facts = trusted.torch_model(model, inputs=x)
    weights = [model.features[0].weight, model.features[2].weight, model.classifier[1].weight, model.classifier[3].weight]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert facts["is_pruned"] and facts["parameters"] == 51946
    assert facts["sparsity"] == pytest.approx(zeros)  # the weights the layers use, masks applied
    assert facts["macs"] == 1_231_168 and facts["logits"].shape == (225, 10)
    assert np.allclose(facts["logits"], model.eval()(torch.as_tensor(x)).detach().numpy(), atol=1e-5)


def test_trusted_facts_of_a_graph_exported_for_a_fixed_batch():
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    graph = torch.export.export(models.small_cnn(seed=0).eval(), (torch.zeros(32, 1, 8, 8),)).module()
    prepared = prepare_pt2e(graph, quantize.xnnpack_quantizer())
    prepared(torch.rand(32, 1, 8, 8))
    quantized = convert_pt2e(prepared)
    facts = trusted.torch_model(quantized, inputs=data.holdout()[0][:40], example=torch.zeros(32, 1, 8, 8))
    assert facts["quantize_nodes"] >= 4 and facts["logits"].shape == (40, 10)
