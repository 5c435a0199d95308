"""Connections to the store: one `neo4j` driver, errors mapped to typed one-line `StoreError`s.

    with open_store() as store:            # ingest.connect: from the environment (embedded by default)
        rows = store.run("MATCH (c:Circuit) RETURN c.uid AS uid")
"""

from __future__ import annotations

import os

from typing import Any, Iterator, Mapping

import neo4j
from neo4j import GraphDatabase
from neo4j import exceptions as nx

from ingest.config import StoreConfig, external_config, uses_embedded
from ingest.cypher_record import record as record_cypher
from ingest.errors import (
    StoreAuthError,
    StoreDatabaseNotFound,
    StoreError,
    StoreQueryError,
    StoreUnavailable,
    one_line,
)


BOLT_SCHEMES = ("bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc")


def _where(cfg: StoreConfig) -> str:
    return f"{cfg.uri}" + (f" (database {cfg.database})" if cfg.database else "")


def translate_error(exc: Exception, cfg: StoreConfig, *, user: str | None = None, readonly: bool = False) -> StoreError:
    """Map a driver exception to a typed one-line error that names the fix.

    `readonly`: the driver logged in with the read-only account (`StoreConfig.readonly_auth`),
    so a refused login names the variables that set that account, not the writer's."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, nx.AuthError) or getattr(exc, "code", "") in (
        "Neo.ClientError.Security.Unauthorized",
        "Neo.ClientError.Security.AuthenticationRateLimit",
    ):
        reader = readonly and bool(cfg.readonly_user)  # without one, the read-only driver uses the writer's account
        who = user or (cfg.readonly_user if reader else cfg.user)
        if cfg.embedded:
            fix = "the embedded store's password files were changed; restore them or move the store folder away"
        elif reader:
            fix = "check NEURFLOW_STORE_READONLY_USER / NEURFLOW_STORE_READONLY_PASSWORD"
        else:
            fix = "check NEURFLOW_STORE_USER / NEURFLOW_STORE_PASSWORD"
        return StoreAuthError(f"the store at {cfg.uri} refused the login of user {who!r}: {fix}")
    code = getattr(exc, "code", "") or ""
    if code == "Neo.ClientError.Database.DatabaseNotFound" or "DatabaseNotFound" in code:
        return StoreDatabaseNotFound(
            f"database {cfg.database!r} does not exist on {cfg.uri}; set NEURFLOW_STORE_DATABASE to an existing database or create it"
        )
    if isinstance(exc, (nx.ServiceUnavailable, nx.SessionExpired)) or isinstance(exc, OSError):
        return StoreUnavailable(f"cannot reach the store at {cfg.uri}: {unreachable_fix(cfg)}")
    if isinstance(exc, nx.ConfigurationError):
        return StoreError(f"bad store configuration for {cfg.uri}: {one_line(exc)}; check NEURFLOW_STORE_URI")
    if isinstance(exc, nx.Neo4jError):
        msg = getattr(exc, "message", None) or str(exc)
        return StoreQueryError(f"the store refused the query: {one_line(msg)}")
    return StoreError(f"store error at {_where(cfg)}: {one_line(exc)}")


def unreachable_fix(cfg: StoreConfig) -> str:
    """What a user can do when the store does not answer."""
    if cfg.embedded:
        return "start it with `neurflow store start` (`neurflow store status` shows its state)"
    return ("check that the server runs and that NEURFLOW_STORE_URI names its Bolt port (like bolt://host:7687), "
            "or unset NEURFLOW_STORE_URI to use the embedded store")


HANDSHAKE_SECONDS = 3.0
RETRY_SECONDS = 10.0
"""The driver's `max_transaction_retry_time`: how long a transaction is retried against a server
that went away.  The driver checks it before each pause and its pauses double (1, 2, 4, 8 s,
+-20 %), so a server that stays gone ends the transaction 12 to 18 s after the first failure;
callers then stop (`ingest.session.is_store_unreachable`).  At 15 s the last pause could be 16 s
(31 s in all)."""


def probe_not_http(cfg: StoreConfig, timeout: float = HANDSHAKE_SECONDS) -> None:
    """Fail fast, naming what answers, when the Bolt URI points at an HTTP server (Neo4j's 7474,
    ArcadeDB's 2480, any web server): the driver would wait for its handshake for a minute.

    Sends the Bolt handshake; only when nothing answers within `timeout` is a plain HTTP request
    sent on a second connection, and only an HTTP answer fails here.  Everything else (refused,
    a slow Bolt server, TLS schemes) is left to the driver and its own errors."""
    import socket
    from urllib.parse import urlsplit

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
                session.run("RETURN 1 AS ok").consume()
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
        """Run one auto-commit statement; rows as dicts."""
        try:
            with self.session() as session:
                p = {**(params or {}), **kw}
                rows = [record.data() for record in session.run(cypher, p)]
            record_cypher(cypher, p)  # the test suite's lint (no-op unless NEURFLOW_RECORD_CYPHER)
            return rows
        except Exception as exc:
            raise translate_error(exc, self.config, readonly=self.readonly) from None

    def write(self, cypher: str, params: dict[str, Any] | None = None, **kw: Any) -> list[dict[str, Any]]:
        """Run one statement in a managed write transaction (retried on transient errors)."""
        p = {**(params or {}), **kw}

        def work(tx: neo4j.ManagedTransaction) -> list[dict[str, Any]]:
            return [record.data() for record in tx.run(cypher, p)]

        try:
            with self.session() as session:
                rows = session.execute_write(work)
            record_cypher(cypher, p)
            return rows
        except Exception as exc:
            raise translate_error(exc, self.config, readonly=self.readonly) from None

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

    @property
    def is_arcadedb(self) -> bool:
        return "arcadedb" in self.server_agent.lower()

    def counts(self) -> dict[str, int]:
        """Number of nodes per label and relationships per type (tests, status)."""
        out: dict[str, int] = {}
        for row in self.run("MATCH (n) RETURN labels(n) AS labels, count(*) AS n"):
            for label in row["labels"]:
                out[label] = out.get(label, 0) + row["n"]
        for row in self.run("MATCH ()-[r]->() RETURN type(r) AS t, count(*) AS n"):
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


def iter_batches(rows: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def _with_database(cfg: StoreConfig, env: Mapping[str, str]) -> StoreConfig:
    return cfg.with_database(env["NEURFLOW_STORE_DATABASE"]) if env.get("NEURFLOW_STORE_DATABASE") else cfg


def start_store(env: Mapping[str, str] | None = None) -> StoreConfig:
    """The store's configuration, ready to connect: the one call that starts the embedded server
    (in the background, reused by later processes) when ``NEURFLOW_STORE_URI`` is unset."""
    env = os.environ if env is None else env
    if not uses_embedded(env):
        return external_config(env)
    from ingest.embedded import ensure_embedded_server

    return _with_database(ensure_embedded_server(env=env), env)


def running_config(env: Mapping[str, str] | None = None) -> StoreConfig:
    """Like `start_store`, but an embedded server that is not running is `StoreUnavailable`."""
    env = os.environ if env is None else env
    if not uses_embedded(env):
        return external_config(env)
    from ingest.embedded import embedded_config

    return _with_database(embedded_config(env=env), env)
