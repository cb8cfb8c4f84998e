"""Quantization: the affine int8 math for teaching, and the PyTorch paths that are current in the pinned versions.

The math (NumPy, so every step is visible)::

    q = clamp(round(x / scale) + zero_point, qmin, qmax)      # quantize
    x ≈ (q - zero_point) · scale                               # dequantize

*Asymmetric* (affine) quantization maps ``[min(x, 0), max(x, 0)]`` onto
``[qmin, qmax]``; *symmetric* fixes ``zero_point = 0`` and maps
``[-max|x|, max|x|]``. *Per-channel* gives every slice along ``axis`` its own
scale (and zero point), which matters when channels have different ranges.
Integer-only inference rescales int32 accumulators with a fixed-point
multiplier (:func:`fixed_point_multiplier`, :func:`requantize`).

PyTorch paths (torch 2.14 / torchao 0.18):

* dynamic: :func:`dynamic_quantize_legacy` (``torch.ao.quantization.quantize_dynamic``,
  deprecated, still the one with fast x86 kernels for ``nn.Linear``) and
  :func:`dynamic_quantize_torchao` (its replacement, ``torchao.quantization.quantize_``);
* static and QAT: PT2E — ``torch.export`` → ``prepare_pt2e`` / ``prepare_qat_pt2e``
  → calibrate or train → ``convert_pt2e`` (:func:`pt2e_prepare`, :func:`calibrate`,
  :func:`pt2e_convert`). The converted graph is a reference (float compute with
  quantize / dequantize steps) until lowered: with ExecuTorch's
  ``XNNPACKQuantizer`` to a ``.pte`` (:mod:`course_lib.deploy`), or with
  :func:`x86_quantizer` through ``torch.compile`` (Inductor, x86 servers).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from course_lib.measure import example_batch, set_mode

if TYPE_CHECKING:  # ExecuTorch is heavy: imported where used
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer

# --- the math ---------------------------------------------------------------------------------


@dataclass
class QParams:
    """Scale and zero point (arrays, broadcastable to the tensor) and the integer range."""

    scale: np.ndarray
    zero_point: np.ndarray
    qmin: int
    qmax: int
    axis: int | None = None


def qrange(bits: int = 8, signed: bool = True) -> tuple[int, int]:
    """The integer range of ``bits``-bit numbers: (-128, 127) signed, (0, 255) unsigned for 8 bits."""
    if not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"bits must be an integer between 2 and 16, got {bits!r}")
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def _reduce(x: np.ndarray, axis: int | None, fn: Any) -> np.ndarray:
    if axis is None:
        return np.asarray(fn(x))
    other = tuple(d for d in range(x.ndim) if d != axis % x.ndim)
    return fn(x, axis=other, keepdims=True)


def choose_qparams(
    x: Any, bits: int = 8, symmetric: bool = False, signed: bool = True, axis: int | None = None
) -> QParams:
    """Scale and zero point that map the range of ``x`` onto ``bits``-bit integers.

    The float range always includes 0, so that 0.0 (padding, ReLU outputs,
    pruned weights) is represented exactly. A constant tensor gets a range of
    ``[min(x, 0), max(x, 0)]``; an all-zero one a scale of 1 (any scale is exact).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        raise ValueError("cannot choose quantization parameters for an empty tensor")
    if axis is not None and not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis {axis} is out of range for a tensor with {x.ndim} dimensions")
    qmin, qmax = qrange(bits, signed)
    low = np.minimum(_reduce(x, axis, np.min), 0.0)
    high = np.maximum(_reduce(x, axis, np.max), 0.0)
    if symmetric:
        # zero_point 0 (or the middle of an unsigned range); the wider side of the range sets the scale.
        bound = np.maximum(-low, high)
        half = (qmax - qmin) // 2
        scale = bound / half
        zero_point = np.zeros_like(scale) if signed else np.full_like(scale, (qmin + qmax + 1) // 2)
    else:
        scale = (high - low) / (qmax - qmin)
        scale = np.where(scale == 0, 1.0, scale)
        zero_point = np.clip(np.round(qmin - low / scale), qmin, qmax)
    scale = np.where(scale == 0, 1.0, scale)
    return QParams(scale.astype(np.float64), zero_point.astype(np.int64), qmin, qmax, axis)


def quantize(x: Any, qparams: QParams) -> np.ndarray:
    """``clamp(round(x / scale) + zero_point, qmin, qmax)`` as int64 (round half to even, like PyTorch)."""
    x = np.asarray(x, dtype=np.float64)
    q = np.round(x / qparams.scale) + qparams.zero_point
    return np.clip(q, qparams.qmin, qparams.qmax).astype(np.int64)


def dequantize(q: Any, qparams: QParams) -> np.ndarray:
    """``(q - zero_point) · scale`` as float64."""
    return (np.asarray(q, dtype=np.float64) - qparams.zero_point) * qparams.scale


def fake_quantize(x: Any, bits: int = 8, symmetric: bool = False, axis: int | None = None) -> np.ndarray:
    """Quantize then dequantize: the float values a quantized model actually computes with."""
    qparams = choose_qparams(x, bits=bits, symmetric=symmetric, axis=axis)
    return dequantize(quantize(x, qparams), qparams)


def quantization_error(x: Any, bits: int = 8, symmetric: bool = False, axis: int | None = None) -> dict[str, float]:
    """Max and mean absolute error and signal-to-quantization-noise ratio (dB) of :func:`fake_quantize`."""
    x = np.asarray(x, dtype=np.float64)
    error = fake_quantize(x, bits=bits, symmetric=symmetric, axis=axis) - x
    noise = float(np.mean(error**2))
    signal = float(np.mean(x**2))
    sqnr = float("inf") if noise == 0 else 10 * np.log10(signal / noise)
    return {"max_abs_error": float(np.abs(error).max()), "mean_abs_error": float(np.abs(error).mean()), "sqnr_db": sqnr}


# --- integer-only inference ---------------------------------------------------------------------


def fixed_point_multiplier(multiplier: Any, bits: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Write each real ``multiplier`` in (0, 1) as ``m0 · 2^-shift`` with an integer ``m0`` in ``[2^(bits-2), 2^(bits-1))``.

    An int8 layer's output is ``y_q = z_y + M · acc`` with ``M = s_x · s_w / s_y``
    (``acc`` the int32 accumulator). Integer-only hardware has no float
    multiply, so ``M`` is stored as a ``bits``-bit integer ``m0`` (31 bits of
    precision for 32) and a right shift, as in Jacob et al. 2018 (gemmlowp,
    TFLite): ``M · acc ≈ (m0 · acc) >> shift``.
    """
    m = np.asarray(multiplier, dtype=np.float64)
    if m.size == 0 or not np.all(np.isfinite(m)) or np.any(m <= 0) or np.any(m >= 1):
        raise ValueError("the requantization multiplier s_x·s_w/s_y must lie in (0, 1); got values outside it")
    if not 8 <= bits <= 32:
        raise ValueError(f"bits must be between 8 and 32, got {bits}")
    mantissa, exponent = np.frexp(m)  # m = mantissa · 2^exponent, mantissa in [0.5, 1)
    m0 = np.round(mantissa * 2 ** (bits - 1)).astype(np.int64)
    carry = m0 == 2 ** (bits - 1)  # rounding up to 1.0: halve it, one less shift
    m0 = np.where(carry, m0 // 2, m0)
    shift = (bits - 1) - np.where(carry, exponent + 1, exponent).astype(np.int64)
    return m0, shift


def requantize(accumulator: Any, m0: Any, shift: Any, zero_point: int, qmin: int = -128, qmax: int = 127) -> np.ndarray:
    """int32 accumulators → ``qmin..qmax`` outputs with integer operations only.

    ``round(acc · m0 / 2^shift) + zero_point``, clamped; the rounding adds half
    of ``2^shift`` before an arithmetic right shift (round half up), so no
    float is used. ``m0`` and ``shift`` come from :func:`fixed_point_multiplier`
    and broadcast against ``accumulator`` (one per output channel, last axis).
    """
    acc = np.asarray(accumulator)
    if not np.issubdtype(acc.dtype, np.integer):
        raise TypeError(f"the accumulator must hold integers (int32 sums), got {acc.dtype}")
    m0, shift = np.asarray(m0, dtype=np.int64), np.asarray(shift, dtype=np.int64)
    if np.any(shift < 1) or np.any(shift > 62):
        raise ValueError("shift must lie in 1..62 (use fixed_point_multiplier for a multiplier in (0, 1))")
    product = acc.astype(np.int64) * m0  # |acc| < 2^31 and m0 < 2^31: fits in int64
    rounded = (product + (np.int64(1) << (shift - 1))) >> shift
    return np.clip(rounded + zero_point, qmin, qmax).astype(np.int64)


# --- dynamic quantization -----------------------------------------------------------------------


def dynamic_quantize_legacy(model: nn.Module, layers: set[type[nn.Module]] | None = None) -> tuple[nn.Module, str]:
    """``torch.ao.quantization.quantize_dynamic`` on a copy; returns the model and the deprecation warning it gave.

    Deprecated in favour of torchao, but it still has the fast x86 (fbgemm)
    kernels for int8 ``nn.Linear``. Only ``nn.Linear`` / RNN layers have
    dynamic versions: other types in ``layers`` (``nn.ReLU``, ``nn.Conv2d``)
    are silently left as they are.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quantized = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model).eval(), layers or {nn.Linear}, dtype=torch.qint8
        )
    deprecations = [str(w.message) for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))]
    return quantized, (deprecations[0].splitlines()[0] if deprecations else "")


def dynamic_quantize_torchao(model: nn.Module) -> nn.Module:
    """torchao's replacement: ``quantize_(model, Int8DynamicActivationInt8WeightConfig())`` on a copy.

    torchao's quantized weights are tensor subclasses built to run under
    ``torch.compile`` (see :func:`course_lib.runtimes.wrap_compiled`); in eager
    mode every op pays Python dispatch, so time it compiled.
    """
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    quantized = copy.deepcopy(model).eval()
    quantize_(quantized, Int8DynamicActivationInt8WeightConfig())
    return quantized


# --- PT2E static quantization and QAT -------------------------------------------------------------


def xnnpack_quantizer(per_channel: bool = True, weight_bits: int = 8, qat: bool = False) -> XNNPACKQuantizer:
    """ExecuTorch's ``XNNPACKQuantizer``: int8 activations, ``weight_bits``-bit symmetric weights.

    Weights below 8 bits are *simulated* (int8 storage with a narrower range):
    enough to study accuracy, not a smaller file.
    """
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    if not 2 <= weight_bits <= 8:
        raise ValueError(f"weight_bits must be between 2 and 8, got {weight_bits}")
    # Symmetric weights use [-(2^(b-1) - 1), 2^(b-1) - 1] so that zero_point is 0.
    bound = 2 ** (weight_bits - 1) - 1
    config = get_symmetric_quantization_config(
        is_per_channel=per_channel, is_qat=qat, weight_qmin=-bound, weight_qmax=bound
    )
    return XNNPACKQuantizer().set_global(config)


def x86_quantizer() -> Any:
    """torchao's ``X86InductorQuantizer`` with its default config, for PyTorch's own x86 int8 path.

    uint8 activations (``HistogramObserver``), int8 weights symmetric **per
    channel** (``PerChannelMinMaxObserver``); the converted graph runs int8
    (oneDNN) kernels once compiled by Inductor with freezing
    (:func:`course_lib.runtimes.wrap_compiled`).
    """
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    return X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())


def export_for_quantization(model: nn.Module, example: torch.Tensor, dynamic_batch: bool = True) -> nn.Module:
    """``torch.export`` the model (batch dimension dynamic by default) and return its graph module.

    Export with an example batch of at least 2: a batch-1 export fixes the batch
    size, and later calibration or evaluation batches then fail a shape guard.
    """
    example = example_batch(example, dynamic_batch)
    # 4096: above any batch the course calibrates or evaluates with (the largest split has 1,167 images)
    shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
    return torch.export.export(model, (example,), dynamic_shapes=shapes).module()


def pt2e_prepare(
    model: nn.Module, example: torch.Tensor, quantizer: Any | None = None, qat: bool = False
) -> nn.Module:
    """Export and insert observers (``prepare_pt2e``) or fake-quant modules for QAT (``prepare_qat_pt2e``)."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e, prepare_qat_pt2e

    quantizer = quantizer or xnnpack_quantizer(qat=qat)
    source = copy.deepcopy(model)
    source.train(qat)  # QAT exports the training graph (dropout, BatchNorm in train mode)
    graph = export_for_quantization(source, example)
    return prepare_qat_pt2e(graph, quantizer) if qat else prepare_pt2e(graph, quantizer)


@torch.no_grad()
def calibrate(prepared: nn.Module, batches: Iterable[Any], max_batches: int | None = None) -> int:
    """Run ``batches`` (tensors or ``(x, y)`` pairs) through a prepared model so its observers see the ranges."""
    set_mode(prepared, False)
    seen = 0
    for batch in batches:
        if max_batches is not None and seen >= max_batches:
            break
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        prepared(torch.as_tensor(x))
        seen += 1
    if seen == 0:
        raise ValueError("calibration saw no batches: pass a loader or a list of input tensors")
    return seen


def pt2e_convert(prepared: nn.Module) -> nn.Module:
    """``convert_pt2e``: replace observers by quantize / dequantize nodes around int8 weights."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    set_mode(prepared, False)
    return convert_pt2e(prepared)


def count_quantize_nodes(graph: nn.Module) -> int:
    """How many quantize operations a PT2E graph holds (0 for a float model: it was not converted)."""
    nodes = getattr(getattr(graph, "graph", None), "nodes", [])
    return sum(1 for node in nodes if node.op == "call_function" and "quantize_per" in str(node.target) and "dequantize" not in str(node.target))


def static_quantize(
    model: nn.Module, example: torch.Tensor, calibration: Iterable[Any], max_batches: int | None = None, **quantizer: Any
) -> nn.Module:
    """Post-training static quantization in one call: prepare → calibrate → convert."""
    prepared = pt2e_prepare(model, example, xnnpack_quantizer(**quantizer) if quantizer else None)
    calibrate(prepared, calibration, max_batches=max_batches)
    return pt2e_convert(prepared)
