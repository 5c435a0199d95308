"""Driver errors mapped to one-line store errors that name the fix (ingest/store/errors.py), on
plain values: driver exceptions built by hand, no server."""

from __future__ import annotations

import pytest
from neo4j import exceptions as nx

from ingest.store import errors
from ingest.store.config import StoreConfig

EXTERNAL = StoreConfig("bolt://db:7687", "writer", "pw", database="graph", readonly_user="reader")
EMBEDDED = StoreConfig("bolt://127.0.0.1:7697", "root", "pw", embedded=True)


def _server(code: str, message: str) -> Exception:
    return nx.Neo4jError._hydrate_neo4j(code=code, message=message)


@pytest.mark.parametrize("exc, cfg, kind, words", [
    (nx.AuthError("no"), EXTERNAL, errors.StoreAuthError, "refused the login of user 'writer': check NEURFLOW_STORE_USER"),
    (_server("Neo.ClientError.Security.Unauthorized", "no"), EMBEDDED, errors.StoreAuthError, "password files were changed"),
    (_server("Neo.ClientError.Database.DatabaseNotFound", "x"), EXTERNAL, errors.StoreDatabaseNotFound,
     "database 'graph' does not exist on bolt://db:7687; set NEURFLOW_STORE_DATABASE"),
    (nx.ServiceUnavailable("down"), EXTERNAL, errors.StoreUnavailable, "names its Bolt port"),
    (ConnectionRefusedError(111, "refused"), EMBEDDED, errors.StoreUnavailable, "start it with `neurflow store start`"),
    (nx.ConfigurationError("bad scheme"), EXTERNAL, errors.StoreError, "bad store configuration for bolt://db:7687: bad scheme"),
    (_server("Neo.ClientError.Statement.SyntaxError", "Invalid input 'x'\n  ^"), EXTERNAL, errors.StoreQueryError,
     "the store refused the query: Invalid input 'x'"),
    (ValueError("odd"), EXTERNAL, errors.StoreError, "store error at bolt://db:7687 (database graph): odd"),
])  # fmt: skip
def test_each_driver_error_becomes_one_line_that_names_the_fix(exc, cfg, kind, words):
    got = errors.translate_error(exc, cfg)
    assert type(got) is kind and words in str(got) and "\n" not in str(got)


def test_a_refused_read_only_login_names_the_read_only_account():
    got = errors.translate_error(nx.AuthError("no"), EXTERNAL, readonly=True)
    assert "user 'reader'" in str(got) and "NEURFLOW_STORE_READONLY_USER" in str(got)
    # without a read-only account the read-only driver logs in as the writer
    got = errors.translate_error(nx.AuthError("no"), StoreConfig("bolt://db:7687", "writer"), readonly=True)
    assert "user 'writer'" in str(got) and "NEURFLOW_STORE_USER" in str(got)


def test_a_store_error_passes_through_and_long_server_messages_are_cut():
    same = errors.PortInUse("port 7697 is taken")
    assert errors.translate_error(same, EXTERNAL) is same
    got = errors.translate_error(_server("Neo.ClientError.Statement.SyntaxError", "y" * 1000), EXTERNAL)
    assert len(str(got)) < len("the store refused the query: ") + errors.SERVER_MESSAGE_LIMIT + 5
