"""Circuits of the real trained demo model, built once per test session through `neurflow ingest`.

The session ingests all ten demo classes into the embedded test store with the real CLI
(saving each circuit as Parquet on the way), so the method tests, the store tests and the app
tests all look at the same real circuits without building them twice.
"""

import functools
import os
import uuid

import pytest

from neurflow.circuit import Circuit, Params

# Small enough for all ten classes to build in the test budget on 2 cores, large enough to be real.
TEST_PARAMS = Params(tau=6, k=20, ig_steps=16, max_images=24)
TEST_ARGS = ["--tau", "6", "--k", "20", "--ig-steps", "16", "--max-images", "24", "--device", "cpu", "--quiet"]


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
def ingested_artifacts(tmp_path_factory):
    """The artifact folder (crop thumbnails) of the `ingested` store."""
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="session")
def ingested(trained_model, store_server, ingested_artifacts, tmp_path_factory):
    """`(store config, {class: Circuit})`: all ten classes ingested by `neurflow ingest`."""
    from ingest.store.embedded import create_database
    from cli.main import main as cli_main

    database = "demo_" + uuid.uuid4().hex[:8]
    create_database(store_server, database)
    saved = tmp_path_factory.mktemp("circuits")
    env = {"NEURFLOW_STORE_DATABASE": database, "NEURFLOW_ARTIFACT_DIR": str(ingested_artifacts)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        code = cli_main(["ingest", "--model", "fashion-cnn", "--data", "fashion-mnist", "--classes", "all",
                         "--save-circuits", str(saved), *TEST_ARGS])
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert code == 0
    circuits = {c: Circuit.load(saved / f"class-{c}") for c in range(10)}
    return store_server.with_database(database), circuits


@pytest.fixture(scope="session")
def class_circuits(ingested):
    """`{class index: Circuit}` for all ten demo classes."""
    return ingested[1]
