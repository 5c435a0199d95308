"""A wider residual CNN for Fashion-MNIST (1 x 28 x 28, 10 classes): the selective demo model.

    stem    conv3x3(1->32, stride 2) + BN + ReLU              14x14
    block1  residual block (32->128, stride 2)                 7x7
    block2  residual block (128->128)                          7x7
    block3  residual block (128->128)                          7x7
    block4  residual block (128->128, stride 2)                4x4
    gap     global average pool -> 128
    fc      linear 128 -> 10

(the widths and strides are arguments; these are the defaults, the shipped weights' architecture).

A residual block is the basic ResNet block: conv3x3(stride) + BN + ReLU + conv3x3 + BN, plus a
shortcut (identity, or conv1x1(stride) + BN when the shape changes), then ReLU.  The analysed
layers are the block outputs (`block4` ... `block1`): each is a function of the block below's
output alone, as the method's layer-by-layer attribution needs.  Why wider than `FashionCNN`:
NeurFlow's critical set of a layer is the union of the top-`tau` core sets of the critical
neurons above, so in a 32- or 64-channel layer it covers nearly the whole layer and every class
shares every neuron; wide layers leave room for class-specific circuits.  The forward pass is
plain tensor code, so it is `torch.fx` traceable.
"""

from __future__ import annotations

import torch
from torch import nn

from pathlib import Path

from neurflow.models.fashion_cnn import FASHION_MEAN, FASHION_STD  # noqa: F401  (same preprocessing)

CHANNELS = (32, 128, 128, 128, 128)  # stem, block1 .. block4
STRIDES = (2, 1, 1, 2)  # block1 .. block4
STEM_STRIDE = 2
LAYERS = ("block4", "block3", "block2", "block1")  # analysed, top to bottom

# The weights ship with the code (trained on 2 CPU cores in ~7 min, too slow for every test run).
WEIGHTS_FILE = Path(__file__).resolve().parent.parent / "data" / "fashion-resnet.pt"
WEIGHTS_SHA256 = "37a09d8e1580e9d5feae14bf7446290f2357f03e9c3b087da59a066f44bc79b4"
REPRODUCE = "python bench/train_fashion_resnet.py --out neurflow/data/fashion-resnet.pt"


class ResBlock(nn.Module):
    """Basic residual block: conv-BN-ReLU-conv-BN + shortcut, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(y + self.shortcut(x))


class FashionResNet(nn.Module):
    def __init__(
        self, num_classes: int = 10, in_channels: int = 1,
        channels: tuple[int, ...] = CHANNELS, strides: tuple[int, ...] = STRIDES, stem_stride: int = STEM_STRIDE,
    ) -> None:
        super().__init__()
        c0, c1, c2, c3, c4 = channels
        s1, s2, s3, s4 = strides
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c0, 3, stride=stem_stride, padding=1, bias=False), nn.BatchNorm2d(c0), nn.ReLU(inplace=False)
        )
        self.block1 = ResBlock(c0, c1, s1)
        self.block2 = ResBlock(c1, c2, s2)
        self.block3 = ResBlock(c2, c3, s3)
        self.block4 = ResBlock(c3, c4, s4)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.block4(self.block3(self.block2(self.block1(x))))
        x = torch.flatten(self.gap(x), 1)
        return self.fc(x)
