"""Tiny seeded models, images and parameters for the unit tests of `neurflow/` (no store, no weights).

In the manner of captum's `testing/helpers/basic_models.py`: small modules whose every weight
comes from a fixed seed, so a test can rebuild the same model as often as it likes (and change
one weight to get a known answer) without training anything.  A circuit on them builds in well
under a second on one CPU core.

- `tiny_cnn()`: the demo architecture (`FashionCNN`) with 4, 4, 8, 8 channels and 3 classes,
  BatchNorm statistics set away from the identity so folding BatchNorm has work to do.
- `tiny_resnet()`: a stem and two residual blocks with a functional skip connection inside each
  block (the block outputs are the analysed layers, as for a torchvision ResNet).
- `tiny_images()`: seeded random 1 x 16 x 16 images as an `ImageSet`.
- `TINY_PARAMS`: tau 3, k 6, 4 IG steps, granularities (1, 0.5): 10 crops per image.
"""

from __future__ import annotations

import torch
from torch import nn

from neurflow.circuit import Params
from neurflow.images import ImageSet
from neurflow.models.fashion_cnn import FashionCNN

SIZE = 16
NUM_CLASSES = 3
CNN_CHANNELS = (4, 4, 8, 8)
CNN_LAYERS = ["block4", "block3", "block2", "block1"]  # top to bottom
RESNET_LAYERS = ["block2", "block1", "stem"]
TINY_PARAMS = Params(tau=3, k=6, ig_steps=4, predicted_only=False, granularities=(1.0, 0.5))
CROPS_PER_IMAGE = 1 + 9  # granularity 1: one box; 0.5 at side 16: side 8, stride 4, 3 x 3 boxes


def settle(model: nn.Module, seed: int) -> nn.Module:
    """Seeded BatchNorm statistics away from (0, 1), eval mode, no parameter gradients."""
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(n, generator=gen) * 0.4 - 0.1)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def tiny_cnn(seed: int = 0) -> FashionCNN:
    """`FashionCNN(channels=(4, 4, 8, 8))`, 1 input channel, 3 classes, seeded weights."""
    torch.manual_seed(seed)
    return settle(FashionCNN(num_classes=NUM_CLASSES, in_channels=1, channels=CNN_CHANNELS), seed)


class Residual(nn.Module):
    """conv-BN-ReLU-conv-BN plus the input, then ReLU (the skip is plain tensor code)."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))) + x)


class TinyResNet(nn.Module):
    def __init__(self, c: int = 6, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.block1 = Residual(c)
        self.pool = nn.MaxPool2d(2)
        self.block2 = Residual(c)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.pool(self.block1(self.stem(x))))
        return self.fc(x.mean(dim=(2, 3)))


def tiny_resnet(seed: int = 0) -> TinyResNet:
    torch.manual_seed(seed)
    return settle(TinyResNet(), seed)


def tiny_images(n: int = 8, seed: int = 0, label: int = 0, channels: int = 1) -> ImageSet:
    """`n` seeded random `(channels, 16, 16)` images (positive and negative pixels, like normalised ones),
    all from the data source `tiny`: another seed is other content from the same source."""
    pixels = torch.randn(n, channels, SIZE, SIZE, generator=torch.Generator().manual_seed(100 + seed))
    return ImageSet(pixels, [f"tiny-{seed}-{i}" for i in range(n)], [label] * n, origin="tiny")
