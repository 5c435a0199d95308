"""Shared fixtures. Store fixtures live in tests/fixtures_store.py, model/circuit ones in tests/fixtures_model.py,
the tiny seeded models of the unit tests in tests/fixtures_tiny.py (models in tests/tiny_models.py)."""

import os

pytest_plugins = ["tests.fixtures_model", "tests.fixtures_circuits", "tests.fixtures_store", "tests.fixtures_tiny", "tests.fixtures_cypher"]

os.environ.setdefault("NEURFLOW_CACHE", os.path.join(os.path.dirname(os.path.dirname(__file__)), ".cache", "neurflow"))
