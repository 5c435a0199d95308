"""Circuits of the real trained demo model, built once per test session and shared."""

import functools

import pytest

from neurflow.circuit import Params
from neurflow.method import build_circuit

# Small enough for all ten classes to build in the test budget on 2 cores, large enough to be real.
TEST_PARAMS = Params(tau=6, k=20, ig_steps=16, max_images=24)


@pytest.fixture(scope="session")
def class_images(trained_model):
    from neurflow.datasets import load_images

    @functools.lru_cache(maxsize=None)
    def load(class_index: int):
        return load_images("fashion-mnist", trained_model.spec, class_index=class_index, split="train", limit=64)

    return load


@pytest.fixture(scope="session")
def test_images(trained_model):
    from neurflow.datasets import load_images

    @functools.lru_cache(maxsize=None)
    def load(class_index: int):
        return load_images("fashion-mnist", trained_model.spec, class_index=class_index, split="test", limit=300).pixels

    return load


@pytest.fixture(scope="session")
def class_circuits(trained_model, class_images):
    """`{class index: Circuit}` for all ten demo classes."""
    return {
        c: build_circuit(trained_model.module, list(trained_model.spec.layers), class_images(c), c, TEST_PARAMS,
                         model_uid=trained_model.uid, class_name=trained_model.class_names[c], progress=False)
        for c in range(10)
    }
