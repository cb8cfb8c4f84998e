"""course_lib.factorize: exact at full rank, Eckart–Young errors, energy ranks, parameter and MAC formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from course_lib import factorize, measure
from course_lib.models.cnn import SmallCNN


def _seeded(seed: int = 0) -> None:
    torch.manual_seed(seed)


def test_linear_full_rank_reproduces_the_layer_and_low_rank_has_the_formula_parameters():
    _seeded()
    layer = nn.Linear(12, 7)
    x = torch.randn(5, 12)
    full = factorize.factorize_linear(layer, factorize.full_rank(layer))
    assert torch.allclose(full(x), layer(x), atol=1e-5)
    low = factorize.factorize_linear(layer, 3)
    assert measure.count_parameters(low) == factorize.linear_params(12, 7, rank=3) == 3 * (12 + 7) + 7
    assert measure.count_parameters(layer) == factorize.linear_params(12, 7)
    assert factorize.linear_macs(12, 7, rank=3, batch=2) == 2 * 3 * 19


def test_svd_factors_give_the_eckart_young_error():
    _seeded(1)
    weight = torch.randn(20, 9)
    first, second = factorize.svd_factors(weight, 4)
    assert first.shape == (4, 9) and second.shape == (20, 4)
    error = float(torch.linalg.norm(weight - second @ first) / torch.linalg.norm(weight))
    assert error == pytest.approx(factorize.relative_error(weight, 4), rel=1e-4)
    assert factorize.relative_error(weight, 9) == pytest.approx(0.0, abs=1e-6)
    assert factorize.relative_error(weight, 2) > factorize.relative_error(weight, 4)


def test_conv_full_rank_reproduces_the_layer_with_stride_and_padding():
    _seeded(2)
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
    x = torch.randn(2, 3, 9, 9)
    rank = factorize.full_rank(conv)
    assert rank == 8
    full = factorize.factorize_conv(conv, rank)
    assert torch.allclose(full(x), conv(x), atol=1e-5)
    low = factorize.factorize_conv(conv, 2)
    assert low(x).shape == conv(x).shape
    assert measure.count_parameters(low) == factorize.conv_params(3, 8, 3, rank=2) == 2 * (27 + 8) + 8
    assert measure.count_parameters(conv) == factorize.conv_params(3, 8, 3)


def test_conv_macs_formula_matches_the_counter():
    conv = nn.Conv2d(16, 32, 3, padding=1, bias=False)
    x = torch.zeros(1, 16, 8, 8)
    assert measure.count_macs(conv, x) == factorize.conv_macs(16, 32, 3, 8, 8)
    assert measure.count_macs(factorize.factorize_conv(conv, 5), x) == factorize.conv_macs(16, 32, 3, 8, 8, rank=5)


def test_energy_rank_edges_and_validation():
    s = np.array([3.0, 2.0, 1.0, 0.0])  # energies 9, 4, 1, 0 of 14
    assert factorize.energy_rank(s, 0.0) == 1
    assert factorize.energy_rank(s, 9 / 14) == 1
    assert factorize.energy_rank(s, 0.65) == 2
    assert factorize.energy_rank(s, 13 / 14) == 2
    assert factorize.energy_rank(s, 1.0) == 3  # the zero singular value is never needed
    assert factorize.energy_rank(torch.tensor([1.0, 1.0, 1.0, 1.0]), 0.5) == 2
    with pytest.raises(ValueError, match="fraction in"):
        factorize.energy_rank(s, 1.5)
    with pytest.raises(ValueError, match="sorted largest first"):
        factorize.energy_rank([1.0, 2.0], 0.5)
    with pytest.raises(ValueError, match="rank 0"):
        factorize.energy_rank([0.0, 0.0], 0.5)


def test_breakeven_rank_is_where_parameters_tie():
    assert factorize.breakeven_rank(1024, 1024) == 512
    assert factorize.linear_params(1024, 1024, rank=512, bias=False) == factorize.linear_params(1024, 1024, bias=False)


def test_factorize_model_replaces_named_layers_and_rejects_others():
    _seeded(3)
    model = SmallCNN()
    x = torch.randn(4, 1, 8, 8)
    low = factorize.factorize_model(model, {"classifier.1": 8, "features.2": 16})
    assert isinstance(low.classifier[1], nn.Sequential) and isinstance(low.features[2], nn.Sequential)
    assert isinstance(model.classifier[1], nn.Linear)  # the original is untouched
    assert low(x).shape == (4, 10)
    exact = factorize.factorize_model(model, {"classifier.1": 32, "features.2": 64})
    assert torch.allclose(exact(x), model(x), atol=1e-4)
    with pytest.raises(ValueError, match="only nn.Linear and nn.Conv2d"):
        factorize.factorize_model(model, {"features.1": 2})
    with pytest.raises(ValueError, match="rank must be an integer between 1 and 32"):
        factorize.factorize_model(model, {"classifier.1": 33})
    with pytest.raises(ValueError, match="cannot be factorized"):
        factorize.factorize_conv(nn.Conv2d(4, 4, 3, groups=4), 2)
    with pytest.raises(ValueError, match="2-D tensor"):
        factorize.svd_factors(torch.zeros(3), 1)



def test_data_aware_factorization_has_lower_output_error_on_correlated_inputs_and_is_exact_at_full_rank():
    torch.manual_seed(0)
    layer = nn.Linear(16, 12)
    x = torch.randn(512, 16) * torch.linspace(0.05, 5.0, 16) + torch.randn(512, 1)  # skewed, correlated inputs
    plain, aware = factorize.factorize_linear(layer, 3), factorize.factorize_linear(layer, 3, inputs=x)
    with torch.no_grad():
        target = layer(x)
        assert (aware(x) - target).norm() < (plain(x) - target).norm()
        full = factorize.factorize_linear(layer, 12, inputs=x)
        assert torch.allclose(full(x), target, atol=1e-4)
    assert measure.count_parameters(aware) == measure.count_parameters(plain)


def test_whitening_handles_dead_features_and_rejects_bad_input():
    x = torch.zeros(10, 4)
    x[:, 0] = 2.0
    root = factorize.whitening(x, damping=0.1)
    assert torch.allclose(root @ root.T, (x.T @ x / 10).double() + 0.1 * 1.0 * torch.eye(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="2-D"):
        factorize.whitening(torch.zeros(4))
    with pytest.raises(ValueError, match="not all zero"):
        factorize.whitening(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="N × 4"):
        factorize.factorize_linear(nn.Linear(4, 3), 2, inputs=torch.zeros(5, 3))


def test_tucker2_is_exact_at_full_ranks_and_has_the_formula_parameters():
    _seeded()
    layer = nn.Conv2d(6, 8, 3, stride=2, padding=1)
    x = torch.randn(2, 6, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(factorize.tucker2_conv(layer, 6, 8)(x), layer(x), atol=1e-5, rtol=1e-4)
        small = factorize.tucker2_conv(layer, 3, 4)
        assert small(x).shape == layer(x).shape
    assert measure.count_parameters(small) == factorize.tucker2_params(6, 8, 3, 3, 4)
    with pytest.raises(ValueError, match="rank"):
        factorize.tucker2_conv(layer, 7, 4)
    with pytest.raises(TypeError):
        factorize.tucker2_conv(nn.Linear(3, 3), 1, 1)
