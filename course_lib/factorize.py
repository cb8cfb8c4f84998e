"""Low-rank factorization: replace one big layer by two thin ones.

A Linear layer's ``out × in`` weight ``W`` is approximated by its truncated
SVD, ``W ≈ U_r diag(s_r) V_rᵀ`` (the best rank-``r`` approximation in the
Frobenius norm, Eckart–Young). Splitting ``diag(s_r)`` as ``√s · √s`` gives
two layers, ``Linear(in → r)`` with weight ``√s_r V_rᵀ`` and
``Linear(r → out)`` with weight ``U_r √s_r`` (and the original bias), so
``r·(in + out)`` weights replace ``in·out``: fewer only when
``r < in·out / (in + out)``.

A convolution's ``c_out × c_in × k × k`` kernel, unfolded to
``c_out × (c_in·k²)``, is factorized the same way: ``conv(k×k, c_in → r)``
then ``conv(1×1, r → c_out)`` (exact at full rank ``min(c_out, c_in·k²)``).
Tucker-2 (1×1 → k×k → 1×1, :func:`tucker2_conv`, by truncated HOSVD)
compresses the input channels too.

Fewer MACs are not automatically less time: two calls instead of one cost
launch overhead and memory traffic, which dominate small layers. The
lecture measures where it pays.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


def _pair(value: int | tuple[int, ...] | str) -> tuple[int, int]:
    """A Conv2d's stride / padding / dilation as two numbers (the layer already validated them)."""
    if isinstance(value, int):
        return value, value
    if isinstance(value, str) or len(value) != 2:
        raise ValueError(f"expected two numbers for a 2-D convolution, got {value!r}")
    return int(value[0]), int(value[1])


def _check_plain_conv(layer: nn.Module, caller: str) -> None:
    """Refuse what the factorizations cannot express: not a Conv2d, grouped, or non-zero / string padding."""
    if not isinstance(layer, nn.Conv2d):
        raise TypeError(f"{caller} expects an nn.Conv2d, got {type(layer).__name__}")
    if layer.groups != 1:
        raise ValueError(f"grouped convolutions (groups={layer.groups}) cannot be factorized this way")
    if not isinstance(layer.padding, tuple) or layer.padding_mode != "zeros":
        raise ValueError("only zero padding given as numbers is supported (not padding='same' strings or other modes)")


def _check_rank(rank: int, full_rank: int) -> None:
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 1 <= rank <= full_rank:
        raise ValueError(f"rank must be an integer between 1 and {full_rank} (the full rank), got {rank!r}")


def _check_matrix(weight: torch.Tensor) -> torch.Tensor:
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"weight must be a 2-D tensor (out × in), got {shape}")
    return weight.detach().to(torch.float64)


def singular_values(weight: torch.Tensor) -> torch.Tensor:
    """Singular values of a 2-D weight (or a conv kernel, unfolded to ``c_out × c_in·k²``), largest first."""
    if isinstance(weight, torch.Tensor) and weight.dim() == 4:
        weight = weight.flatten(1)
    return torch.linalg.svdvals(_check_matrix(weight)).to(torch.float32)


def svd_factors(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(first, second)`` with ``second @ first`` the best rank-``rank`` approximation of ``weight``.

    ``first`` is ``rank × in`` (= √s V_rᵀ), ``second`` is ``out × rank`` (= U_r √s): the
    singular values are shared equally so that neither factor's scale dominates fine-tuning.
    Computed in float64, returned in ``weight``'s dtype.
    """
    matrix = _check_matrix(weight)
    _check_rank(rank, min(matrix.shape))
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    root = s[:rank].sqrt()
    first = root[:, None] * vh[:rank]
    second = u[:, :rank] * root[None, :]
    return first.to(weight.dtype), second.to(weight.dtype)


def relative_error(weight: torch.Tensor, rank: int) -> float:
    """``‖W - W_r‖_F / ‖W‖_F`` of the rank-``rank`` SVD approximation, from the dropped singular values."""
    s = singular_values(weight).to(torch.float64)
    _check_rank(rank, len(s))
    total = float((s**2).sum())
    return float(np.sqrt(float((s[rank:] ** 2).sum()) / total)) if total > 0 else 0.0


def energy_rank(singular_values: Sequence[float] | np.ndarray | torch.Tensor, energy: float) -> int:
    """The smallest rank ``r ≥ 1`` whose singular values hold at least ``energy`` of ``Σ s²``.

    ``energy`` is a fraction in [0, 1]: 0.9 keeps 90 % of the squared
    Frobenius norm. ``energy = 1`` returns the number of non-zero singular values.
    """
    if isinstance(energy, bool) or not isinstance(energy, (int, float)) or not 0.0 <= energy <= 1.0:
        raise ValueError(f"energy must be a fraction in [0, 1], got {energy!r}")
    values = np.asarray(singular_values.detach().cpu() if isinstance(singular_values, torch.Tensor) else singular_values,
                        dtype=np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"singular_values must be a non-empty 1-D sequence, got shape {values.shape}")
    if np.any(values < 0) or np.any(np.diff(values) > 0):
        raise ValueError("singular_values must be non-negative and sorted largest first (as torch.linalg.svdvals returns them)")
    cumulative = np.cumsum(values**2)
    if cumulative[-1] == 0:
        raise ValueError("all singular values are zero: the matrix has rank 0")
    return max(1, int(np.searchsorted(cumulative, energy * cumulative[-1], side="left")) + 1)


def whitening(inputs: torch.Tensor, damping: float = 0.01) -> torch.Tensor:
    """Lower-triangular ``L`` with ``L Lᵀ`` = the inputs' second-moment matrix ``XᵀX / N`` (+ damping).

    The output error of an approximation ``W'`` on inputs ``X`` is
    ``‖(W − W') Xᵀ‖`` = ``√N ‖(W − W') L‖_F``: in the coordinates of ``L`` it
    is a plain Frobenius norm, which the truncated SVD minimizes. ``damping``
    × the mean diagonal is added so that ``L`` is invertible when some
    features never vary (dead ReLU channels) or ``N`` < the feature count.
    """
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 2 or inputs.shape[0] < 1:
        shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise ValueError(f"inputs must be a 2-D tensor N × in_features (N ≥ 1), got {shape}")
    if not 0.0 < damping <= 1.0:
        raise ValueError(f"damping must be a fraction in (0, 1], got {damping!r}")
    x = inputs.detach().to(torch.float64)
    if not torch.isfinite(x).all() or float(x.abs().max()) == 0.0:
        raise ValueError("inputs must be finite and not all zero")
    second_moment = x.T @ x / len(x)
    second_moment += damping * float(second_moment.diagonal().mean()) * torch.eye(len(second_moment), dtype=torch.float64)
    return torch.linalg.cholesky(second_moment)


def factorize_linear(layer: nn.Linear, rank: int, inputs: torch.Tensor | None = None, damping: float = 0.01) -> nn.Sequential:
    """``Linear(in → out)`` → ``Sequential(Linear(in → rank, no bias), Linear(rank → out, bias))``.

    With ``inputs`` (``N × in``, the layer's inputs on calibration data) the
    factorization is **data-aware**: the truncated SVD of ``W L`` (``L`` from
    :func:`whitening`), mapped back with ``L⁻¹``, is the rank-``rank``
    approximation with the smallest *output* error on those inputs — the
    idea of SVD-LLM (Wang et al. 2024, arXiv:2403.07378) — instead of the
    smallest *weight* error. Same shapes and cost; only the values differ.
    """
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"factorize_linear expects an nn.Linear, got {type(layer).__name__}")
    if inputs is None:
        first, second = svd_factors(layer.weight, rank)
    else:
        if not isinstance(inputs, torch.Tensor) or inputs.dim() != 2 or inputs.shape[1] != layer.in_features:
            shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
            raise ValueError(f"inputs must be N × {layer.in_features} (the layer's inputs), got {shape}")
        root = whitening(inputs, damping)
        first, second = svd_factors(layer.weight.detach().to(torch.float64) @ root, rank)
        first = torch.linalg.solve_triangular(root, first, upper=False, left=False)  # first · L⁻¹
        first, second = first.to(layer.weight.dtype), second.to(layer.weight.dtype)
    down = nn.Linear(layer.in_features, rank, bias=False)
    up = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
    with torch.no_grad():
        down.weight.copy_(first)
        up.weight.copy_(second)
        if layer.bias is not None:
            up.bias.copy_(layer.bias)
    return nn.Sequential(down, up)


def factorize_conv(layer: nn.Conv2d, rank: int) -> nn.Sequential:
    """``Conv2d(c_in → c_out, k×k)`` → ``Sequential(Conv2d(c_in → rank, k×k), Conv2d(rank → c_out, 1×1))``.

    The first convolution keeps the original stride, padding and dilation, so
    the output has the same shape. Grouped (e.g. depthwise) convolutions are
    refused: their kernels are already thin.
    """
    _check_plain_conv(layer, "factorize_conv")
    c_out, c_in, kh, kw = layer.weight.shape
    first, second = svd_factors(layer.weight.flatten(1), rank)
    stride, padding, dilation = (_pair(v) for v in (layer.stride, layer.padding, layer.dilation))
    spatial = nn.Conv2d(c_in, rank, (kh, kw), stride=stride, padding=padding, dilation=dilation, bias=False)
    pointwise = nn.Conv2d(rank, c_out, 1, bias=layer.bias is not None)
    with torch.no_grad():
        spatial.weight.copy_(first.reshape(rank, c_in, kh, kw))
        pointwise.weight.copy_(second.reshape(c_out, rank, 1, 1))
        if layer.bias is not None and pointwise.bias is not None:
            pointwise.bias.copy_(layer.bias)
    return nn.Sequential(spatial, pointwise)


def tucker2_conv(layer: nn.Conv2d, rank_in: int, rank_out: int) -> nn.Sequential:
    """``Conv2d(c_in → c_out, k×k)`` → ``1×1 (c_in → rank_in)``, ``k×k (rank_in → rank_out)``, ``1×1 (rank_out → c_out)``.

    Tucker-2 by truncated higher-order SVD (Kim et al. 2016): the leading
    left singular vectors of the kernel unfolded along its output channels
    (``U_out``) and along its input channels (``U_in``) become the two 1×1
    convolutions, and the kernel projected onto them is the small ``k×k``
    core. Unlike the SVD form it shrinks the input side as well; it is exact
    when ``rank_in = c_in`` and ``rank_out = c_out``. (Truncated HOSVD is a
    good, not the optimal, Tucker approximation; libraries such as TensorLy
    refine it iteratively.)
    """
    _check_plain_conv(layer, "tucker2_conv")
    c_out, c_in, kh, kw = layer.weight.shape
    _check_rank(rank_in, c_in)
    _check_rank(rank_out, c_out)
    kernel = layer.weight.detach().to(torch.float64)
    u_out = torch.linalg.svd(kernel.reshape(c_out, -1), full_matrices=False)[0][:, :rank_out]
    u_in = torch.linalg.svd(kernel.transpose(0, 1).reshape(c_in, -1), full_matrices=False)[0][:, :rank_in]
    core = torch.einsum("oikl,or,is->rskl", kernel, u_out, u_in)
    stride, padding, dilation = (_pair(v) for v in (layer.stride, layer.padding, layer.dilation))
    reduce = nn.Conv2d(c_in, rank_in, 1, bias=False)
    spatial = nn.Conv2d(rank_in, rank_out, (kh, kw), stride=stride, padding=padding, dilation=dilation, bias=False)
    expand = nn.Conv2d(rank_out, c_out, 1, bias=layer.bias is not None)
    dtype = layer.weight.dtype
    with torch.no_grad():
        reduce.weight.copy_(u_in.T.reshape(rank_in, c_in, 1, 1).to(dtype))
        spatial.weight.copy_(core.to(dtype))
        expand.weight.copy_(u_out.reshape(c_out, rank_out, 1, 1).to(dtype))
        if layer.bias is not None and expand.bias is not None:
            expand.bias.copy_(layer.bias)
    return nn.Sequential(reduce, spatial, expand)


def tucker2_params(c_in: int, c_out: int, kernel_size: int, rank_in: int, rank_out: int, bias: bool = True) -> int:
    """Weights of :func:`tucker2_conv`'s three convolutions: ``c_in·r_in + r_in·r_out·k² + r_out·c_out`` (+ bias)."""
    return c_in * rank_in + rank_in * rank_out * kernel_size**2 + rank_out * c_out + (c_out if bias else 0)


def full_rank(layer: nn.Module) -> int:
    """The largest useful rank of a Linear or Conv2d layer: ``min(out, in)`` or ``min(c_out, c_in·k²)``."""
    if isinstance(layer, (nn.Linear, nn.Conv2d)):
        return min(layer.weight.shape[0], layer.weight[0].numel())
    raise TypeError(f"expected nn.Linear or nn.Conv2d, got {type(layer).__name__}")


# --- formulas --------------------------------------------------------------------------------


def linear_params(in_features: int, out_features: int, rank: int | None = None, bias: bool = True) -> int:
    """Parameters of a Linear layer (``rank=None``) or of its rank-``rank`` factorization: ``r·(in + out)`` (+ bias)."""
    weights = in_features * out_features if rank is None else rank * (in_features + out_features)
    return weights + (out_features if bias else 0)


def linear_macs(in_features: int, out_features: int, rank: int | None = None, batch: int = 1) -> int:
    """Multiply-accumulates for ``batch`` inputs: ``in·out`` per input, or ``r·(in + out)`` factorized."""
    return batch * (in_features * out_features if rank is None else rank * (in_features + out_features))


def conv_params(c_in: int, c_out: int, kernel_size: int, rank: int | None = None, bias: bool = True) -> int:
    """Parameters of a k×k Conv2d, or of conv(k×k, c_in → r) + conv(1×1, r → c_out): ``r·(c_in·k² + c_out)``."""
    k2 = kernel_size * kernel_size
    weights = c_out * c_in * k2 if rank is None else rank * (c_in * k2 + c_out)
    return weights + (c_out if bias else 0)


def conv_macs(c_in: int, c_out: int, kernel_size: int, h_out: int, w_out: int, rank: int | None = None) -> int:
    """MACs of one image: ``H·W·c_out·c_in·k²``, or ``H·W·r·(c_in·k² + c_out)`` factorized."""
    k2 = kernel_size * kernel_size
    return h_out * w_out * (c_out * c_in * k2 if rank is None else rank * (c_in * k2 + c_out))


def breakeven_rank(rows: int, cols: int) -> float:
    """The rank at which a factorized ``rows × cols`` matrix has as many weights as the original: ``rows·cols / (rows + cols)``."""
    return rows * cols / (rows + cols)


# --- models ----------------------------------------------------------------------------------


def replace_module(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put ``new`` where the submodule called ``name`` (as in ``named_modules()``) was; returns ``model``."""
    modules = dict(model.named_modules())
    if not name or name not in modules:
        raise ValueError(f"no submodule named {name!r}; available: {[n for n in modules if n]}")
    parent_name, _, child = name.rpartition(".")
    setattr(modules[parent_name] if parent_name else model, child, new)
    return model


def factorize_model(model: nn.Module, ranks: dict[str, int]) -> nn.Module:
    """A copy of ``model`` with each named Linear / Conv2d layer replaced by its rank-``r`` factorization."""
    result = copy.deepcopy(model)
    modules = dict(result.named_modules())
    for name, rank in ranks.items():
        layer = modules.get(name)
        if isinstance(layer, nn.Linear):
            replace_module(result, name, factorize_linear(layer, rank))
        elif isinstance(layer, nn.Conv2d):
            replace_module(result, name, factorize_conv(layer, rank))
        else:
            kind = "missing" if layer is None else type(layer).__name__
            raise ValueError(f"layer {name!r} is {kind}; only nn.Linear and nn.Conv2d layers can be factorized")
    return result
