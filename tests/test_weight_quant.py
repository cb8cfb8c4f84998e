"""course_lib.weight_quant: per-group quantization, int4 packing, bytes formula, AWQ search."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from course_lib import weight_quant as wq


def test_pack_unpack_round_trip_is_exact_for_every_code():
    codes = np.random.default_rng(0).integers(0, 16, size=(7, 64)).astype(np.uint8)
    packed = wq.pack_int4(codes)
    assert packed.shape == (7, 32) and packed.dtype == np.uint8
    assert np.array_equal(wq.unpack_int4(packed), codes)
    every = np.arange(16, dtype=np.uint8).repeat(2)  # each code in both nibble positions
    assert np.array_equal(wq.unpack_int4(wq.pack_int4(every)), every)
    assert wq.pack_int4(np.array([1, 2], dtype=np.uint8))[0] == 0x21  # low nibble first


def test_pack_rejects_bad_codes():
    with pytest.raises(ValueError, match=r"\[0, 15\]"):
        wq.pack_int4(np.array([0, 16]))
    with pytest.raises(ValueError, match="even"):
        wq.pack_int4(np.array([1, 2, 3]))
    with pytest.raises(TypeError, match="integer"):
        wq.pack_int4(np.array([0.5, 1.0]))


@pytest.mark.parametrize("bits,group_size", [(4, 32), (4, 128), (8, 64), (3, 32), (2, 16)])
def test_error_is_half_a_step_inside_and_at_most_a_step_at_the_ends(bits, group_size):
    # The integer zero point shifts the grid by up to half a step, so a group's extremes may clip by that much more.
    w = np.random.default_rng(1).normal(size=(16, 256)).astype(np.float32)
    gq = wq.quantize_groups(w, group_size, bits)
    assert gq.codes.max() <= 2**bits - 1 and gq.scale.dtype == np.float16
    step = np.repeat(gq.scale.astype(np.float32), group_size, axis=1)
    err = np.abs(wq.dequantize_groups(gq) - w)
    assert np.all(err <= step * 1.001 + 1e-6)
    assert np.mean(err <= step / 2 + 1e-6) > 0.95


def test_edge_groups_constant_zero_and_one_sided_are_exact_up_to_float16():
    w = np.zeros((4, 32), dtype=np.float32)
    w[1] = 0.37       # constant positive group
    w[2] = -5.0       # constant negative group
    w[3] = np.linspace(0.1, 2.0, 32)  # all positive: 0 stays in range
    back = wq.fake_quantize_groups(w, 32, 4)
    assert np.array_equal(back[0], w[0])
    np.testing.assert_allclose(back[1:3], w[1:3], rtol=1e-3)
    assert back[3].max() == pytest.approx(2.0, rel=1e-3)


def test_more_bits_and_smaller_groups_give_less_error():
    w = np.random.default_rng(2).standard_t(3, size=(64, 256)).astype(np.float32)
    err = {(b, g): float(np.mean((wq.fake_quantize_groups(w, g, b) - w) ** 2)) for b in (3, 4, 8) for g in (32, 128)}
    assert err[(8, 32)] < err[(4, 32)] < err[(3, 32)]
    assert err[(4, 32)] < err[(4, 128)]


def test_bytes_formula_and_bits_per_weight():
    assert wq.group_quant_bytes((128, 256), 32, 4) == 128 * 256 // 2 + 128 * 8 * 2 + 128 * 8 // 2
    assert wq.bits_per_weight(32, 4) == pytest.approx(4.625)
    assert wq.bits_per_weight(128, 4) == pytest.approx(4 + 20 / 128)
    gq = wq.quantize_groups(np.ones((3, 64), dtype=np.float32), 32, 4)
    assert gq.nbytes == wq.group_quant_bytes((3, 64), 32, 4) == 3 * 32 + 6 * 2 + 3
    assert wq.group_quant_bytes((10, 96), 32, 4) * 8 / 960 == pytest.approx(wq.bits_per_weight(32, 4))


def test_bad_input_gives_clear_errors():
    with pytest.raises(ValueError, match="multiple of group_size"):
        wq.quantize_groups(np.ones((2, 100), dtype=np.float32), 32)
    with pytest.raises(ValueError, match="2-D"):
        wq.quantize_groups(np.ones(64, dtype=np.float32), 32)
    with pytest.raises(ValueError, match="NaN"):
        wq.quantize_groups(np.full((1, 32), np.nan, dtype=np.float32), 32)
    with pytest.raises(ValueError, match="bits"):
        wq.quantize_groups(np.ones((1, 32), dtype=np.float32), 32, bits=1)
    with pytest.raises(ValueError, match="overflows float16"):
        wq.quantize_groups(np.array([[-1e9, 1e9]], dtype=np.float32), 2)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 32)).eval()


def test_model_bytes_and_fake_quantized_copy():
    model = _mlp()
    fp32 = wq.model_weight_bytes(model, None, None)
    assert fp32.total_bytes == sum(p.numel() for p in model.parameters()) * 4 and fp32.times_smaller == 1
    int4 = wq.model_weight_bytes(model, 4, 32)
    biases = (128 + 32) * 4
    assert int4.total_bytes == wq.group_quant_bytes((128, 64), 32) + wq.group_quant_bytes((32, 128), 32) + biases
    q = wq.quantize_model_weights(model, 4, 32)
    assert not torch.equal(q[0].weight, model[0].weight) and torch.equal(q[0].bias, model[0].bias)
    expected = wq.fake_quantize_groups(model[2].weight.detach().numpy(), 32, 4)
    assert np.array_equal(q[2].weight.detach().numpy(), expected)


def test_awq_alpha_zero_is_round_to_nearest_and_search_never_worse():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(512, 64)).astype(np.float32)
    x[:, :4] *= 30  # a few salient input channels, as in large models
    w = rng.normal(size=(32, 64)).astype(np.float32) * 0.1
    result = wq.awq_search(w, x, bits=4, group_size=32, n_grid=10)
    rtn = float(np.mean((x @ wq.fake_quantize_groups(w, 32, 4).T - x @ w.T) ** 2))
    assert result.grid[0] == 0 and result.rtn_error == pytest.approx(rtn, rel=1e-5)
    assert result.best_error < 0.8 * result.rtn_error  # the outlier channels make scaling pay
    assert result.alpha > 0 and result.scales[:4].min() > result.scales[4:].max()


def test_collect_inputs_and_awq_model():
    model = _mlp()
    batches = [torch.randn(8, 64) for _ in range(3)]
    inputs = wq.collect_linear_inputs(model, batches, max_rows=16)
    assert set(inputs) == {"0", "2"} and inputs["0"].shape == (16, 64) and inputs["2"].shape == (16, 128)
    found = wq.awq_search_model(model, inputs, bits=4, group_size=32, n_grid=4)
    scaled = wq.quantize_model_weights(model, 4, 32, {k: v.scales for k, v in found.items()})
    assert scaled[0].weight.shape == model[0].weight.shape
    with pytest.raises(ValueError, match="no calibration inputs"):
        wq.awq_search_model(model, {"0": inputs["0"]})


def test_inject_outliers_preserves_the_function_and_makes_rtn_worse():
    from course_lib import lm

    torch.manual_seed(0)
    model = lm.TinyLM(lm.LMConfig(d_model=64, n_layers=1, n_heads=2, context=16)).eval()
    spiky = wq.inject_outliers(model, channels=(3,), factor=30.0)
    ids = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(spiky(ids), model(ids), atol=1e-4, rtol=1e-4)
        x = wq.collect_linear_inputs(spiky, [ids])["blocks.0.qkv"]
        assert np.abs(x[:, 3]).mean() > 10 * np.median(np.abs(x).mean(axis=0))
    with pytest.raises(ValueError, match="channels"):
        wq.inject_outliers(model, channels=(64,))
    with pytest.raises(ValueError, match="no LayerNorm"):
        wq.inject_outliers(torch.nn.Linear(3, 3))


def test_clip_search_never_loses_to_no_clipping_on_its_own_data():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 64)).astype(np.float32)
    w[0, 3] = 12.0  # one extreme weight: clipping its group pays on typical inputs
    x = rng.standard_normal((256, 64)).astype(np.float32)
    clip = wq.awq_clip_search(w, x, bits=4, group_size=32)
    assert clip.shape == (8, 2) and clip.min() >= 0.5 and clip.max() <= 1.0
    err = lambda c: np.mean((x @ (w - wq.fake_quantize_groups(w, 32, 4, c)).T) ** 2)  # noqa: E731
    assert err(clip) <= err(np.ones((8, 2), dtype=np.float32)) + 1e-9
    with pytest.raises(ValueError, match="clip"):
        wq.quantize_groups(w, 32, 4, clip=np.zeros((8, 2)))
