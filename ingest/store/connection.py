"""Connections to the store: one `neo4j` driver, errors mapped to typed one-line `StoreError`s.

    with open_store() as store:            # ingest.store.connect: from the environment (embedded by default)
        rows = store.run("MATCH (c:Circuit) RETURN c.uid AS uid")
"""

from __future__ import annotations

import os
import socket
from typing import Any, Mapping
from urllib.parse import urlsplit

import neo4j
from neo4j import GraphDatabase
from neo4j import exceptions as nx

from ingest.queries import jobs as job_queries
from ingest.store.config import StoreConfig, external_config, uses_embedded
from ingest.store.embedded import embedded_config, ensure_embedded_server
from ingest.store.errors import (  # noqa: F401 - re-exported
    StoreError,
    StoreUnavailable,
    one_line,
    translate_error,
    unreachable_fix,
)
from ingest.store.runner import Runner

BOLT_SCHEMES = ("bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc")


HANDSHAKE_SECONDS = 3.0
RETRY_SECONDS = 10.0
"""The driver's `max_transaction_retry_time`: how long a transaction is retried against a server
that went away.  The driver checks it before each pause and its pauses double (1, 2, 4, 8 s,
+-20 %), so a server that stays gone ends the transaction 12 to 18 s after the first failure;
callers then stop (`ingest.store.runner.is_store_unreachable`).  At 15 s the last pause could be 16 s
(31 s in all)."""


def probe_not_http(cfg: StoreConfig, timeout: float = HANDSHAKE_SECONDS) -> None:
    """Fail fast, naming what answers, when the Bolt URI points at an HTTP server (Neo4j's 7474,
    ArcadeDB's 2480, any web server): the driver would wait for its handshake for a minute.

    Sends the Bolt handshake; only when nothing answers within `timeout` is a plain HTTP request
    sent on a second connection, and only an HTTP answer fails here.  Everything else (refused,
    a slow Bolt server, TLS schemes) is left to the driver and its own errors."""
    scheme = cfg.uri.split("://", 1)[0].lower()
    if scheme not in ("bolt", "neo4j"):  # TLS: the handshake runs inside TLS
        return
    try:
        parts = urlsplit(cfg.uri)
        host, port = parts.hostname or "localhost", parts.port or 7687
    except ValueError:
        return  # a malformed URI: the driver says what is wrong
    bolt_hello = bytes.fromhex("6060B017") + bytes([0, 8, 8, 5, 0, 0, 4, 4, 0, 0, 3, 4, 0, 0, 0, 3])
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(bolt_hello)
            try:
                first = s.recv(4)
            except socket.timeout:
                first = None
    except OSError:
        return  # refused / unreachable: the driver reports it, fast
    if first and not first.startswith(b"HTTP"):
        return  # a Bolt answer
    status = first.decode("latin-1") if first else ""
    if first is None:  # silence: is it an HTTP server waiting for a request line?
        try:
            with socket.create_connection((host, port), timeout=timeout) as s:
                s.sendall(f"HEAD / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
                status = s.recv(200).decode("latin-1")
        except OSError:
            return
    if not status.startswith("HTTP"):
        return
    found = one_line(status.splitlines()[0] if status.splitlines() else status, 80)
    if cfg.embedded:
        fix = "another program answers on the embedded store's port; run `neurflow store stop`, then `neurflow store start`"
    else:
        fix = ("set NEURFLOW_STORE_URI to the server's Bolt URI (like bolt://host:7687; Neo4j's HTTP port 7474 is not it), "
               "or unset it to use the embedded store")
    raise StoreUnavailable(f"{cfg.uri} is an HTTP server (it answered {found!r}), not a Bolt server: {fix}")


def open_driver(cfg: StoreConfig, *, readonly: bool = False, verify: bool = True) -> neo4j.Driver:
    """A driver for `cfg` (the read-only account when `readonly`), verified against the database."""
    auth = cfg.readonly_auth if readonly else cfg.auth
    scheme = cfg.uri.split("://", 1)[0].lower() if "://" in cfg.uri else ""
    if scheme not in BOLT_SCHEMES:
        raise StoreError(
            f"the store URI {cfg.uri!r} is not a Bolt URI; set NEURFLOW_STORE_URI to bolt://host:7687 (or neo4j://, bolt+s://)"
        )
    try:
        driver = GraphDatabase.driver(cfg.uri, auth=auth, connection_timeout=10, max_transaction_retry_time=RETRY_SECONDS)
    except Exception as exc:  # bad URI scheme and the like
        raise translate_error(exc, cfg, readonly=readonly) from None
    if verify:
        try:
            probe_not_http(cfg)
            with driver.session(database=cfg.database) as session:
                session.run(job_queries.Q_PING).consume()
        except Exception as exc:
            driver.close()
            raise translate_error(exc, cfg, user=auth[0] if auth else None, readonly=readonly) from None
    return driver


class Store:
    """A driver plus the database to use; `run` returns plain dicts."""
    def __init__(self, cfg: StoreConfig, *, readonly: bool = False, driver: neo4j.Driver | None = None):
        self.config = cfg
        self.database = cfg.database
        # which account: the read-only console opens a driver of its own per query (with the same
        # account) so that a query past its time limit can be cut off without touching this one
        self.readonly = readonly
        self.driver = driver or open_driver(cfg, readonly=readonly)
        self._agent: str | None = None
        self._schema_ready = False

    # ------------------------------------------------------------------ basics
    def session(self, **kwargs: Any) -> neo4j.Session:
        return self.driver.session(database=self.database, **kwargs)

    def run(self, cypher: str, params: dict[str, Any] | None = None, **kw: Any) -> list[dict[str, Any]]:
        """Run one auto-commit statement; rows as dicts (`ingest.store.runner.Runner.auto`)."""
        with Runner(self) as runner:
            return runner.auto(cypher, {**(params or {}), **kw})

    def write(self, cypher: str, params: dict[str, Any] | None = None, **kw: Any) -> list[dict[str, Any]]:
        """Run one statement in a managed write transaction (`ingest.store.runner.Runner.execute`: retried
        on transient errors and lost races)."""
        with Runner(self) as runner:
            return runner.write(cypher, {**(params or {}), **kw})

    @property
    def cfg(self) -> StoreConfig:  # alias used by callers that say cfg
        return self.config

    @property
    def server_agent(self) -> str:
        if self._agent is None:
            try:
                self._agent = self.driver.get_server_info().agent
            except Exception as exc:
                raise translate_error(exc, self.config, readonly=self.readonly) from None
        return self._agent

    def counts(self) -> dict[str, int]:
        """Number of nodes per label and relationships per type (tests, status)."""
        out: dict[str, int] = {}
        for row in self.run(job_queries.Q_COUNT_LABELS):
            for label in row["labels"]:
                out[label] = out.get(label, 0) + row["n"]
        for row in self.run(job_queries.Q_COUNT_TYPES):
            out[row["t"]] = out.get(row["t"], 0) + row["n"]
        return out

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        self.driver.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.config!r})"


def _with_database(cfg: StoreConfig, env: Mapping[str, str]) -> StoreConfig:
    return cfg.with_database(env["NEURFLOW_STORE_DATABASE"]) if env.get("NEURFLOW_STORE_DATABASE") else cfg


def start_store(env: Mapping[str, str] | None = None) -> StoreConfig:
    """The store's configuration, ready to connect: the one call that starts the embedded server
    (in the background, reused by later processes) when ``NEURFLOW_STORE_URI`` is unset."""
    env = os.environ if env is None else env
    if not uses_embedded(env):
        return external_config(env)

    return _with_database(ensure_embedded_server(env=env), env)


def running_config(env: Mapping[str, str] | None = None) -> StoreConfig:
    """Like `start_store`, but an embedded server that is not running is `StoreUnavailable`."""
    env = os.environ if env is None else env
    if not uses_embedded(env):
        return external_config(env)

    return _with_database(embedded_config(env=env), env)
