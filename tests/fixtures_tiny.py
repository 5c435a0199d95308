"""Tiny-model fixtures (a pytest plugin listed in tests/conftest.py): no store, no trained weights.

- ``tiny`` (session): a `TinyRun` of the tiny seeded CNN: the model, its images, layers,
  parameters, every crop as the method cuts them, and the circuit `build_circuit` makes of
  class 0 (built once, well under a second).  Treat it as read-only: tests that change a
  model or a parameter build their own from `tests.tiny_models`.
- ``tiny_resnet_run`` (session): the same for the tiny residual network.
- ``single_thread``: torch on one thread for the test, restored afterwards.  The tiny models'
  tensors are far too small to share out: on 2 busy cores a tiny circuit took 2 s with two
  threads and 0.3 s with one.  Unit test modules use it with
  `pytestmark = pytest.mark.usefixtures("single_thread")`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from neurflow.circuit import Circuit, Params
from neurflow.hooks import capture
from neurflow.images import ImageSet, crop_boxes, cut_crops
from neurflow.method import Budget, RunOptions, build_circuit
from tests.tiny_models import CNN_LAYERS, RESNET_LAYERS, TINY_PARAMS, tiny_cnn, tiny_images, tiny_resnet

CLASS = 0


@dataclass
class TinyRun:
    model: nn.Module
    images: ImageSet
    layers: list[str]
    params: Params
    circuit: Circuit

    @property
    def boxes(self):
        return crop_boxes(self.images.size, self.params.granularities)

    @property
    def crops(self) -> torch.Tensor:
        """Every crop, row = crop id (`image * boxes + box`), as the method numbers them."""
        return cut_crops(self.images.pixels, self.boxes)

    def means(self, name: str, crop_ids=None) -> torch.Tensor:
        """Spatial means of layer `name` on the crops (all of them, or those ids)."""
        x = self.crops if crop_ids is None else self.crops[list(crop_ids)]
        with torch.no_grad():
            return capture(self.model, x, [name])[name]


@contextmanager
def one_thread() -> Iterator[None]:
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@pytest.fixture
def single_thread() -> Iterator[None]:
    with one_thread():
        yield


def build(model: nn.Module, layers: list[str], images: ImageSet, class_index: int = CLASS,
          params: Params = TINY_PARAMS, budget: Budget = Budget(), on_phase=None) -> Circuit:
    return build_circuit(model, layers, images, class_index, params, budget=budget,
                         run=RunOptions(model_uid="tiny", progress=False, on_phase=on_phase))


@pytest.fixture(scope="session")
def tiny() -> TinyRun:
    model, images = tiny_cnn(), tiny_images()
    with one_thread():
        return TinyRun(model, images, CNN_LAYERS, TINY_PARAMS, build(model, CNN_LAYERS, images))


@pytest.fixture(scope="session")
def tiny_resnet_run() -> TinyRun:
    model, images = tiny_resnet(), tiny_images()
    with one_thread():
        return TinyRun(model, images, RESNET_LAYERS, TINY_PARAMS, build(model, RESNET_LAYERS, images))
