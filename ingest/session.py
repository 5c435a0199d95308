"""One execute path for the store code's reads and writes: `Runner.execute`.

The writer, the cleanup and the aggregates run statements on whatever the caller holds (a
`Store`, a bare `neo4j.Driver` or an open `neo4j.Session`), in managed transactions (retried by
the driver on transient errors), with driver errors translated into the project's one-line
`StoreError`s when a `Store` gives the configuration to name the fix, and every statement
recorded for the test suite's Cypher lint.  Reads and writes differ only in the access mode, so
they share this one function; a unit of work that must be atomic (a circuit's status change and
its aggregates) passes a function that runs several statements in one transaction.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable, TypeVar

import neo4j
import neo4j.graph

from ingest.cypher_record import record as record_cypher
from ingest.store import Store, translate_error

T = TypeVar("T")
Rows = list[dict[str, Any]]


class Tx:
    """A managed transaction that records what it runs (the lint checks every statement)."""

    def __init__(self, tx: neo4j.ManagedTransaction):
        self._tx = tx

    def run(self, cypher: str, params: dict[str, Any] | None = None) -> Rows:
        p = params or {}
        result = self._tx.run(cypher, p)
        keys = result.keys()
        rows = [_plain(keys, r) for r in result]
        record_cypher(cypher, p)  # no-op unless NEURFLOW_RECORD_CYPHER
        return rows


_GRAPH_TYPES = (neo4j.graph.Node, neo4j.graph.Relationship, neo4j.graph.Path)


def _plain(keys: list[str], record: neo4j.Record) -> dict[str, Any]:
    """A record as a dict.  `Record.data()` walks every list element in Python (about 1 us each:
    40 ms for the 40k channels of `class_channels` at 1,000 classes); the project's statements
    return plain values, so the values are taken as they are unless a column holds a graph object."""
    values = record.values()
    if any(isinstance(v, _GRAPH_TYPES) for v in values):
        return record.data()
    return dict(zip(keys, values))


class Runner:
    """Runs units of work in managed transactions on a Store, Driver or Session."""

    def __init__(self, target: Store | neo4j.Driver | neo4j.Session, database: str | None = None):
        self.config = target.config if isinstance(target, Store) else None
        self._own_session = not isinstance(target, neo4j.Session)
        if isinstance(target, Store):
            self.session = target.session()
        elif isinstance(target, neo4j.Driver):
            self.session = target.session(database=database)
        else:
            self.session = target

    def execute(self, work: Callable[[Tx], T] | str, params: dict[str, Any] | None = None, *, write: bool = True) -> T:
        """Run `work` (a function of a `Tx`, or one statement with `params`) in one transaction."""
        if isinstance(work, str):
            cypher = work
            work = lambda tx: tx.run(cypher, params)  # noqa: E731
        run = self.session.execute_write if write else self.session.execute_read
        try:
            return run(lambda tx: work(Tx(tx)))
        except Exception as exc:
            if self.config is not None:
                raise translate_error(exc, self.config) from None
            raise

    def write(self, cypher: str, params: dict[str, Any] | None = None) -> Rows:
        return self.execute(cypher, params, write=True)

    def read(self, cypher: str, params: dict[str, Any] | None = None) -> Rows:
        return self.execute(cypher, params, write=False)

    def close(self) -> None:
        if self._own_session and self.session is not None:
            self.session.close()

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def now() -> str:
    """UTC timestamp with microseconds: `completed_at` orders circuits written in the same second."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
