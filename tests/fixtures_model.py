"""Model fixtures (a pytest plugin registered by tests/conftest.py).

`trained_model` is the real demo model: the cached weights in `$NEURFLOW_CACHE` (the Makefile
and conftest point it at `.cache/neurflow` in the repository), trained there once when missing.
"""

from __future__ import annotations

from typing import Callable

import pytest

from neurflow.datasets import load_images
from neurflow.images import ImageSet
from neurflow.models.registry import LoadedModel, get_spec, load_model


@pytest.fixture(scope="session")
def trained_model() -> LoadedModel:
    """fashion-cnn with its trained weights (trains them first if they are not cached)."""
    return load_model("fashion-cnn", device="cpu", train_if_missing=True)


@pytest.fixture(scope="session")
def fashion_train_images() -> Callable[..., ImageSet]:
    """`fashion_train_images(class_index, limit=None, split="train")`: Fashion-MNIST images of one
    class preprocessed for fashion-cnn (no training needed), memoised per argument set (treat them as read-only)."""
    memo: dict[tuple, ImageSet] = {}

    def get(class_index: int, limit: int | None = None, split: str = "train") -> ImageSet:
        key = (int(class_index), limit, split)
        if key not in memo:
            memo[key] = load_images("fashion-mnist", get_spec("fashion-cnn"), class_index, split=split, limit=limit)
        return memo[key]

    return get
