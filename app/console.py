"""Read-only execution for the Cypher console, keeping graph elements for the graph view.

The three layers of `ingest/readonly.py` all apply: `check_readonly` refuses write clauses
before anything is sent, the query runs on `readonly_store` (the read-only account; READ access
mode), inside an explicit transaction that is always rolled back.  The rows are converted with
`readonly.to_plain` exactly as `run_readonly` does; in the same pass the nodes, relationships and
paths of the result are collected (with their identities and end points, which the plain rows
lose) so the console can draw them.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import neo4j
from neo4j import exceptions as nx
from neo4j.graph import Node, Path, Relationship

from ingest.config import StoreConfig
from ingest.errors import ReadOnlyViolation, StoreError, StoreQueryError, one_line
from ingest.readonly import blank, check_readonly, readonly_store, to_plain
from ingest.store import Store, translate_error

MAX_ROWS = 5000
MAX_GRAPH_NODES = 300


@dataclass
class ConsoleResult:
    columns: list[str]
    rows: list[list[Any]]
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> {labels, props}
    rels: list[dict[str, Any]] = field(default_factory=list)  # {id, type, start, end, props}
    truncated: bool = False
    ms: float = 0.0

    @property
    def has_graph(self) -> bool:
        return bool(self.nodes) and bool(self.rels)


def _node_id(n: Node) -> str:
    return getattr(n, "element_id", None) or str(n.id)


def _collect(value: Any, nodes: dict[str, dict[str, Any]], rels: dict[str, dict[str, Any]]) -> None:
    if isinstance(value, Node):
        if len(nodes) < MAX_GRAPH_NODES:
            nodes.setdefault(_node_id(value), {"labels": sorted(value.labels), "props": dict(value.items())})
    elif isinstance(value, Relationship):
        for end in (value.start_node, value.end_node):
            if end is not None:
                _collect(end, nodes, rels)
        rid = getattr(value, "element_id", None) or str(value.id)
        if value.start_node is not None and value.end_node is not None:
            rels.setdefault(rid, {
                "id": rid, "type": value.type, "start": _node_id(value.start_node), "end": _node_id(value.end_node),
                "props": dict(value.items()),
            })  # fmt: skip
    elif isinstance(value, Path):
        for n in value.nodes:
            _collect(n, nodes, rels)
        for r in value.relationships:
            _collect(r, nodes, rels)
    elif isinstance(value, list):
        for v in value:
            _collect(v, nodes, rels)
    elif isinstance(value, dict):
        for v in value.values():
            _collect(v, nodes, rels)


def run_console(
    cypher: str,
    params: dict[str, Any] | None = None,
    *,
    config: StoreConfig | None = None,
    store: Store | None = None,
    max_rows: int = MAX_ROWS,
    timeout: float = 60.0,
) -> ConsoleResult:
    """Run user Cypher read-only.  Refusals raise `ReadOnlyViolation`, other failures `StoreError`."""
    check_readonly(cypher)  # layer 1: refuse write clauses before sending
    st_ = store or readonly_store(config)  # layer 2: the read-only account
    cfg = st_.config
    nodes: dict[str, dict[str, Any]] = {}
    rels: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    truncated = False
    try:
        with st_.driver.session(database=st_.database, default_access_mode=neo4j.READ_ACCESS) as session:
            tx = session.begin_transaction(timeout=timeout)  # layer 3: always rolled back
            try:
                result = tx.run(cypher, params or {})
                columns = list(result.keys())
                rows: list[list[Any]] = []
                for record in result:
                    values = record.values()
                    _collect(values, nodes, rels)
                    rows.append([to_plain(v) for v in values])
                    if len(rows) >= max_rows:
                        truncated = True
                        break
            finally:
                if not tx.closed():
                    tx.rollback()
    except StoreError:
        raise
    except nx.Neo4jError as exc:
        code = exc.code or ""
        msg = one_line(getattr(exc, "message", None) or exc)
        if "Forbidden" in code or "AccessMode" in code or "not allowed" in msg:
            raise ReadOnlyViolation(f"refused by the store (read-only account): {msg}") from None
        if isinstance(exc, nx.AuthError) or "Database" in code:
            raise translate_error(exc, cfg) from None
        raise StoreQueryError(f"the query failed: {msg}") from None
    except Exception as exc:
        raise translate_error(exc, cfg) from None
    rel_list = [r for r in rels.values() if r["start"] in nodes and r["end"] in nodes]
    return ConsoleResult(columns, rows, nodes, rel_list, truncated, (time.perf_counter() - t0) * 1000)


_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


def parameter_names(cypher: str) -> list[str]:
    """The ``$names`` a query uses, in order of appearance (strings and comments ignored)."""
    seen: list[str] = []
    for m in _PARAM.finditer(blank(cypher)):
        if m.group(1) not in seen:
            seen.append(m.group(1))
    return seen
