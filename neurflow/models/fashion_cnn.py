"""The demo model: a small CNN for Fashion-MNIST (1 x 28 x 28, 10 classes).

    block1  conv3x3(1->32)  + BN + ReLU    28x28
    block2  conv3x3(32->32) + BN + ReLU    28x28, then pool2 (max 2) -> 14x14
    block3  conv3x3(32->64) + BN + ReLU    14x14
    block4  conv3x3(64->64) + BN + ReLU    14x14, then pool4 (max 2) -> 7x7
    gap     global average pool -> 64
    fc      linear 64 -> 10

The analysed layers are the block outputs (`block4`, `block3`, `block2`, `block1`).  Each block
output is a function of the block below's output alone (the pools are separate modules that
sit between blocks), which is what the method's layer-by-layer attribution needs.  The forward
pass is plain tensor code, so it is `torch.fx` traceable.
"""

from __future__ import annotations

import torch
from torch import nn

CHANNELS = (32, 32, 64, 64)
FASHION_MEAN = (0.2860,)
FASHION_STD = (0.3530,)


class ConvBlock(nn.Sequential):
    """Conv3x3 (padding 1, no bias) + BatchNorm + ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=False),
        )


class FashionCNN(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, channels: tuple[int, ...] = CHANNELS) -> None:
        super().__init__()
        c1, c2, c3, c4 = channels
        self.block1 = ConvBlock(in_channels, c1)
        self.block2 = ConvBlock(c1, c2)
        self.pool2 = nn.MaxPool2d(2)
        self.block3 = ConvBlock(c2, c3)
        self.block4 = ConvBlock(c3, c4)
        self.pool4 = nn.MaxPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block1(x)
        x = self.pool2(self.block2(x))
        x = self.block3(x)
        x = self.pool4(self.block4(x))
        x = torch.flatten(self.gap(x), 1)
        return self.fc(x)
