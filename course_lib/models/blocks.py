"""Efficient building blocks and a small scalable network family (lecture 01).

* :func:`standard_conv` - 3×3 convolution + BatchNorm + ReLU, the baseline;
* :class:`DepthwiseSeparable` - MobileNet v1's block: a 3×3 *depthwise* convolution
  (one filter per channel, ``groups = channels``) then a 1×1 *pointwise* convolution;
* :class:`InvertedResidual` - MobileNetV2's bottleneck: 1×1 expand, 3×3 depthwise,
  1×1 project, with a skip connection when shapes allow;
* :class:`TinyNet` - stem + two stages of one block type, global pooling, classifier;
  a width multiplier scales every channel count, the input resolution is a free knob.

The formulas :func:`conv2d_params` and :func:`conv2d_macs` are what lecture 01 checks
against :mod:`course_lib.measure` on real layers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def conv2d_params(c_in: int, c_out: int, kernel_size: int, groups: int = 1, bias: bool = True) -> int:
    """Parameters of a square-kernel ``nn.Conv2d``: ``c_out · (c_in / groups) · k² (+ c_out biases)``."""
    if c_in % groups or c_out % groups:
        raise ValueError(f"groups={groups} must divide c_in={c_in} and c_out={c_out}")
    return c_out * (c_in // groups) * kernel_size * kernel_size + (c_out if bias else 0)


def conv2d_macs(c_in: int, c_out: int, kernel_size: int, h_out: int, w_out: int, groups: int = 1) -> int:
    """Multiply-accumulates of one square-kernel convolution on one image: ``H·W·c_out·(c_in/groups)·k²``."""
    if c_in % groups or c_out % groups:
        raise ValueError(f"groups={groups} must divide c_in={c_in} and c_out={c_out}")
    return h_out * w_out * c_out * (c_in // groups) * kernel_size * kernel_size


def make_divisible(value: float, divisor: int = 4) -> int:
    """Round a scaled channel count to a multiple of ``divisor`` (at least ``divisor``), as MobileNets do."""
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


def standard_conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3×3 convolution + BatchNorm + ReLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class DepthwiseSeparable(nn.Sequential):
    """3×3 depthwise conv + BN + ReLU, then 1×1 pointwise conv + BN + ReLU (MobileNet v1).

    Replaces a standard 3×3 convolution's ``9·c_in·c_out`` weights by ``9·c_in + c_in·c_out``.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False),
            nn.BatchNorm2d(c_in),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


class InvertedResidual(nn.Module):
    """1×1 expand (×``expansion``) → 3×3 depthwise → 1×1 linear projection, plus a skip when shapes match."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, expansion: int = 4) -> None:
        super().__init__()
        hidden = c_in * expansion
        self.use_skip = stride == 1 and c_in == c_out
        self.block = nn.Sequential(
            nn.Conv2d(c_in, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),  # no activation: the projection is linear (MobileNetV2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_skip else out


BLOCKS: dict[str, Callable[[int, int, int], nn.Module]] = {"standard": standard_conv, "separable": DepthwiseSeparable, "inverted": InvertedResidual}


class TinyNet(nn.Module):
    """stem 3×3 conv → stage(2 blocks, stride 2) → stage(2 blocks, stride 2) → global avg pool → linear.

    Args:
        block: 'standard', 'separable' or 'inverted'.
        width: multiplies every channel count (base 16 / 32 / 64).
        in_channels, num_classes: of the data.
    Global average pooling makes the network accept any input resolution ≥ 4.
    """

    def __init__(self, block: str = "separable", width: float = 1.0, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {block!r}")
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        self.in_channels = in_channels
        c0, c1, c2 = (make_divisible(c * width) for c in (16, 32, 64))
        make = BLOCKS[block]
        self.features = nn.Sequential(
            standard_conv(in_channels, c0),
            make(c0, c1, 2), make(c1, c1, 1),
            make(c1, c2, 2), make(c2, c2, 1),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels or min(x.shape[2:]) < 4:
            raise ValueError(f"TinyNet expects N × {self.in_channels} × H × W with H, W ≥ 4, got {tuple(x.shape)}")
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))
