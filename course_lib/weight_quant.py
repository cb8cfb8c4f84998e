"""Weight-only quantization by hand: per-group low-bit weights, int4 packing, and activation-aware scaling (AWQ).

The scheme (the one ONNX Runtime's ``MatMulNBits`` and GPTQ use): the weight
matrix ``W`` (out_features × in_features) is cut along its input dimension into
groups of ``group_size`` consecutive values; each group gets its own scale and
integer zero point::

    lo, hi = min(group, 0), max(group, 0)          # the range always holds 0
    scale  = (hi - lo) / (2**bits - 1)             # stored as float16
    zero   = round(-lo / scale)                    # an integer in [0, 2**bits - 1]
    q      = clamp(round(w / scale) + zero, 0, 2**bits - 1)
    w     ≈ (q - zero) · scale

Bytes: ``bits`` per weight, plus per group a float16 scale (2 bytes) and a
zero point of ``bits`` bits — so 4-bit weights in groups of 32 cost
4 + (16 + 4) / 32 = 4.625 bits per weight, 6.9× fewer than float32.
Per-channel quantization is the special case ``group_size = in_features``.

Why the range holds 0: zero (and so padding and constant groups) is then
exact, and a group of identical values dequantizes to that value up to the
float16 rounding of its scale.

Activation-aware scaling (AWQ, Lin et al. 2024): a few input channels carry
much larger activations than the rest, so rounding error on *their* weights
costs the output most. Multiplying those weight columns by ``s > 1`` before
quantizing (and the activations by ``1/s``, folded into the previous
operation in a real deployment) gives them relatively finer steps. AWQ picks
``s = mean|x|^α`` and grid-searches ``α ∈ [0, 1]`` on calibration data; ``α = 0``
is plain round-to-nearest, so the search can only match or beat it *on the
calibration data*.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

# --- per-group quantization (NumPy, every step visible) ----------------------------------------


@dataclass
class GroupQuant:
    """A quantized matrix: integer codes (unpacked, uint8), per-group float16 scales and integer zero points."""

    codes: np.ndarray  # (out, in) uint8 in [0, 2**bits - 1]
    scale: np.ndarray  # (out, in // group_size) float16
    zero: np.ndarray  # (out, in // group_size) uint8
    bits: int
    group_size: int

    @property
    def shape(self) -> tuple[int, int]:
        rows, cols = self.codes.shape
        return int(rows), int(cols)

    @property
    def nbytes(self) -> int:
        """Storage bytes: packed codes, float16 scales, packed zero points (see :func:`group_quant_bytes`)."""
        return group_quant_bytes(self.shape, self.group_size, self.bits)


def _check_matrix(w: Any) -> np.ndarray:
    w = np.asarray(w)
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D weight matrix (out_features, in_features), got shape {w.shape}")
    if not np.issubdtype(w.dtype, np.floating):
        raise TypeError(f"expected floating-point weights, got {w.dtype}")
    if not np.all(np.isfinite(w)):
        raise ValueError("the weights hold NaN or infinity: quantize finite values only")
    return w.astype(np.float32)


def _check_group(in_features: int, group_size: int, bits: int) -> None:
    if not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be an integer from 2 to 8, got {bits!r}")
    if not isinstance(group_size, (int, np.integer)) or group_size < 1:
        raise ValueError(f"group_size must be a positive integer, got {group_size!r}")
    if in_features % group_size:
        raise ValueError(f"in_features ({in_features}) is not a multiple of group_size ({group_size}); "
                         f"choose a divisor, e.g. {[g for g in (32, 64, 128, in_features) if in_features % g == 0]}")


def quantize_groups(w: Any, group_size: int, bits: int = 4, clip: Any = None) -> GroupQuant:
    """Quantize a (out, in) matrix in groups of ``group_size`` along ``in`` (asymmetric, range including 0).

    ``clip`` (optional, ``out × in/group_size`` ratios in (0, 1]) shrinks each
    group's range before the scale is chosen: the largest weights are then
    clamped, and every other weight gets a finer step (AWQ's clipping search,
    :func:`awq_clip_search`, picks the ratios).
    """
    w = _check_matrix(w)
    out_f, in_f = w.shape
    _check_group(in_f, group_size, bits)
    qmax = 2**bits - 1
    g = w.reshape(out_f, in_f // group_size, group_size)
    lo = np.minimum(g.min(axis=2), 0.0)
    hi = np.maximum(g.max(axis=2), 0.0)
    if clip is not None:
        ratio = np.asarray(clip, dtype=np.float32)
        if ratio.shape != lo.shape or not np.all((ratio > 0) & (ratio <= 1)):
            raise ValueError(f"clip must hold ratios in (0, 1], one per row and group {lo.shape}, got shape {ratio.shape}")
        lo, hi = lo * ratio, hi * ratio
    if np.max(hi - lo) / qmax > np.finfo(np.float16).max:
        raise ValueError(f"a group spans {np.max(hi - lo):.3g}: its scale overflows float16 (max {np.finfo(np.float16).max:.0f})")
    scale = ((hi - lo) / qmax).astype(np.float16)
    # The float16 scale is what is stored, so quantize with it (not the float32 one) to keep q and scale consistent.
    s = scale.astype(np.float32)
    safe = np.where(s > 0, s, 1.0)  # an all-zero group: any scale works, the codes all equal the zero point
    zero = np.clip(np.round(-lo / safe), 0, qmax)
    codes = np.clip(np.round(g / safe[..., None]) + zero[..., None], 0, qmax)
    return GroupQuant(codes.reshape(out_f, in_f).astype(np.uint8), scale, zero.astype(np.uint8), int(bits), int(group_size))


def dequantize_groups(gq: GroupQuant) -> np.ndarray:
    """Back to float32: ``(q - zero) · scale`` group by group."""
    out_f, in_f = gq.shape
    q = gq.codes.reshape(out_f, in_f // gq.group_size, gq.group_size).astype(np.float32)
    w = (q - gq.zero[..., None].astype(np.float32)) * gq.scale[..., None].astype(np.float32)
    return w.reshape(out_f, in_f)


def fake_quantize_groups(w: Any, group_size: int, bits: int = 4, clip: Any = None) -> np.ndarray:
    """Quantize then dequantize: the weights a weight-only quantized model effectively computes with."""
    return dequantize_groups(quantize_groups(w, group_size, bits, clip))


def group_quant_bytes(shape: tuple[int, int], group_size: int, bits: int = 4, scale_bytes: int = 2) -> int:
    """Bytes to store a (out, in) matrix: ⌈n·bits/8⌉ for the codes + groups · ``scale_bytes`` + ⌈groups·bits/8⌉ for zero points."""
    out_f, in_f = shape
    _check_group(in_f, group_size, bits)
    n, groups = out_f * in_f, out_f * (in_f // group_size)
    return -(-n * bits // 8) + groups * scale_bytes + -(-groups * bits // 8)


def bits_per_weight(group_size: int, bits: int = 4, scale_bytes: int = 2) -> float:
    """Storage bits per weight including the per-group scale and zero point: bits + (8·scale_bytes + bits) / group_size."""
    return bits + (8 * scale_bytes + bits) / group_size


# --- packing two 4-bit codes in a byte ----------------------------------------------------------


def pack_int4(codes: Any) -> np.ndarray:
    """Pack 4-bit codes (0–15) two per byte along the last axis: element 2i in the low nibble, 2i + 1 in the high one."""
    codes = np.asarray(codes)
    if not np.issubdtype(codes.dtype, np.integer):
        raise TypeError(f"expected integer codes, got {codes.dtype}")
    if codes.size and (codes.min() < 0 or codes.max() > 15):
        raise ValueError(f"4-bit codes must lie in [0, 15], got values from {codes.min()} to {codes.max()}")
    if codes.shape[-1] % 2:
        raise ValueError(f"the last axis ({codes.shape[-1]}) must be even to pack two codes per byte; pad it first")
    c = codes.astype(np.uint8)
    return (c[..., 0::2] | (c[..., 1::2] << 4)).astype(np.uint8)


def unpack_int4(packed: Any) -> np.ndarray:
    """Inverse of :func:`pack_int4`: each byte → (low nibble, high nibble), doubling the last axis."""
    packed = np.asarray(packed)
    if packed.dtype != np.uint8:
        raise TypeError(f"expected packed uint8 bytes, got {packed.dtype}")
    out = np.empty(packed.shape[:-1] + (2 * packed.shape[-1],), dtype=np.uint8)
    out[..., 0::2] = packed & 0x0F
    out[..., 1::2] = packed >> 4
    return out


# --- whole models -------------------------------------------------------------------------------


def linear_layers(model: nn.Module) -> dict[str, nn.Linear]:
    """Every ``nn.Linear`` by name: the layers weight-only quantization replaces (embeddings, norms and biases stay float)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}


@dataclass
class WeightReport:
    """Bytes of a weight-quantized model: the quantized Linear weights and everything kept in float32."""

    quantized_bytes: int
    float_bytes: int
    fp32_bytes: int
    extra_bytes: int = 0  # e.g. AWQ's per-input-channel scales when not folded

    @property
    def total_bytes(self) -> int:
        return self.quantized_bytes + self.float_bytes + self.extra_bytes

    @property
    def times_smaller(self) -> float:
        return self.fp32_bytes / self.total_bytes


def model_weight_bytes(model: nn.Module, bits: int | None, group_size: int | None) -> WeightReport:
    """Bytes of ``model`` with every Linear weight stored at ``bits`` in groups (``group_size=None``: per channel).

    ``bits=None`` means no quantization (float32 everywhere). Everything that is
    not a Linear weight (embeddings, biases, LayerNorms) is counted at float32.
    """
    fp32 = sum(p.numel() * 4 for p in model.parameters())
    if bits is None:
        return WeightReport(0, fp32, fp32)
    q_bytes = q_params = 0
    for layer in linear_layers(model).values():
        shape = (int(layer.weight.shape[0]), int(layer.weight.shape[1]))
        q_bytes += group_quant_bytes(shape, group_size or shape[1], bits)
        q_params += layer.weight.numel()
    return WeightReport(q_bytes, fp32 - 4 * q_params, fp32)


def quantize_model_weights(model: nn.Module, bits: int, group_size: int | None,
                           input_scales: dict[str, np.ndarray] | None = None,
                           clips: dict[str, np.ndarray] | None = None) -> nn.Module:
    """A copy of ``model`` whose Linear weights are replaced by their quantized-then-dequantized values.

    This simulates weight-only quantization exactly (the kernels of a real
    runtime dequantize the same numbers on the fly), so the copy's quality
    is the quantized model's quality. ``input_scales`` (from :func:`awq_search_model`)
    multiplies each weight's input columns by ``s`` before quantizing and
    divides after, which equals scaling the activations by ``1/s``; ``clips``
    (from :func:`awq_clip_search`, on the scaled weights) shrinks group ranges.
    """
    quantized = copy.deepcopy(model).eval()
    for name, layer in linear_layers(quantized).items():
        w = layer.weight.detach().numpy()
        s = None if input_scales is None else input_scales.get(name)
        g = group_size or w.shape[1]
        w_hat = fake_quantize_groups(w if s is None else w * s, g, bits, None if clips is None else clips.get(name))
        if s is not None:
            w_hat = w_hat / s
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(w_hat))
    return quantized


# --- activation-aware scaling (AWQ) ---------------------------------------------------------------


@torch.inference_mode()
def collect_linear_inputs(model: nn.Module, batches: Iterable[torch.Tensor], max_rows: int = 4096,
                          seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs seen by every Linear layer on calibration batches: up to ``max_rows`` rows (tokens) each, sampled evenly."""
    rows: dict[str, list[np.ndarray]] = {name: [] for name in linear_layers(model)}
    hooks = [layer.register_forward_hook(lambda mod, args, out, name=name: rows[name].append(args[0].reshape(-1, args[0].shape[-1]).numpy().copy()))
             for name, layer in linear_layers(model).items()]
    try:
        for batch in batches:
            model(batch)
    finally:
        for hook in hooks:
            hook.remove()
    rng = np.random.default_rng(seed)
    out = {}
    for name, chunks in rows.items():
        if not chunks:
            raise ValueError(f"layer {name} saw no input: did the calibration batches run through it?")
        x = np.concatenate(chunks)
        out[name] = x[np.sort(rng.choice(len(x), size=min(max_rows, len(x)), replace=False))]
    return out


@dataclass
class AWQResult:
    """The chosen exponent, the per-input-channel scales and the output error at every grid point."""

    alpha: float
    scales: np.ndarray
    grid: list[float] = field(default_factory=list)
    errors: list[float] = field(default_factory=list)

    @property
    def rtn_error(self) -> float:
        """Output error of plain round-to-nearest (α = 0)."""
        return self.errors[0]

    @property
    def best_error(self) -> float:
        return min(self.errors)


def awq_search(w: Any, x: Any, bits: int = 4, group_size: int = 32, n_grid: int = 20) -> AWQResult:
    """Grid-search AWQ's exponent for one Linear: ``s = mean|x|^α`` normalized, minimizing the output's mean squared error.

    As in the reference implementation (``mit-han-lab/llm-awq``,
    ``auto_scale.py``): ``s`` is normalized by ``sqrt(max(s)·min(s))`` so
    scaling does not shift the overall range, α runs over
    ``0, 1/n_grid, …, (n_grid-1)/n_grid``. (The reference scores the whole
    block's output; this scores the layer's own output.)
    """
    w = _check_matrix(w)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"activations must be (tokens, {w.shape[1]}), got {x.shape}")
    if n_grid < 1:
        raise ValueError(f"n_grid must be >= 1, got {n_grid}")
    reference = x @ w.T
    act = np.maximum(np.abs(x).mean(axis=0), 1e-4)
    grid, errors, best = [], [], (np.inf, 0.0, np.ones(w.shape[1], dtype=np.float32))
    for i in range(n_grid):
        alpha = i / n_grid
        s = act**alpha
        s = (s / np.sqrt(s.max() * s.min())).astype(np.float32)
        w_hat = fake_quantize_groups(w * s, group_size, bits) / s
        err = float(np.mean((x @ w_hat.T - reference) ** 2))
        grid.append(alpha)
        errors.append(err)
        if err < best[0]:
            best = (err, alpha, s)
    return AWQResult(best[1], best[2], grid, errors)


def awq_search_model(model: nn.Module, inputs: dict[str, np.ndarray], bits: int = 4, group_size: int = 32,
                     n_grid: int = 20) -> dict[str, AWQResult]:
    """:func:`awq_search` for every Linear layer, from :func:`collect_linear_inputs`'s activations."""
    layers = linear_layers(model)
    missing = set(layers) - set(inputs)
    if missing:
        raise ValueError(f"no calibration inputs for {sorted(missing)}")
    return {name: awq_search(layer.weight.detach().numpy(), inputs[name], bits, group_size, n_grid) for name, layer in layers.items()}


def inject_outliers(model: nn.Module, channels: Iterable[int] = (5, 77), factor: float = 30.0) -> nn.Module:
    """A copy of a pre-LN transformer that computes the same function but has outlier input channels.

    For every LayerNorm that feeds a Linear layer (``ln1 → qkv``, ``ln2 → fc1``
    in each block, ``ln_f → head``), channel ``c``'s LayerNorm weight and bias
    are multiplied by ``factor`` and the Linear's weight column ``c`` divided
    by it: the product is unchanged, so the fp32 model's outputs are too
    (up to rounding), but those Linear layers now see inputs ``factor`` times
    larger on a few channels — the activation outliers LLMs develop
    (Dettmers et al. 2022), made to order. Their weight columns become small,
    so round-to-nearest loses them, which is what AWQ's scaling is for.
    """
    if not factor > 0:
        raise ValueError(f"factor must be positive, got {factor!r}")
    result = copy.deepcopy(model).eval()
    candidates = [(getattr(b, "ln1", None), getattr(b, "qkv", None)) for b in getattr(result, "blocks", [])]
    candidates += [(getattr(b, "ln2", None), getattr(b, "fc1", None)) for b in getattr(result, "blocks", [])]
    candidates.append((getattr(result, "ln_f", None), getattr(result, "head", None)))
    pairs: list[tuple[nn.LayerNorm, nn.Linear]] = [
        (norm, linear) for norm, linear in candidates if isinstance(norm, nn.LayerNorm) and isinstance(linear, nn.Linear)]
    if not pairs:
        raise ValueError("no LayerNorm → Linear pairs found (expected blocks with ln1/qkv, ln2/fc1 and ln_f/head)")
    index = torch.as_tensor(list(channels), dtype=torch.long)
    width = pairs[0][1].in_features
    if index.numel() == 0 or int(index.min()) < 0 or int(index.max()) >= width:
        raise ValueError(f"channels must be indices in [0, {width}), got {index.tolist()}")
    with torch.no_grad():
        for norm, linear in pairs:
            norm.weight[index] *= factor
            norm.bias[index] *= factor
            linear.weight[:, index] /= factor
    return result


def awq_clip_search(w: Any, x: Any, bits: int = 4, group_size: int = 32, scales: Any = None,
                    ratios: Any = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5)) -> np.ndarray:
    """AWQ's second step: per row and group, the range-shrinking ratio with the smallest output error on ``x``.

    Shrinking a group's range clamps its few largest weights but gives all
    others a finer step; which wins depends on the inputs, so each ``(row,
    group)`` is scored by the squared error of its contribution to the
    output, ``mean((x_g · (w_g − ŵ_g))²)`` — as ``auto_clip`` in
    ``mit-han-lab/llm-awq`` does. With ``scales`` (from :func:`awq_search`)
    the search runs on the scaled weights ``w·s`` with inputs ``x/s``, which
    is what :func:`quantize_model_weights` then quantizes.
    """
    w = _check_matrix(w)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"activations must be (tokens, {w.shape[1]}), got {x.shape}")
    if scales is not None:
        s = np.asarray(scales, dtype=np.float32)
        w, x = w * s, x / s
    out_f, in_f = w.shape
    _check_group(in_f, group_size, bits)
    n_groups = in_f // group_size
    grid = np.asarray(ratios, dtype=np.float32)
    if grid.ndim != 1 or grid.size == 0 or not np.all((grid > 0) & (grid <= 1)):
        raise ValueError(f"ratios must be a non-empty list of values in (0, 1], got {ratios!r}")
    errors = np.empty((grid.size, out_f, n_groups))
    for k, ratio in enumerate(grid):
        diff = w - fake_quantize_groups(w, group_size, bits, np.full((out_f, n_groups), ratio, dtype=np.float32))
        for j in range(n_groups):
            cols = slice(j * group_size, (j + 1) * group_size)
            errors[k, :, j] = np.mean((x[:, cols] @ diff[:, cols].T) ** 2, axis=0)
    return grid[np.argmin(errors, axis=0)]
