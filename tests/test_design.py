import pytest
import torch

from course_lib import data, design, measure
from course_lib.models import blocks
from course_lib.models.keras_twin import tiny_net_keras
from course_lib.report import Record


@pytest.mark.parametrize("c_in, c_out, k, groups, h", [(32, 64, 3, 1, 16), (32, 32, 3, 32, 16), (32, 64, 1, 1, 8), (64, 128, 3, 4, 7)])
def test_formulas_match_measured_layers(c_in, c_out, k, groups, h):
    conv = torch.nn.Conv2d(c_in, c_out, k, padding=k // 2, groups=groups, bias=False)
    x = torch.zeros(1, c_in, h, h)
    assert measure.count_parameters(conv) == blocks.conv2d_params(c_in, c_out, k, groups, bias=False)
    assert measure.count_macs(conv, x) == blocks.conv2d_macs(c_in, c_out, k, h, h, groups)


def test_separable_block_saves_what_the_formula_says():
    standard = blocks.standard_conv(64, 128)
    separable = blocks.DepthwiseSeparable(64, 128)
    x = torch.zeros(1, 64, 16, 16)
    ratio = measure.count_macs(separable, x) / measure.count_macs(standard, x)
    assert ratio == pytest.approx(1 / 128 + 1 / 9)
    assert separable(x).shape == standard(x).shape == (1, 128, 16, 16)


def test_inverted_residual_skip_only_when_shapes_match():
    assert blocks.InvertedResidual(16, 16, 1).use_skip
    assert not blocks.InvertedResidual(16, 32, 1).use_skip
    assert blocks.InvertedResidual(16, 16, 2)(torch.zeros(2, 16, 8, 8)).shape == (2, 16, 4, 4)


@pytest.mark.parametrize("block", ["standard", "separable", "inverted"])
def test_tiny_net_twins_have_the_same_trainable_parameters(block):
    torch_model = blocks.TinyNet(block, width=0.5)
    keras_model = tiny_net_keras(block, width=0.5)
    trainable = sum(int(w.shape.num_elements()) for w in keras_model.trainable_weights)
    assert measure.count_parameters(torch_model) == trainable


def test_width_and_resolution_knobs():
    base = blocks.TinyNet("separable", 1.0)
    half = blocks.TinyNet("separable", 0.5)
    x8, x16 = torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 16, 16)
    assert measure.count_parameters(half) < measure.count_parameters(base)
    assert measure.count_macs(base, x16) > 3.5 * measure.count_macs(base, x8)  # MACs grow with pixels
    assert base(x16).shape == (1, 10)
    with pytest.raises(ValueError, match="block must be one of"):
        blocks.TinyNet("dense")
    with pytest.raises(ValueError, match="H, W ≥ 4"):
        base(torch.zeros(1, 1, 2, 2))


def test_pareto_front_and_budget():
    records = [Record("a", macs=100, top1=0.90), Record("b", macs=200, top1=0.95), Record("c", macs=300, top1=0.93),
               Record("d", macs=50, top1=0.80), Record("e", macs=200, top1=0.94)]
    assert [r.name for r in design.pareto_front(records, "macs")] == ["d", "a", "b"]
    assert design.best_under_budget(records, macs=150).name == "a"
    assert design.best_under_budget(records, macs=1000).name == "b"
    with pytest.raises(ValueError, match="no candidate fits"):
        design.best_under_budget(records, macs=10)
    with pytest.raises(ValueError, match="at least one budget"):
        design.best_under_budget(records, flops=10)
    with pytest.raises(ValueError, match="has no latency_ms"):
        design.pareto_front(records, "latency_ms")


def test_measure_candidate_scores_validation_unless_told_to_report_test():
    split = data.load_digits()
    record = design.measure_candidate("tiny", blocks.TinyNet("separable", 0.25), split, epochs=1, latency_repeats=5)
    assert record.images == len(split.y_val) and "top-1 on val" in record.notes
    assert record.top1_low is not None and record.top1_low <= record.top1 <= record.top1_high
    with pytest.raises(ValueError, match="on must be"):
        design.measure_candidate("tiny", blocks.TinyNet("separable", 0.25), split, epochs=1, on="train")
