"""Typed store errors.  Each message is one line that names the fix; the CLI prints it as is."""

from __future__ import annotations


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


def one_line(text: object, limit: int = 300) -> str:
    """Collapse a (server) message to one short line."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."
