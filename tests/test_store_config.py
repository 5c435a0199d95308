"""Where the store is and how to log in (ingest/store/config.py), from plain environment mappings."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.store import config
from ingest.store.errors import StoreError


def test_embedded_unless_a_uri_is_set():
    assert config.uses_embedded({}) and config.uses_embedded({"NEURFLOW_STORE_URI": ""})
    assert not config.uses_embedded({"NEURFLOW_STORE_URI": "bolt://db:7687"})


def test_external_config_reads_every_variable_and_hides_passwords():
    cfg = config.external_config({
        "NEURFLOW_STORE_URI": "neo4j://db:7687", "NEURFLOW_STORE_USER": "w", "NEURFLOW_STORE_PASSWORD": "secret-w",
        "NEURFLOW_STORE_DATABASE": "g", "NEURFLOW_STORE_READONLY_USER": "r", "NEURFLOW_STORE_READONLY_PASSWORD": "secret-r",
    })  # fmt: skip
    assert (cfg.uri, cfg.user, cfg.database, cfg.embedded) == ("neo4j://db:7687", "w", "g", False)
    assert cfg.auth == ("w", "secret-w") and cfg.readonly_auth == ("r", "secret-r")
    assert "secret" not in repr(cfg)
    assert cfg.with_database("other").database == "other" and cfg.database == "g"


def test_external_defaults_and_read_only_falls_back_to_the_writer():
    cfg = config.external_config({"NEURFLOW_STORE_URI": "bolt://db", "NEURFLOW_STORE_DATABASE": ""})
    assert cfg.user == "neo4j" and cfg.database is None and cfg.readonly_user is None
    assert cfg.readonly_auth == cfg.auth == ("neo4j", "")


def test_store_dir_from_the_environment(tmp_path):
    assert config.store_dir({"NEURFLOW_STORE_DIR": str(tmp_path / "s")}) == (tmp_path / "s").resolve()
    assert config.store_dir({"XDG_DATA_HOME": str(tmp_path)}) == (tmp_path / "neurflow" / "store").resolve()


def test_embedded_ports_default_or_checked():
    assert config.embedded_ports({}) == (config.DEFAULT_BOLT_PORT, config.DEFAULT_HTTP_PORT)
    assert config.embedded_ports({"NEURFLOW_STORE_BOLT_PORT": "9000", "NEURFLOW_STORE_HTTP_PORT": "9001"}) == (9000, 9001)
    with pytest.raises(StoreError, match=r"NEURFLOW_STORE_BOLT_PORT='x' is not a port number; set it to an integer such as 7697"):
        config.embedded_ports({"NEURFLOW_STORE_BOLT_PORT": "x"})
    with pytest.raises(StoreError, match=r"NEURFLOW_STORE_HTTP_PORT=70000 is out of range"):
        config.embedded_ports({"NEURFLOW_STORE_HTTP_PORT": "70000"})


def test_artifact_dir_order(monkeypatch, tmp_path):
    monkeypatch.setenv("NEURFLOW_ARTIFACT_DIR", str(tmp_path / "a"))
    assert config.artifact_dir() == tmp_path / "a"
    monkeypatch.delenv("NEURFLOW_ARTIFACT_DIR")
    embedded = config.StoreConfig("bolt://127.0.0.1:1", "root", embedded=True, data_dir=str(tmp_path / "store"))
    assert config.artifact_dir(embedded) == tmp_path / "store" / "artifacts"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "x"))
    assert config.artifact_dir(config.StoreConfig("bolt://db", "w")) == Path(tmp_path / "x" / "neurflow" / "artifacts")
