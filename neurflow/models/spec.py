"""What every model loader hands back: the model's `ModelSpec` (what the method and the data
readers need to know of it) and, with its module, weights file, weights hash and uid, `Loaded`.
A module of its own so that the registry and the loaders of `neurflow.models.loaders` share
them without importing each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    name: str  # registry name
    arch: str  # what builds it: 'neurflow.FashionCNN', 'torchvision.resnet50', ...
    layers: tuple[str, ...]  # default analysed module names, top to bottom (no logits pseudo-layer)
    input_size: int
    in_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    default_data: str | None  # 'fashion-mnist' for fashion-cnn, None for ImageNet models
    # class names in class-index order ((): none known) and their ids (ImageNet synset ids, or ())
    class_names: tuple[str, ...] = field(default=(), repr=False)
    class_ids: tuple[str, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class Loaded:
    """One loader's result, before the class names and the device are settled (`load_model`)."""

    spec: ModelSpec
    module: nn.Module  # on the CPU
    path: Path | None  # the weights file read; None: random or a factory's own weights
    sha256: str | None  # `sources.state_hash` of the module's weights; None: random
    uid: str
