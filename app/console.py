"""Read-only execution for the Cypher console, keeping graph elements for the graph view.

The three layers of `ingest/store/readonly.py` all apply: `check_readonly` refuses write clauses
before anything is sent, the query runs on `readonly_store` (a read-only account, which that
function insists on where the server does not enforce READ access mode; READ access mode),
inside an explicit transaction that is always rolled back, within a time limit the server
enforces and the client too (`execute_rolled_back`).  The rows are converted with
`readonly.to_plain` exactly as `run_readonly` does; in the same pass the nodes, relationships
and paths of the result are collected (with their identities and end points, which the plain
rows lose) so the console can draw them.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any


from ingest.store.config import StoreConfig
from ingest.store.readonly import Node, Path, Relationship, blank, check_readonly, execute_rolled_back, readonly_store
from ingest.store.connection import Store

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
    timeout: float | None = None,
) -> ConsoleResult:
    """Run user Cypher read-only.  Refusals raise `ReadOnlyViolation`, other failures `StoreError`
    (`QueryTimeout` past `timeout` seconds, default NEURFLOW_STORE_QUERY_TIMEOUT or 60)."""
    check_readonly(cypher)  # layer 1: refuse write clauses before sending
    st_ = store or readonly_store(config)  # layer 2: the read-only account
    nodes: dict[str, dict[str, Any]] = {}
    rels: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    columns, rows = execute_rolled_back(  # layer 3: always rolled back
        st_, cypher, params, max_rows=max_rows, timeout=timeout,
        on_values=lambda values: _collect(values, nodes, rels),
    )
    truncated = len(rows) >= max_rows
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
