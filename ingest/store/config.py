"""Where the store is and how to log in: environment variables, or the embedded default.

Environment:

- ``NEURFLOW_STORE_URI``: a Bolt URI (``bolt://host:7687``, ``neo4j://...``).  Unset: the
  embedded ArcadeDB server is used (started by `ingest.store.connection.start_store`, an explicit call:
  this module only reads settings).
- ``NEURFLOW_STORE_USER`` / ``NEURFLOW_STORE_PASSWORD``: credentials of the writer.
- ``NEURFLOW_STORE_DATABASE``: database name (embedded default ``neurflow``; with a URI
  the server's default database unless set).
- ``NEURFLOW_STORE_READONLY_USER`` / ``NEURFLOW_STORE_READONLY_PASSWORD``: a read-only
  account for the app and the Cypher console (embedded: created automatically; Neo4j: optional,
  READ sessions are enforced there; any other Bolt server: required, the console refuses without).
- ``NEURFLOW_STORE_DIR``: data folder of the embedded server (default
  ``~/.local/share/neurflow/store``, or ``$XDG_DATA_HOME/neurflow/store``).
- ``NEURFLOW_STORE_BOLT_PORT`` / ``NEURFLOW_STORE_HTTP_PORT``: ports of the embedded server
  (defaults 7697 and 2490, both on 127.0.0.1 only).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

from ingest.store.errors import StoreError

DEFAULT_BOLT_PORT = 7697
DEFAULT_HTTP_PORT = 2490
DEFAULT_DATABASE = "neurflow"
EMBEDDED_HOST = "127.0.0.1"
ROOT_USER = "root"
READER_USER = "neurflow_reader"


@dataclass(frozen=True)
class StoreConfig:
    """Everything needed to open a driver on the store."""

    uri: str
    user: str | None
    password: str | None = None
    database: str | None = None
    readonly_user: str | None = None
    readonly_password: str | None = None
    embedded: bool = False
    data_dir: str | None = None  # embedded only
    http_port: int | None = None  # embedded only (database admin over HTTP)

    def with_database(self, database: str | None) -> "StoreConfig":
        return replace(self, database=database)

    def __repr__(self) -> str:  # never print passwords
        return (
            f"StoreConfig(uri={self.uri!r}, user={self.user!r}, database={self.database!r}, "
            f"embedded={self.embedded}, readonly_user={self.readonly_user!r})"
        )

    @property
    def auth(self) -> tuple[str, str] | None:
        return (self.user, self.password or "") if self.user else None

    @property
    def readonly_auth(self) -> tuple[str, str] | None:
        if self.readonly_user:
            return (self.readonly_user, self.readonly_password or "")
        return self.auth


def store_dir(env: Mapping[str, str] | None = None) -> Path:
    """Data folder of the embedded server."""
    env = os.environ if env is None else env
    if env.get("NEURFLOW_STORE_DIR"):
        return Path(env["NEURFLOW_STORE_DIR"]).expanduser().resolve()
    base = env.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return (Path(base) / "neurflow" / "store").resolve()


def _port(env: Mapping[str, str], name: str, default: int) -> int:

    raw = env.get(name)
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError:
        raise StoreError(f"{name}={raw!r} is not a port number; set it to an integer such as {default}") from None
    if not 0 < port < 65536:
        raise StoreError(f"{name}={port} is out of range; set it to a port between 1 and 65535")
    return port


def embedded_ports(env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """(bolt, http) ports of the embedded server."""
    env = os.environ if env is None else env
    return _port(env, "NEURFLOW_STORE_BOLT_PORT", DEFAULT_BOLT_PORT), _port(env, "NEURFLOW_STORE_HTTP_PORT", DEFAULT_HTTP_PORT)


def uses_embedded(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return not env.get("NEURFLOW_STORE_URI")


def external_config(env: Mapping[str, str] | None = None) -> StoreConfig:
    """Configuration of an external store (``NEURFLOW_STORE_URI`` set)."""
    env = os.environ if env is None else env
    return StoreConfig(
        uri=env["NEURFLOW_STORE_URI"],
        user=env.get("NEURFLOW_STORE_USER", "neo4j"),
        password=env.get("NEURFLOW_STORE_PASSWORD"),
        database=env.get("NEURFLOW_STORE_DATABASE") or None,
        readonly_user=env.get("NEURFLOW_STORE_READONLY_USER") or None,
        readonly_password=env.get("NEURFLOW_STORE_READONLY_PASSWORD") or None,
        embedded=False,
    )


def artifact_dir(cfg: StoreConfig | None = None) -> Path:
    """Where crop thumbnails live (`Crop.thumbnail` paths are relative to it).

    `NEURFLOW_ARTIFACT_DIR`, else `artifacts/` in the embedded store's data folder, else
    `$XDG_DATA_HOME/neurflow/artifacts` (a remote Neo4j has no folder of ours)."""
    if os.environ.get("NEURFLOW_ARTIFACT_DIR"):
        return Path(os.environ["NEURFLOW_ARTIFACT_DIR"])
    if cfg is not None and getattr(cfg, "data_dir", None):
        return Path(cfg.data_dir) / "artifacts"
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "neurflow" / "artifacts"
