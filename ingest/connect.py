"""Open the configured store, ready for work: the one function commands use.

Above `ingest.store` (connections, the embedded server) and `ingest.schema` (constraints,
indexes, the writer's aggregates), which it puts together; kept apart from both because the
schema code itself runs statements through `ingest.store`.
"""

from __future__ import annotations

from ingest.config import StoreConfig
from ingest.schema import ensure_schema
from ingest.store import Store, start_store


def open_store(cfg: StoreConfig | None = None, *, readonly: bool = False) -> Store:
    """Open the configured store (the embedded server is started when needed).  A writer's store
    gets its schema and, on a store written before the writer kept its aggregates, those
    (`ingest.schema.ensure_schema`) before anything else runs."""
    store = Store(cfg or start_store(), readonly=readonly)
    if not readonly:
        try:
            ensure_schema(store)
        except BaseException:
            store.close()
            raise
    return store
