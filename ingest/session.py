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

import random
import time
from datetime import datetime, timezone
from typing import Any, Callable, TypeVar

import neo4j
import neo4j.graph

from ingest.cypher_record import record as record_cypher
from ingest.store import Store, translate_error

T = TypeVar("T")
Rows = list[dict[str, Any]]

# Store errors that say "try again": a race between concurrent writers (ArcadeDB reports a MERGE
# that lost the race on a unique index as a duplicated key, and a commit that lost an optimistic
# race on a record, such as two completions updating one model's aggregates, as a concurrent
# modification), a deadlock, or a server that went away for a moment.  A transaction that failed
# so was rolled back whole, so running it again is safe.
_TRANSIENT_MARKERS = (
    "duplicated key", "concurrentmodification", "concurrent modification", "deadlock", "transienterror",
    "neo.transienterror", "lock acquisition", "locked by",
)  # fmt: skip
TX_ATTEMPTS = 6
"""How often `Runner.execute` runs a write transaction that keeps losing races (then it raises)."""


def is_transient_store_error(exc: BaseException) -> bool:
    """True for store errors worth retrying: unreachable server, write conflicts, deadlocks."""
    from neo4j import exceptions as nx

    from ingest.errors import StoreQueryError, StoreUnavailable

    if isinstance(exc, (StoreUnavailable, nx.ServiceUnavailable, nx.SessionExpired, nx.TransientError)):
        return True
    if isinstance(exc, (StoreQueryError, nx.Neo4jError)):
        text = " ".join(str(exc).split()).lower()
        return any(marker in text for marker in _TRANSIENT_MARKERS)
    return False


def is_store_unreachable(exc: BaseException) -> bool:
    """True when the server is gone or cannot be reached (not a race lost to another writer).

    The driver has already retried such a transaction for its `max_transaction_retry_time`
    (`ingest.store.open_driver`) before the error reaches the caller, so callers stop here
    rather than try again: a server killed mid-ingest ends the command in seconds, with one
    line, instead of minutes of retries whose every attempt waits for the driver again."""
    from neo4j import exceptions as nx

    from ingest.errors import StoreUnavailable

    return isinstance(exc, (StoreUnavailable, nx.ServiceUnavailable, nx.SessionExpired))


def _conflict(exc: BaseException) -> bool:
    """A write transaction that lost a race with another one (not a server that went away: the
    driver already retries those for its `max_transaction_retry_time`)."""
    from neo4j import exceptions as nx

    return isinstance(exc, nx.Neo4jError) and not isinstance(exc, (nx.ServiceUnavailable, nx.SessionExpired)) \
        and is_transient_store_error(exc)


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
        self.readonly = isinstance(target, Store) and target.readonly
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
        for attempt in range(TX_ATTEMPTS):
            try:
                return run(lambda tx: work(Tx(tx)))
            except Exception as exc:
                # the driver retries what Neo4j calls transient; ArcadeDB reports an optimistic
                # conflict (two writers on one record, e.g. the aggregates of one model) otherwise
                if write and attempt < TX_ATTEMPTS - 1 and _conflict(exc):
                    time.sleep(min(2.0, 0.02 * 2**attempt) * random.uniform(0.5, 1.5))
                    continue
                if self.config is not None:
                    raise translate_error(exc, self.config, readonly=self.readonly) from None
                raise
        raise AssertionError("unreachable")

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
