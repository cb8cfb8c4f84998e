"""The course's small CNN in PyTorch.

Two 3×3 convolutions, one 2×2 max-pool, then two fully connected layers. At
the digits' native 8×8 input it has 51,946 parameters: big enough that
pruning and quantization have something to work on, small enough to train in
seconds on a laptop CPU.
"""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """conv(3×3, c1) → ReLU → conv(3×3, c2) → ReLU → maxpool(2) → fc(hidden) → ReLU → fc(classes).

    Args:
        in_channels: channels of the input image (1 for digits / MNIST).
        num_classes: number of output logits.
        image_size: height = width of the input; sets the flatten size.
        channels: output channels of the two convolutions.
        hidden: width of the hidden fully connected layer.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 8,
        channels: tuple[int, int] = (32, 64),
        hidden: int = 32,
    ) -> None:
        super().__init__()
        if image_size < 2 or image_size % 2:
            raise ValueError(f"image_size must be an even number ≥ 2 (the max-pool halves it), got {image_size}")
        self.in_channels = in_channels
        self.image_size = image_size
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        flat = c2 * (image_size // 2) ** 2
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expected = (self.in_channels, self.image_size, self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"SmallCNN expects input of shape (N, {', '.join(map(str, expected))}), got {tuple(x.shape)}. "
                "Images must be N × C × H × W; build the model with image_size / in_channels that match the data."
            )
        return self.classifier(self.features(x))


def small_cnn(num_classes: int = 10, image_size: int = 8, in_channels: int = 1, seed: int | None = 0) -> SmallCNN:
    """A freshly initialised :class:`SmallCNN`, seeded so that lectures start from the same weights."""
    if seed is not None:
        torch.manual_seed(seed)
    return SmallCNN(in_channels=in_channels, num_classes=num_classes, image_size=image_size)
