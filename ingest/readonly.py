"""Read-only Cypher for the app's console and `neurflow query`: three independent layers.

1. **Refusal before sending** (`check_readonly`): write and DDL clauses (CREATE, MERGE, SET,
   DELETE, DETACH, REMOVE, DROP, LOAD CSV, FOREACH, CALL ... IN TRANSACTIONS, ALTER, GRANT,
   ...) and procedure calls outside a read-only allow-list are refused with
   `ReadOnlyViolation`.  Comments, string literals and `backticked` names are blanked first,
   so ``WHERE n.name = 'CREATE'`` passes; property keys, labels, relationship types and map
   keys (``n.set``, ``:Create``, ``{delete: 1}``) are not clauses and pass too.
2. **A read-only account**: on the embedded store the ``neurflow_reader`` user, whose group
   has only ``readRecord`` on every type (ArcadeDB refuses its writes and schema changes);
   on Neo4j the session runs in READ access mode, which Neo4j enforces (and
   ``NEURFLOW_STORE_READONLY_USER`` can name a reader account).  ArcadeDB does not enforce
   the driver's access mode: that is why layer 1 and this account exist.
3. **Always rolled back**: the query runs in an explicit transaction that is rolled back
   after the rows are read, so data writes that got past 1 and 2 do not persist.  (DDL is
   not transactional on ArcadeDB, which is why 1 and 2 come first.)
"""

from __future__ import annotations

import re
import threading
from typing import Any, Callable

import neo4j
from neo4j import exceptions as nx
from neo4j.graph import Node, Path, Relationship

from ingest.config import StoreConfig, load_config
from ingest.errors import ReadOnlyViolation, StoreError, StoreQueryError, one_line
from ingest.store import Store, translate_error

# clause -> regex on the blanked, upper-cased text
_FORBIDDEN: list[tuple[str, str]] = [
    ("CREATE", r"CREATE"),
    ("MERGE", r"MERGE"),
    ("SET", r"SET"),
    ("DELETE", r"DELETE"),
    ("DETACH", r"DETACH"),
    ("REMOVE", r"REMOVE"),
    ("DROP", r"DROP"),
    ("LOAD CSV", r"LOAD\s+CSV"),
    ("FOREACH", r"FOREACH"),
    ("IN TRANSACTIONS", r"IN\s+TRANSACTIONS"),
    ("ALTER", r"ALTER"),
    ("RENAME", r"RENAME"),
    ("GRANT", r"GRANT"),
    ("DENY", r"DENY"),
    ("REVOKE", r"REVOKE"),
    ("START DATABASE", r"START\s+DATABASE"),
    ("STOP DATABASE", r"STOP\s+DATABASE"),
    ("TERMINATE", r"TERMINATE"),
    ("DEALLOCATE", r"DEALLOCATE"),
    ("REALLOCATE", r"REALLOCATE"),
    ("ENABLE SERVER", r"ENABLE\s+SERVER"),
]
# a keyword is a clause unless it is a property key (n.set), label/type (:Create),
# parameter ($delete) or map key ({remove: 1})
_PATTERNS = [(name, re.compile(r"(?<![.:$\w])" + rx + r"(?!\w)(?!\s*:)")) for name, rx in _FORBIDDEN]

READ_PROCEDURES = frozenset(
    {
        "db.labels",
        "db.relationshiptypes",
        "db.propertykeys",
        "db.schema.visualization",
        "db.schema.nodetypeproperties",
        "db.schema.reltypeproperties",
        "db.indexes",
        "db.constraints",
        "db.info",
        "db.ping",
        "dbms.components",
        "dbms.procedures",
        "dbms.functions",
    }
)
_CALL = re.compile(r"(?<![.:$\w])CALL\s+([A-Z_][\w.]*)")


def blank(cypher: str) -> str:
    """The query with comments removed and string literals / backticked names blanked.

    Lengths are kept (each blanked character becomes a space or a placeholder character), so
    positions in the result are positions in the query."""
    out: list[str] = []
    i, n = 0, len(cypher)
    while i < n:
        ch = cypher[i]
        nxt = cypher[i + 1] if i + 1 < n else ""
        if ch == "/" and nxt == "/":
            j = cypher.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif ch == "/" and nxt == "*":
            j = cypher.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", cypher[i:j]))
            i = j
        elif ch in ("'", '"', "`"):
            j = i + 1
            while j < n:
                if cypher[j] == "\\" and ch != "`":
                    j += 2
                    continue
                if cypher[j] == ch:
                    if ch == "`" and j + 1 < n and cypher[j + 1] == "`":  # `` escapes a backtick
                        j += 2
                        continue
                    break
                j += 1
            j = min(j + 1, n)
            filler = "x" if ch == "`" else " "  # a backticked name stays a name, a string becomes nothing
            out.append(ch + filler * max(0, j - i - 2) + (cypher[j - 1] if j - i >= 2 else ""))
            i = j
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def check_readonly(cypher: str) -> None:
    """Raise `ReadOnlyViolation` when `cypher` contains a write/DDL clause or a non-read procedure."""
    if not cypher or not cypher.strip():
        raise ReadOnlyViolation("refused: the query is empty")
    text = blank(cypher).upper()
    for name, rx in _PATTERNS:
        m = rx.search(text)
        if m:
            line = text.count("\n", 0, m.start()) + 1
            raise ReadOnlyViolation(
                f"refused: this console is read-only and {name} (line {line}) would change the store; "
                "load data with `neurflow ingest` instead"
            )
    for m in _CALL.finditer(text):
        proc = m.group(1).lower()
        if proc not in READ_PROCEDURES:
            line = text.count("\n", 0, m.start()) + 1
            raise ReadOnlyViolation(
                f"refused: this console is read-only and may only call read procedures "
                f"({', '.join(sorted(READ_PROCEDURES))}); `{cypher[m.start(1):m.end(1)]}` (line {line}) is not one of them"
            )


# --------------------------------------------------------------------------- values
def to_plain(value: Any) -> Any:
    """Driver values as plain Python (nodes and relationships as dicts) for tables and JSON."""
    if isinstance(value, Node):
        return {"labels": sorted(value.labels), **dict(value.items())}
    if isinstance(value, Relationship):
        return {"type": value.type, **dict(value.items())}
    if isinstance(value, Path):
        return [to_plain(n) for n in value.nodes]
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if hasattr(value, "iso_format"):  # neo4j temporal types
        return value.iso_format()
    return value


# --------------------------------------------------------------------------- running
_stores: dict[tuple, Store] = {}
_lock = threading.Lock()


def readonly_store(cfg: StoreConfig | None = None) -> Store:
    """A cached `Store` logged in with the read-only account of `cfg` (default: environment)."""
    cfg = cfg or load_config()
    key = (cfg.uri, cfg.readonly_user or cfg.user, cfg.database)
    with _lock:
        store = _stores.get(key)
        if store is None:
            store = Store(cfg, readonly=True)
            _stores[key] = store
        return store


def close_readonly_stores() -> None:
    with _lock:
        for store in _stores.values():
            store.close()
        _stores.clear()


def run_readonly(
    cypher: str,
    params: dict[str, Any] | None = None,
    *,
    config: StoreConfig | None = None,
    store: Store | None = None,
    max_rows: int | None = 10000,
    timeout: float | None = 60.0,
) -> tuple[list[str], list[list[Any]]]:
    """Run user Cypher read-only; return (columns, rows).  Refusals raise `ReadOnlyViolation`.

    `store`: an already open Store (tests); by default the read-only account of `config`.
    `max_rows`: stop reading after that many rows (the transaction is rolled back anyway)."""
    check_readonly(cypher)  # layer 1
    st = store or readonly_store(config)  # layer 2: the read-only account
    return execute_rolled_back(st, cypher, params, max_rows=max_rows, timeout=timeout)


def execute_rolled_back(
    st: Store,
    cypher: str,
    params: dict[str, Any] | None = None,
    *,
    max_rows: int | None = 10000,
    timeout: float | None = 60.0,
    on_values: Callable[[list[Any]], None] | None = None,
) -> tuple[list[str], list[list[Any]]]:
    """Layer 3 alone: run `cypher` in a READ-mode explicit transaction that is always rolled back.

    `on_values` sees each record's raw driver values (nodes, relationships) before they are
    turned into plain values: the app's console collects the graph it draws that way."""
    cfg = st.config
    try:
        with st.driver.session(database=st.database, default_access_mode=neo4j.READ_ACCESS) as session:
            tx = session.begin_transaction(timeout=timeout)
            try:
                result = tx.run(cypher, params or {})
                columns = list(result.keys())
                rows: list[list[Any]] = []
                for record in result:
                    values = record.values()
                    if on_values is not None:
                        on_values(values)
                    rows.append([to_plain(v) for v in values])
                    if max_rows is not None and len(rows) >= max_rows:
                        break
            finally:
                if not tx.closed():
                    tx.rollback()
        return columns, rows
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
