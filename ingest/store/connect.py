"""Open the configured store, ready for work: the one function commands use.

Above `ingest.store.connection` (connections, the embedded server) and `ingest.store.schema` (constraints,
indexes, the writer's aggregates), which it puts together; kept apart from both because the
schema code itself runs statements through `ingest.store.connection`.
"""

from __future__ import annotations

from ingest.store.config import StoreConfig
from ingest.store.schema import ensure_schema
from ingest.store.connection import Store, start_store


def open_store(cfg: StoreConfig | None = None, *, readonly: bool = False) -> Store:
    """Open the configured store (the embedded server is started when needed).  A writer's store
    gets its schema and, on a store written before the writer kept its aggregates, those
    (`ingest.store.schema.ensure_schema`) before anything else runs."""
    store = Store(cfg or start_store(), readonly=readonly)
    if not readonly:
        try:
            ensure_schema(store)
        except BaseException:
            store.close()
            raise
    return store
