"""Typed store errors, and the mapping of driver errors to them (`translate_error`).  Each message
is one line that names the fix; the CLI prints it as is."""

from __future__ import annotations

from typing import TYPE_CHECKING

from neo4j import exceptions as nx

from neurflow.errors import one_line

if TYPE_CHECKING:  # pragma: no cover - ingest.store.config builds on this module
    from ingest.store.config import StoreConfig


class StoreError(RuntimeError):
    """Base class of every error of the explanation store (one-line message, names the fix)."""


class StoreUnavailable(StoreError):
    """The store cannot be reached (not running, wrong host/port)."""


class StoreAuthError(StoreError):
    """Wrong user name or password."""


class StoreDatabaseNotFound(StoreError):
    """The configured database does not exist on the server."""


class StoreStartError(StoreError):
    """The embedded server could not be started (port in use, stale lock, startup failure)."""


class PortInUse(StoreStartError):
    """A port the embedded server needs is taken by another program."""


class ReadOnlyViolation(StoreError):
    """A query sent to the read-only console would write to the store."""


class StoreQueryError(StoreError):
    """The server refused or failed a query (syntax error, unknown function, ...)."""


SERVER_MESSAGE_LIMIT = 300
"""Characters of a server's message quoted in an error (`one_line(msg, SERVER_MESSAGE_LIMIT)`)."""


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
        return StoreError(f"bad store configuration for {cfg.uri}: {one_line(exc, SERVER_MESSAGE_LIMIT)}; check NEURFLOW_STORE_URI")
    if isinstance(exc, nx.Neo4jError):
        msg = getattr(exc, "message", None) or str(exc)
        return StoreQueryError(f"the store refused the query: {one_line(msg, SERVER_MESSAGE_LIMIT)}")
    return StoreError(f"store error at {_where(cfg)}: {one_line(exc, SERVER_MESSAGE_LIMIT)}")


def unreachable_fix(cfg: StoreConfig) -> str:
    """What a user can do when the store does not answer."""
    if cfg.embedded:
        return "start it with `neurflow store start` (`neurflow store status` shows its state)"
    return ("check that the server runs and that NEURFLOW_STORE_URI names its Bolt port (like bolt://host:7687), "
            "or unset NEURFLOW_STORE_URI to use the embedded store")
