"""Shared fixtures. Store fixtures live in tests/fixtures_store.py, model/circuit ones in tests/fixtures_model.py."""

import os

pytest_plugins = ["tests.fixtures_model", "tests.fixtures_circuits", "tests.fixtures_store"]

os.environ.setdefault("NEURFLOW_CACHE", os.path.join(os.path.dirname(os.path.dirname(__file__)), ".cache", "neurflow"))
