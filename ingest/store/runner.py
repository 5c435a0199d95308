"""The one runner of the project's statements: `Runner`.

Every statement the program sends goes through a `Runner` (as graph-data-science-client's one
`QueryRunner`): `execute` runs a managed transaction (reads and writes differ only in the access
mode; a unit of work that must be atomic, such as a circuit's status change and its aggregates,
passes a function that runs several statements in one transaction), `auto` one auto-commit
statement (schema statements, and reads that must not pay a transaction's extra messages), and
`rolled_back` the read-only console's always-rolled-back read (`ingest.store.readonly`).  So there is
one row conversion (`plain_row`), one retry policy (`execute`: the driver's retries of a server
that went away plus ours of lost write races), one translation of driver errors into the
project's one-line `StoreError`s (when a `Store` gives the configuration to name the fix) and one
place where statements are recorded for the test suite's Cypher lint (`Tx.run`, `Runner.auto`).
`Store.run` / `Store.write` are shorthands for a one-statement `Runner`.

A runner works on whatever the caller holds: a `Store`, a bare `neo4j.Driver` or an open
`neo4j.Session`.
"""

from __future__ import annotations

import random
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import neo4j
import neo4j.graph
from neo4j import exceptions as nx

from ingest.store.cypher_record import record as record_cypher
from ingest.store.errors import StoreQueryError, StoreUnavailable, translate_error

if TYPE_CHECKING:  # pragma: no cover - ingest.store.connection builds on this module
    from ingest.store.connection import Store

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


    if isinstance(exc, (StoreUnavailable, nx.ServiceUnavailable, nx.SessionExpired, nx.TransientError)):
        return True
    if isinstance(exc, (StoreQueryError, nx.Neo4jError)):
        text = " ".join(str(exc).split()).lower()
        return any(marker in text for marker in _TRANSIENT_MARKERS)
    return False


def is_store_unreachable(exc: BaseException) -> bool:
    """True when the server is gone or cannot be reached (not a race lost to another writer).

    The driver has already retried such a transaction for its `max_transaction_retry_time`
    (`ingest.store.connection.open_driver`) before the error reaches the caller, so callers stop here
    rather than try again: a server killed mid-ingest ends the command in seconds, with one
    line, instead of minutes of retries whose every attempt waits for the driver again."""


    return isinstance(exc, (StoreUnavailable, nx.ServiceUnavailable, nx.SessionExpired))


def _conflict(exc: BaseException) -> bool:
    """A write transaction that lost a race with another one (not a server that went away: the
    driver already retries those for its `max_transaction_retry_time`)."""
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
        rows = [plain_row(keys, r) for r in result]
        record_cypher(cypher, p)  # no-op unless NEURFLOW_RECORD_CYPHER
        return rows


_GRAPH_TYPES = (neo4j.graph.Node, neo4j.graph.Relationship, neo4j.graph.Path)


def plain_row(keys: list[str], record: neo4j.Record) -> dict[str, Any]:
    """A record as a dict (the one row conversion of the project's statements).  `Record.data()` walks every list element in Python (about 1 us each:
    40 ms for the 40k channels of `class_channels` at 1,000 classes); the project's statements
    return plain values, so the values are taken as they are unless a column holds a graph object."""
    values = record.values()
    if any(isinstance(v, _GRAPH_TYPES) for v in values):
        return record.data()
    return dict(zip(keys, values))


def to_plain(value: Any) -> Any:
    """Driver values as plain Python (nodes and relationships as dicts) for tables and JSON."""
    if isinstance(value, neo4j.graph.Node):
        return {"labels": sorted(value.labels), **dict(value.items())}
    if isinstance(value, neo4j.graph.Relationship):
        return {"type": value.type, **dict(value.items())}
    if isinstance(value, neo4j.graph.Path):
        return [to_plain(n) for n in value.nodes]
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if hasattr(value, "iso_format"):  # neo4j temporal types
        return value.iso_format()
    return value


class Runner:
    """Runs the program's statements on a Store, Driver or Session (see the module docstring)."""
    def __init__(self, target: "Store | neo4j.Driver | neo4j.Session", database: str | None = None):
        # a Store (ingest.store.connection, which builds on this module) is told apart by not being a driver object
        is_store = not isinstance(target, (neo4j.Driver, neo4j.Session))
        self.config = target.config if is_store else None
        self.readonly = is_store and target.readonly
        self._own_session = not isinstance(target, neo4j.Session)
        if is_store:
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

    def auto(self, cypher: str, params: dict[str, Any] | None = None) -> Rows:
        """Run one statement in an auto-commit transaction: schema statements (which a managed
        transaction may refuse) and single reads (no BEGIN / COMMIT messages, no retry)."""
        p = params or {}
        try:
            result = self.session.run(cypher, p)
            keys = result.keys()
            rows = [plain_row(keys, r) for r in result]
        except Exception as exc:
            if self.config is not None:
                raise translate_error(exc, self.config, readonly=self.readonly) from None
            raise
        record_cypher(cypher, p)  # no-op unless NEURFLOW_RECORD_CYPHER
        return rows

    def rolled_back(
        self,
        cypher: str,
        params: dict[str, Any] | None = None,
        *,
        timeout: float,
        max_rows: int | None = None,
        on_values: Callable[[list[Any]], None] | None = None,
        record: bool = False,
    ) -> tuple[list[str], list[list[Any]]]:
        """Run one statement in an explicit transaction that is always rolled back, in the
        session's access mode, with the transaction timeout `timeout`; return (columns, rows).

        The read-only console's third layer (`ingest.store.readonly.execute_rolled_back`, which adds
        the client's time limit) and the read-only account's probe.  Values go through `to_plain`
        (nodes and relationships as dicts, for tables and JSON); `on_values` sees each record's
        raw driver values first.  `max_rows`: stop reading after that many rows.  User Cypher is
        not recorded for the lint (`record` False): it is the user's, not the project's.
        Driver errors are raised as they are: the console words them itself."""
        p = params or {}
        tx = self.session.begin_transaction(timeout=timeout)
        try:
            result = tx.run(cypher, p)
            columns = list(result.keys())
            rows: list[list[Any]] = []
            for rec in result:
                values = rec.values()
                if on_values is not None:
                    on_values(values)
                rows.append([to_plain(v) for v in values])
                if max_rows is not None and len(rows) >= max_rows:
                    break
        finally:
            if not tx.closed():
                tx.rollback()
        if record:
            record_cypher(cypher, p)
        return columns, rows

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
